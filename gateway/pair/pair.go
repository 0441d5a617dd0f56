package pair

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway"
	"github.com/cmx-exchange/cmx/gateway/client"
	"github.com/cmx-exchange/cmx/gateway/telemetry"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// Options configures Start.
type Options struct {
	Dir    string       // working directory (PKI, configs, NATS stores); required
	Logger *slog.Logger // gateway logs; nil discards
	// Proxy routes the leafnode through a proxy that can be cut (Pair.Proxy).
	Proxy bool
	// Webhooks overrides agency webhook URLs, keyed "US:DOL-ILAB"; a value
	// of "" turns that agency into a pull agency.
	Webhooks     map[string]string
	OutageBudget time.Duration
	// Tune, if set, may change each side's config before it is written.
	Tune func(*gateway.Config)
	// Telemetry, if set, gives each party's gateway its providers (tests
	// with in-memory exporters); otherwise each builds its own from OTEL_*.
	Telemetry map[string]*telemetry.Providers
}

// Pair is two running gateways joined by a leafnode.
type Pair struct {
	US, JP *Side
	Proxy  *transporttest.Proxy // nil unless Options.Proxy
	opts   Options
}

// Side is one party's gateway with its sample agencies.
type Side struct {
	Party, Peer string
	ConfigPath  string
	PKIDir      string
	URL         string             // http://127.0.0.1:port of the HTTP API
	Tokens      map[string]string  // agency → bearer token
	Webhooks    map[string]*Agency // sample webhook receivers by agency
	Pull        []string           // pull agencies
	Node        *gateway.Node
	cancel      context.CancelFunc
	done        chan error
	logger      *slog.Logger
	tel         *telemetry.Providers
}

// agencies of each party: id → (send/receive type, webhook?)
var sample = map[string][]struct {
	id   string
	typ  envelope.Type
	pull bool
}{
	"US": {{"USTR", envelope.NonMarketPracticeReport, false}, {"DOL-ILAB", envelope.LaborEnforcementNotice, false}, {"TREAS-CFIUS", envelope.InvestmentReviewBestPractice, true}},
	"JP": {{"METI", envelope.NonMarketPracticeReport, false}, {"MHLW", envelope.LaborEnforcementNotice, false}, {"MOF", envelope.InvestmentReviewBestPractice, true}},
}

// AgencyFor returns the sample agency of party that handles type t.
func AgencyFor(party string, t envelope.Type) string {
	for _, a := range sample[party] {
		if a.typ == t {
			return a.id
		}
	}
	return ""
}

