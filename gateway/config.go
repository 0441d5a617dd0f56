package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cmx-exchange/cmx/envelope"
)

// Config configures a Node: one gateway of one party. It is read from one
// YAML file (LoadConfig); every scalar key can be overridden by an
// environment variable CMX_<PATH> (ApplyEnv). Paths to files are relative to
// the config file. Fields must not change after New.
type Config struct {
	Party        string        `yaml:"party,omitempty"`         // our party code, e.g. "US"; required
	Listen       string        `yaml:"listen,omitempty"`        // HTTP API address; "" means "127.0.0.1:8443"
	TLS          TLSFiles      `yaml:"tls,omitempty"`           // HTTP API TLS; empty cert means plain HTTP (loopback only)
	OutageBudget time.Duration `yaml:"outage_budget,omitempty"` // 0 means 7 days: stream MaxAge, message exp, dedup horizon, retired keys
	Log          LogConfig     `yaml:"log,omitempty"`

	Signing    KeyFiles   `yaml:"signing,omitempty"`    // our signing certificate chain and key; required
	Encryption []KeyFiles `yaml:"encryption,omitempty"` // our decryption keys; the newest un-retired is current; required

	Peer     PeerConfig     `yaml:"peer,omitempty"`
	Agencies []AgencyConfig `yaml:"agencies,omitempty"` // our agencies; at least one
	Markings []string       `yaml:"markings,omitempty"` // handling markings accepted inbound; empty means any well-formed marking

	NATS      NATSConfig      `yaml:"nats,omitempty"`
	Limits    LimitsConfig    `yaml:"limits,omitempty"`
	Reconcile ReconcileConfig `yaml:"reconcile,omitempty"`

	dir string // directory of the config file, for relative paths
}

// TLSFiles names a certificate chain and key in PEM files.
type TLSFiles struct {
	Cert     string `yaml:"cert,omitempty"`
	Key      string `yaml:"key,omitempty"`
	ClientCA string `yaml:"client_ca,omitempty"` // CA bundle for agency client certificates; "" means bearer tokens only
}

// KeyFiles names a certificate chain (leaf first) and its private key.
type KeyFiles struct {
	Cert      string    `yaml:"cert,omitempty"`
	Key       string    `yaml:"key,omitempty"`
	RetiredAt time.Time `yaml:"retired_at,omitempty"` // encryption keys only: zero while current
}

// LogConfig selects the log level and format.
type LogConfig struct {
	Level  string `yaml:"level,omitempty"`  // debug, info, warn, error; "" means info
	Format string `yaml:"format,omitempty"` // json or text; "" means json
}

// PeerConfig describes the one peer party.
type PeerConfig struct {
	Party      string `yaml:"party,omitempty"`      // e.g. "JP"; required
	Trust      string `yaml:"trust,omitempty"`      // PEM file of the peer's pinned roots; required
	Encryption string `yaml:"encryption,omitempty"` // PEM file of the peer's current encryption certificate chain; required
	// TraceContext says whether W3C trace context crosses the border with
	// this peer: "propagate" ("" means propagate) or "stop". With "stop" the
	// peer's spans are found by message id, and ours link to nothing foreign.
	TraceContext string `yaml:"trace_context,omitempty"`
}

// AgencyConfig is one of our agencies.
type AgencyConfig struct {
	ID      string   `yaml:"id,omitempty"`       // party-local code, e.g. "DOL-ILAB"; required
	Token   string   `yaml:"token,omitempty"`    // bearer token; set it through CMX_AGENCIES_<i>_TOKEN in production
	CertURI string   `yaml:"cert_uri,omitempty"` // SAN URI of its client certificate, e.g. urn:cmx:agency:US:DOL-ILAB
	Send    []string `yaml:"send,omitempty"`     // types it may send
	Receive []string `yaml:"receive,omitempty"`  // types it receives; the first agency listing a type is that type's default recipient
	Webhook string   `yaml:"webhook,omitempty"`  // delivery URL; "" means pull delivery (GET /v1/inbox)
	Admin   bool     `yaml:"admin,omitempty"`    // operators: may read every message and /v1/peers
}

// NATSConfig selects the embedded server or an external one.
type NATSConfig struct {
	URL      string        `yaml:"url,omitempty"`      // external NATS; "" means the embedded server below
	User     string        `yaml:"user,omitempty"`     // credentials of this gateway in account XCHG
	Password string        `yaml:"password,omitempty"` //
	Embedded EmbeddedNATS  `yaml:"embedded,omitempty"`
	Replicas int           `yaml:"replicas,omitempty"` // stream replicas; 0 means 1 (3 in a production cluster)
	Timeout  time.Duration `yaml:"timeout,omitempty"`  // JetStream request timeout; 0 means 5s
}

