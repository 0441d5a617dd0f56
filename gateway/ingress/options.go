package ingress

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/cmx-exchange/cmx/envelope"
)

// Defaults applied to zero fields of Config.
const (
	DefaultMaxBodyBytes        = 1 << 20 // the JSON request, before sealing
	DefaultMaxHeaderBytes      = 16 << 10
	DefaultReadHeaderTimeout   = 5 * time.Second
	DefaultReadTimeout         = 30 * time.Second
	DefaultWriteTimeout        = 30 * time.Second
	DefaultIdleTimeout         = 120 * time.Second
	DefaultRatePerSecond       = 50
	DefaultBurst               = 100
	DefaultIdemInFlightTimeout = 30 * time.Second
	DefaultMaxConns            = 1024

	// MinTokenBytes is the shortest bearer token Validate accepts: a token is a
	// shared secret and must not be guessable.
	MinTokenBytes = 32
)

// Agency is one back-office system allowed to use the API.
type Agency struct {
	ID      string   // party-local name, e.g. "DOL-ILAB": 1..64 of [A-Za-z0-9_-], starting alphanumeric
	Token   string   // bearer token (at least MinTokenBytes); "" = no token auth for this agency
	CertURI string   // SAN URI of its client certificate, e.g. "urn:cmx:agency:US:DOL-ILAB"; "" = no cert auth
	Send    []string // message types it may send (envelope.Type values)
	Admin   bool     // may read /v1/peers and any message (operators)
}

// Config configures a Server. Fields must not change after New.
type Config struct {
	Party    string   // our party code, e.g. "US"; required
	Agencies []Agency // at least one; IDs, tokens and CertURIs unique

	MaxBodyBytes   int64 // request body cap; 0 = DefaultMaxBodyBytes (1 MiB)
	MaxHeaderBytes int   // 0 = DefaultMaxHeaderBytes (16 KiB); net/http answers 431 above it

	ReadHeaderTimeout time.Duration // 0 = 5s (slowloris)
	ReadTimeout       time.Duration // 0 = 30s (slow body)
	WriteTimeout      time.Duration // 0 = 30s
	IdleTimeout       time.Duration // 0 = 120s

	RatePerSecond float64 // per agency token bucket refill; 0 = 50
	Burst         int     // per agency bucket size; 0 = 100

	// IdemInFlightTimeout bounds one submission: Backend.Submit gets at most
	// this long, and an in-flight idempotency record older than this may be
	// taken over by a retry (crash recovery) with the same message id.
	// 0 = 30s.
	IdemInFlightTimeout time.Duration

	// MaxConns caps concurrent connections accepted by Run (not by a server
	// built with HTTPServer and served by the caller). 0 = 1024; -1 = no cap.
	MaxConns int

	Logger *slog.Logger     // nil discards
	Now    func() time.Time // nil = time.Now
}

var (
	partyRE     = regexp.MustCompile(`^[A-Z]{2}$`)
	agencyIDRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	errNegative = errors.New("must not be negative")
)

// Validate reports every problem of c at once.
func (c *Config) Validate() error {
	var errs []error
	add := func(field string, err error) { errs = append(errs, fmt.Errorf("ingress: config %s: %w", field, err)) }
	if !partyRE.MatchString(c.Party) {
		add("Party", errors.New("must be two upper-case letters"))
	}
	if len(c.Agencies) == 0 {
		add("Agencies", errors.New("at least one agency is required"))
	}
	errs = append(errs, validateAgencies(c.Agencies)...)
	for name, v := range map[string]int64{
		"MaxBodyBytes": c.MaxBodyBytes, "MaxHeaderBytes": int64(c.MaxHeaderBytes), "Burst": int64(c.Burst),
		"ReadHeaderTimeout": int64(c.ReadHeaderTimeout), "ReadTimeout": int64(c.ReadTimeout),
		"WriteTimeout": int64(c.WriteTimeout), "IdleTimeout": int64(c.IdleTimeout),
		"IdemInFlightTimeout": int64(c.IdemInFlightTimeout),
	} {
		if v < 0 {
			add(name, errNegative)
		}
	}
	if c.RatePerSecond < 0 {
		add("RatePerSecond", errNegative)
	}
	if c.MaxConns < -1 {
		add("MaxConns", errors.New("must be -1, 0 or positive"))
	}
	return errors.Join(errs...)
}

func validateAgencies(agencies []Agency) []error {
	var errs []error
	ids, tokens, uris := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for i, a := range agencies {
		add := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("ingress: config Agencies[%d]: "+format, append([]any{i}, args...)...))
		}
		if !agencyIDRE.MatchString(a.ID) {
			add("ID must be 1..64 of [A-Za-z0-9_-] starting alphanumeric")
		} else if ids[a.ID] {
			add("duplicate ID %q", a.ID)
		}
		ids[a.ID] = true
		if a.Token == "" && a.CertURI == "" {
			add("%s: needs a Token or a CertURI", a.ID)
		}
		if a.Token != "" {
			if len(a.Token) < MinTokenBytes {
				add("%s: Token shorter than %d bytes", a.ID, MinTokenBytes)
			}
			if tokens[a.Token] {
				add("%s: Token shared with another agency", a.ID)
			}
			tokens[a.Token] = true
		}
		if a.CertURI != "" {
			if u, err := url.Parse(a.CertURI); err != nil || u.Scheme == "" {
				add("%s: CertURI is not an absolute URI", a.ID)
			}
			if uris[a.CertURI] {
				add("%s: CertURI shared with another agency", a.ID)
			}
			uris[a.CertURI] = true
		}
		for _, t := range a.Send {
			if !envelope.Type(t).Valid() {
				add("%s: Send names unknown type %q", a.ID, t)
			}
		}
	}
	return errs
}

// withDefaults returns c with zero fields replaced by their documented defaults.
func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	def(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&c.ReadTimeout, DefaultReadTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.IdemInFlightTimeout, DefaultIdemInFlightTimeout)
	if c.RatePerSecond == 0 {
		c.RatePerSecond = DefaultRatePerSecond
	}
	if c.Burst == 0 {
		c.Burst = DefaultBurst
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Option configures optional behaviour of New.
type Option func(*options) error

type options struct {
	extra []extraRoute
	wrap  []func(http.Handler) http.Handler
}

// WithMiddleware wraps the whole API handler, outermost last (e.g. an
// OpenTelemetry SERVER span per request).
func WithMiddleware(mw func(http.Handler) http.Handler) Option {
	return func(o *options) error {
		if mw == nil {
			return errors.New("ingress: WithMiddleware needs a middleware")
		}
		o.wrap = append(o.wrap, mw)
		return nil
	}
}

type extraRoute struct {
	pattern string
	h       http.Handler
}

// WithExtraHandler mounts h at pattern (a net/http ServeMux pattern, e.g.
// "GET /metrics") next to the API routes. Extra handlers get the common
// response headers, panic recovery and problem+json 404/405, but no
// authentication or rate limit: h must do its own if it needs any.
func WithExtraHandler(pattern string, h http.Handler) Option {
	return func(o *options) error {
		if pattern == "" || h == nil {
			return errors.New("ingress: WithExtraHandler needs a pattern and a handler")
		}
		o.extra = append(o.extra, extraRoute{pattern: pattern, h: h})
		return nil
	}
}