// Start creates the PKI and configs under opts.Dir and starts JP (which
// accepts the leafnode) and then US (which solicits it), and waits until
// both are ready and the leafnode is up.
func Start(ctx context.Context, opts Options) (*Pair, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pair{opts: opts}
	for _, party := range []string{"US", "JP"} {
		if err := writePKI(opts.Dir, party); err != nil {
			return nil, err
		}
	}
	secret := rand.Text()
	jp, err := p.newSide(ctx, "JP", "US", func(c *gateway.Config) {
		c.NATS.Embedded.LeafListen = "127.0.0.1:0"
		c.NATS.Embedded.LeafTLS = gateway.KeyFiles{Cert: "pki/JP/tls-server.pem", Key: "pki/JP/tls-server.key"}
		c.NATS.Embedded.PeerUser, c.NATS.Embedded.PeerPassword = "us", secret
	})
	if err != nil {
		return nil, err
	}
	p.JP = jp
	leaf := strings.TrimPrefix(jp.Node.LeafURL(), "tls://")
	if opts.Proxy {
		if p.Proxy, err = transporttest.StartProxy(leaf); err != nil {
			p.Stop()
			return nil, err
		}
		leaf = p.Proxy.Addr()
	}
	us, err := p.newSide(ctx, "US", "JP", func(c *gateway.Config) {
		c.NATS.Embedded.LeafRemote = "tls://" + leaf
		c.NATS.Embedded.LeafTLS = gateway.KeyFiles{Cert: "pki/US/tls-client.pem", Key: "pki/US/tls-client.key"}
		c.NATS.Embedded.RemoteUser, c.NATS.Embedded.RemotePass = "us", secret
	})
	if err != nil {
		p.Stop()
		return nil, err
	}
	p.US = us
	if err := p.WaitLinked(ctx, 30*time.Second); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// WaitLinked waits until the leafnode is up on both sides.
func (p *Pair) WaitLinked(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !p.US.Node.LeafConnected() || !p.JP.Node.LeafConnected() {
		if time.Now().After(deadline) {
			return errors.New("pair: leafnode did not come up")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// Stop stops both gateways and the sample agencies.
func (p *Pair) Stop() error {
	var errs []error
	for _, s := range []*Side{p.US, p.JP} {
		if s != nil {
			errs = append(errs, s.Stop())
			for _, a := range s.Webhooks {
				_ = a.Close()
			}
		}
	}
	if p.Proxy != nil {
		p.Proxy.Close()
	}
	return errors.Join(errs...)
}

// Side returns the side of party.
func (p *Pair) Side(party string) *Side {
	if party == "US" {
		return p.US
	}
	return p.JP
}

func writePKI(dir, party string) error {
	pki, err := certs.NewPKI(party, certs.PKIOptions{})
	if err != nil {
		return err
	}
	files, err := pki.Files()
	if err != nil {
		return err
	}
	out := filepath.Join(dir, "pki", party)
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	for name, b := range files {
		mode := os.FileMode(0o644)
		if certs.IsPrivateKeyFile(name) {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(out, name), b, mode); err != nil {
			return err
		}
	}
	return nil
}

// Client returns an API client for one of the side's agencies.
func (s *Side) Client(agency string) *client.Client {
	return &client.Client{BaseURL: s.URL, Token: s.Tokens[agency]}
}

func (p *Pair) config(party, peer string) (*gateway.Config, *Side) {
	s := &Side{Party: party, Peer: peer, Tokens: map[string]string{}, Webhooks: map[string]*Agency{}, logger: p.opts.Logger, tel: p.opts.Telemetry[party]}
	c := &gateway.Config{
		Party: party, Listen: "127.0.0.1:0", OutageBudget: p.opts.OutageBudget,
		Signing:    gateway.KeyFiles{Cert: "pki/" + party + "/signing.pem", Key: "pki/" + party + "/signing.key"},
		Encryption: []gateway.KeyFiles{{Cert: "pki/" + party + "/encryption.pem", Key: "pki/" + party + "/encryption.key"}},
		Peer:       gateway.PeerConfig{Party: peer, Trust: "pki/" + peer + "/bundle.pem", Encryption: "pki/" + peer + "/encryption.pem"},
		NATS:       gateway.NATSConfig{Embedded: gateway.EmbeddedNATS{StoreDir: "data/" + party + "/nats"}},
		Limits:     gateway.LimitsConfig{RatePerSecond: 100000, Burst: 100000},
	}
	for _, a := range sample[party] {
		tok := token()
		s.Tokens[a.id] = tok
		ac := gateway.AgencyConfig{ID: a.id, Token: tok, Send: []string{string(a.typ)}, Receive: []string{string(a.typ)}}
		if !a.pull {
			ac.Webhook = "pending"
		}
		if url, ok := p.opts.Webhooks[party+":"+a.id]; ok {
			ac.Webhook = url
		}
		if ac.Webhook == "" {
			s.Pull = append(s.Pull, a.id)
		}
		c.Agencies = append(c.Agencies, ac)
	}
	s.Tokens["OPS"] = token()
	c.Agencies = append(c.Agencies, gateway.AgencyConfig{ID: "OPS", Token: s.Tokens["OPS"], Admin: true})
	return c, s
}

// sideConfig builds a side's config, starts its sample webhook agencies and
// applies the tuning; the caller writes it.
func (p *Pair) sideConfig(party, peer string, tune func(*gateway.Config)) (*gateway.Config, *Side, error) {
	c, s := p.config(party, peer)
	for i, a := range c.Agencies {
		if a.Webhook != "pending" {
			continue
		}
		ag, err := StartAgency()
		if err != nil {
			return nil, s, err
		}
		s.Webhooks[a.ID] = ag
		c.Agencies[i].Webhook = ag.URL()
	}
	tune(c)
	if p.opts.Tune != nil {
		p.opts.Tune(c)
	}
	s.ConfigPath = filepath.Join(p.opts.Dir, strings.ToLower(party)+".yaml")
	s.PKIDir = filepath.Join(p.opts.Dir, "pki", party)
	return c, s, nil
}

// newSide writes a side's config and starts its gateway.
func (p *Pair) newSide(ctx context.Context, party, peer string, tune func(*gateway.Config)) (*Side, error) {
	c, s, err := p.sideConfig(party, peer, tune)
	if err != nil {
		return nil, err
	}
	if err := writeConfig(s.ConfigPath, c); err != nil {
		return nil, err
	}
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	// Pin the ports the first start chose, so a restart keeps its addresses.
	c.Listen = s.Node.HTTPAddr().String()
	if c.NATS.Embedded.LeafListen != "" {
		c.NATS.Embedded.LeafListen = strings.TrimPrefix(s.Node.LeafURL(), "tls://")
	}
	return s, writeConfig(s.ConfigPath, c)
}

func writeConfig(path string, c *gateway.Config) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	hdr := "# cmx gateway configuration written by the local exchange (pair); every key can be\n# overridden with CMX_<PATH> environment variables, e.g. CMX_LOG_LEVEL=debug.\n"
	return os.WriteFile(path, append([]byte(hdr), b...), 0o600)
}

// Start (re)starts the side's gateway from its config file.
func (s *Side) Start(ctx context.Context) error {
	cfg, err := gateway.LoadConfig(s.ConfigPath)
	if err != nil {
		return err
	}
	opts := []gateway.Option{gateway.WithLogger(s.logger.With("party", s.Party))}
	if s.tel != nil {
		opts = append(opts, gateway.WithTelemetry(s.tel))
	}
	n, err := gateway.New(cfg, opts...)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.Node, s.cancel, s.done = n, cancel, make(chan error, 1)
	go func() { s.done <- n.Run(runCtx) }()
	select {
	case <-n.Started():
	case err := <-s.done:
		cancel()
		return fmt.Errorf("pair: %s gateway: %w", s.Party, err)
	case <-time.After(60 * time.Second):
		cancel()
		return fmt.Errorf("pair: %s gateway did not start", s.Party)
	}
	s.URL = "http://" + n.HTTPAddr().String()
	return nil
}

// Stop stops the side's gateway gracefully and waits for it.
func (s *Side) Stop() error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	err := <-s.done
	s.cancel = nil
	return err
}

// Restart stops and starts the side's gateway on the same store.
func (s *Side) Restart(ctx context.Context) error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.Start(ctx)
}

// token is a fresh bearer token (256 bits of entropy in base32).
func token() string { return rand.Text() + rand.Text() }