// EmbeddedNATS configures the in-process nats-server.
type EmbeddedNATS struct {
	StoreDir     string   `yaml:"store_dir,omitempty"`     // JetStream store; required when embedded
	Port         int      `yaml:"port,omitempty"`          // client port on 127.0.0.1; 0 means random
	LeafListen   string   `yaml:"leaf_listen,omitempty"`   // accept the peer's leafnode here ("host:port")
	LeafRemote   string   `yaml:"leaf_remote,omitempty"`   // or solicit the peer's leafnode ("tls://host:port")
	LeafTLS      KeyFiles `yaml:"leaf_tls,omitempty"`      // our TLS identity on the leafnode (server or client cert)
	PeerUser     string   `yaml:"peer_user,omitempty"`     // accepting side: the user the peer's leafnode logs in as
	PeerPassword string   `yaml:"peer_password,omitempty"` //
	RemoteUser   string   `yaml:"remote_user,omitempty"`   // soliciting side: our login at the peer's listener
	RemotePass   string   `yaml:"remote_password,omitempty"`
	MaxStore     int64    `yaml:"max_store,omitempty"` // JetStream file store limit in bytes; 0 means server default
}

// LimitsConfig bounds the work one input may cause.
type LimitsConfig struct {
	MaxBodyBytes  int64   `yaml:"max_body_bytes,omitempty"`  // submitted JSON; 0 means 1 MiB
	RatePerSecond float64 `yaml:"rate_per_second,omitempty"` // per agency; 0 means 50
	Burst         int     `yaml:"burst,omitempty"`           // 0 means 100
	MaxOutBytes   int64   `yaml:"max_out_bytes,omitempty"`   // CMX_OUT size; 0 means 1 GiB
	MaxInBytes    int64   `yaml:"max_in_bytes,omitempty"`    // CMX_IN size; 0 means 1 GiB
	// EvidenceGrace is how long receipts may keep failing to be signed or
	// stored before the gateway refuses new messages (503) and /readyz
	// fails: invariant 6, fail closed on evidence. 0 means 1 minute.
	EvidenceGrace time.Duration `yaml:"evidence_grace,omitempty"`
	// MemoryBytes is cmxd's soft memory target: the Go runtime's memory
	// (heap, stacks, metadata; the resident set adds the binary's own pages,
	// about 30 MiB). The garbage collector runs more often and returns memory
	// to the OS to stay under it, always leaving the heap 25 % over what is
	// live. It steps aside (Go's default, GOGC=100) when the live heap with
	// that headroom needs over 1.25 times the target, and gives the collector
	// more headroom whenever holding the target would take it over 12 % of
	// the CPU: memory is traded for CPU only while that is cheap. 0 means
	// DefaultMemoryBytes, unless GOGC or GOMEMLIMIT is set in the
	// environment (then those apply); -1 means none (Go's default).
	MemoryBytes int64 `yaml:"memory_bytes,omitempty"`
}

// DefaultMemoryBytes is the soft memory target when limits.memory_bytes is
// 0. Under a backlog of 1 KiB messages a gateway's live heap is 60–90 MiB,
// mostly the JetStream store's block caches; with this target the
// benchmark's gateways peak at 125–135 MiB resident instead of 180–220.
const DefaultMemoryBytes = 112 << 20

// ReconcileConfig tunes how the gateway closes the loop on sent messages.
type ReconcileConfig struct {
	Interval    time.Duration `yaml:"interval,omitempty"`     // sweep period; 0 means 30s
	ResendAfter time.Duration `yaml:"resend_after,omitempty"` // resend without an accepted receipt; 0 means 5m, doubling
}

// minMemoryBytes is the smallest limits.memory_bytes accepted: a gateway's
// live heap is more than that as soon as it works, so a smaller target
// would never be the one in force.
const minMemoryBytes = 32 << 20

// LoadConfig reads a YAML config file, applies CMX_* environment overrides
// and validates the result.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.dir = filepath.Dir(path)
	if err := ApplyEnv(&cfg, os.Environ()); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// SetDir sets the directory relative file paths are resolved against.
func (c *Config) SetDir(dir string) { c.dir = dir }

