package gateway

import (
	"regexp"
	"slices"
	"strings"

	"github.com/cmx-exchange/cmx/envelope"
)

// directory answers which of our agencies receives what (inbound.Directory).
type directory struct {
	party    string
	agencies map[string]AgencyConfig
	defaults map[envelope.Type]string
	markings []string
}

func newDirectory(cfg *Config) *directory {
	d := &directory{party: cfg.Party, agencies: map[string]AgencyConfig{}, defaults: map[envelope.Type]string{}, markings: cfg.Markings}
	for _, a := range cfg.Agencies {
		d.agencies[a.ID] = a
		for _, t := range a.Receive {
			if _, ok := d.defaults[envelope.Type(t)]; !ok {
				d.defaults[envelope.Type(t)] = a.ID
			}
		}
	}
	return d
}

// Resolve implements inbound.Directory.
func (d *directory) Resolve(t envelope.Type, recipient string) (string, bool) {
	if recipient == "" {
		id, ok := d.defaults[t]
		return id, ok
	}
	id, ok := strings.CutPrefix(recipient, d.party+":")
	if !ok {
		return "", false
	}
	a, ok := d.agencies[id]
	if !ok || !slices.Contains(a.Receive, string(t)) {
		return "", false
	}
	return id, true
}

var markingRe = regexp.MustCompile(`^[A-Z0-9:_ -]{1,64}$`)

// MarkingAllowed implements inbound.Directory.
func (d *directory) MarkingAllowed(m string) bool {
	if m == "" {
		return true
	}
	if len(d.markings) == 0 {
		return markingRe.MatchString(m)
	}
	return slices.Contains(d.markings, m)
}
