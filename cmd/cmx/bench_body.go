package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
)

// benchType is the type the benchmark sends: US:USTR → JP:METI (and back
// with --both), webhook agencies on both sides.
const benchType = envelope.NonMarketPracticeReport

// Schema limits of the non_market_practice_report fields the padding uses.
const (
	maxDescriptionChars = 20000
	maxMeasureChars     = 2000
	maxMeasures         = 20
	maxRefTitleChars    = 300
	maxRefs             = 50
)

var errBodySize = errors.New("body size out of range")

// parseSize reads "1KiB", "16KiB", "256KiB", "2000" (bytes).
func parseSize(s string) (int, error) {
	t := strings.TrimSpace(s)
	mult := 1
	switch {
	case strings.HasSuffix(t, "KiB"):
		t, mult = strings.TrimSuffix(t, "KiB"), 1<<10
	case strings.HasSuffix(t, "MiB"):
		t, mult = strings.TrimSuffix(t, "MiB"), 1<<20
	}
	n, err := strconv.Atoi(t)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%w: size %q: want e.g. 1KiB, 16KiB, 256KiB or a byte count", errUsage, s)
	}
	return n * mult, nil
}

// sizeName is the short name of a size for file names and tables.
func sizeName(n int) string {
	if n%(1<<10) == 0 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// benchBody returns a body of exactly n bytes, valid against the schema of
// benchType: the type's example with its optional parts removed and its
// free text padded. Up to about 20 KB the padding is ASCII in the
// description; beyond, the schema's character limits (maxLength counts
// characters) are met with 4-byte UTF-8 characters, first in the
// description, then in proposed measures (20 × 2000 characters) and
// further evidence references (300-character titles). The schema allows
// about 330 KB of body this way; larger sizes are refused.
func benchBody(n int) (json.RawMessage, error) {
	var b map[string]any
	if err := json.Unmarshal(envelope.Example(benchType), &b); err != nil {
		return nil, err
	}
	delete(b, "proposed_measures")
	delete(b, "confidence")
	b["evidence_references"] = b["evidence_references"].([]any)[:1]
	b["description"] = ""
	size := func() int { out, _ := json.Marshal(b); return len(out) }
	desc := 4*maxDescriptionChars - 8 // bytes padText can put in the description
	var measures, refs []any
	for size()+desc < n {
		switch {
		case len(measures) < maxMeasures:
			measures = append(measures, wide(maxMeasureChars))
			b["proposed_measures"] = measures
		case len(refs) < maxRefs-1:
			refs = append(refs, map[string]any{"kind": "other", "title": wide(maxRefTitleChars)})
			b["evidence_references"] = append(b["evidence_references"].([]any)[:1], refs...)
		default:
			return nil, fmt.Errorf("%w: %d bytes is more than the schema of %s allows", errBodySize, n, benchType)
		}
	}
	rest := n - size()
	if rest < 1 {
		return nil, fmt.Errorf("%w: %d bytes is less than the smallest valid %s (%d)", errBodySize, n, benchType, size()+1)
	}
	b["description"] = padText(rest, maxDescriptionChars)
	out, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	if len(out) != n {
		return nil, fmt.Errorf("%w: built %d bytes, not %d", errBodySize, len(out), n)
	}
	if err := envelope.ValidateBody(benchType, out); err != nil {
		return nil, fmt.Errorf("bench body: %w", err)
	}
	return out, nil
}

// wideRune is a 4-byte UTF-8 character (U+20BB7, a variant of the kanji 吉).
const wideRune = "\U00020BB7"

// wide is chars 4-byte characters.
func wide(chars int) string { return strings.Repeat(wideRune, chars) }

// filler is the ASCII text padding repeats.
const filler = "Monthly import volumes and unit values were compared with the same months of the previous year. "

// padText is exactly n bytes of text in at most maxChars characters: ASCII
// while it fits, else x 4-byte characters and ASCII for the rest, with
// x + ascii ≤ maxChars and 4x + ascii = n. n must be at most 4·maxChars.
func padText(n, maxChars int) string {
	ascii := func(k int) string { return strings.Repeat(filler, k/len(filler)+1)[:k] }
	if n <= maxChars {
		return ascii(n)
	}
	x := (n - maxChars + 2) / 3 // smallest x with n-3x ≤ maxChars
	if 4*x > n {
		x = n / 4
	}
	return wide(x) + ascii(n-4*x)
}

// submitBytes is the JSON request of one submission of body to peer.
func submitBytes(peer string, body json.RawMessage) ([]byte, error) {
	return json.Marshal(&api.SubmitRequest{Type: string(benchType), To: peer, Body: body})
}