// Path resolves a file name of the config.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// loopback reports whether an HTTP listen address stays on this host ("" is
// the default 127.0.0.1:8443).
func loopback(listen string) bool {
	if listen == "" {
		return true
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

var (
	partyRe  = regexp.MustCompile(`^[A-Z]{2}$`)
	agencyRe = regexp.MustCompile(`^[A-Z0-9][A-Z0-9-]{0,31}$`)
)

// Validate reports every problem of the config at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !partyRe.MatchString(c.Party) {
		bad("party: %q is not a two-letter party code", c.Party)
	}
	if tc := c.Peer.TraceContext; tc != "" && tc != "propagate" && tc != "stop" {
		bad("peer.trace_context: %q must be propagate or stop", tc)
	}
	if !partyRe.MatchString(c.Peer.Party) || c.Peer.Party == c.Party {
		bad("peer.party: %q must be a two-letter party code other than ours", c.Peer.Party)
	}
	for name, f := range map[string]string{"signing.cert": c.Signing.Cert, "signing.key": c.Signing.Key,
		"peer.trust": c.Peer.Trust, "peer.encryption": c.Peer.Encryption} {
		if f == "" {
			bad("%s: required", name)
		}
	}
	if len(c.Encryption) == 0 {
		bad("encryption: at least one key is required")
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		bad("tls: cert and key go together")
	}
	if c.TLS.Cert == "" && !loopback(c.Listen) {
		bad("listen: %q is not a loopback address: without tls, bearer tokens would cross the network in clear", c.Listen)
	}
	if c.OutageBudget < 0 {
		bad("outage_budget: must not be negative")
	}
	if m := c.Limits.MemoryBytes; m < -1 || (m > 0 && m < minMemoryBytes) {
		bad("limits.memory_bytes: %d is neither -1 (no limit), 0 (default) nor at least %d MiB", m, minMemoryBytes>>20)
	}
	switch strings.ToLower(c.Log.Level) {
	case "", "debug", "info", "warn", "error":
	default:
		bad("log.level: %q is not debug, info, warn or error", c.Log.Level)
	}
	switch strings.ToLower(c.Log.Format) {
	case "", "json", "text":
	default:
		bad("log.format: %q is not json or text", c.Log.Format)
	}
	errs = append(errs, c.validateAgencies()...)
	errs = append(errs, c.validateNATS()...)
	return errors.Join(errs...)
}

func (c *Config) validateAgencies() []error {
	var errs []error
	if len(c.Agencies) == 0 {
		errs = append(errs, errors.New("agencies: at least one agency is required"))
	}
	seen := map[string]bool{}
	for i, a := range c.Agencies {
		at := fmt.Sprintf("agencies[%d]", i)
		if !agencyRe.MatchString(a.ID) {
			errs = append(errs, fmt.Errorf("%s.id: %q is not an agency code (A-Z, 0-9, '-')", at, a.ID))
		}
		if seen[a.ID] {
			errs = append(errs, fmt.Errorf("%s.id: %q appears twice", at, a.ID))
		}
		seen[a.ID] = true
		if a.Token == "" && a.CertURI == "" {
			errs = append(errs, fmt.Errorf("%s: needs a token or a cert_uri to authenticate", at))
		}
		if a.Token != "" && len(a.Token) < 32 {
			errs = append(errs, fmt.Errorf("%s.token: at least 32 characters", at))
		}
		// Delivery refuses such a URL as a permanent failure: every message
		// for the agency would be rejected. The URL may carry a token: not echoed.
		if u, err := url.Parse(a.Webhook); a.Webhook != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
			errs = append(errs, fmt.Errorf("%s.webhook: not an http or https URL with a host", at))
		}
		for _, t := range slices.Concat(a.Send, a.Receive) {
			if !envelope.Type(t).Valid() {
				errs = append(errs, fmt.Errorf("%s: unknown message type %q", at, t))
			}
		}
	}
	return errs
}

func (c *Config) validateNATS() []error {
	var errs []error
	e := c.NATS.Embedded
	if c.NATS.URL == "" {
		if e.StoreDir == "" {
			errs = append(errs, errors.New("nats.embedded.store_dir: required when nats.url is empty"))
		}
		if e.LeafListen != "" && e.LeafRemote != "" {
			errs = append(errs, errors.New("nats.embedded: leaf_listen and leaf_remote exclude each other (one side accepts, the other solicits)"))
		}
		if (e.LeafListen != "" || e.LeafRemote != "") && (e.LeafTLS.Cert == "" || e.LeafTLS.Key == "") {
			errs = append(errs, errors.New("nats.embedded.leaf_tls: cert and key required for the leafnode (mutual TLS)"))
		}
		if e.LeafListen != "" && (e.PeerUser == "" || len(e.PeerPassword) < 16) {
			errs = append(errs, errors.New("nats.embedded: peer_user and a peer_password of 16+ characters required with leaf_listen"))
		}
	}
	return errs
}
