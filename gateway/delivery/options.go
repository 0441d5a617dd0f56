package delivery

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Defaults of WebhookConfig, applied by NewWebhook to zero fields.
const (
	DefaultTimeout       = 10 * time.Second
	DefaultRetryWaitMin  = 200 * time.Millisecond
	DefaultRetryWaitMax  = 2 * time.Second
	DefaultMaxRetryAfter = 5 * time.Minute
	DefaultUserAgent     = "cmx-gateway"

	// MaxRetryMax bounds RetryMax: long outages belong to the JetStream
	// redelivery loop (Backoff), not to retries inside one delivery.
	MaxRetryMax = 5
)

// WebhookConfig configures a Webhook. Fields must not change after
// NewWebhook. Zero values have the stated meanings.
type WebhookConfig struct {
	// Timeout bounds one HTTP attempt, from dial to the end of reading the
	// (bounded) response body. 0 means 10s.
	Timeout time.Duration

	// RetryMax is the number of HTTP attempts beyond the first inside one
	// call to Deliver; 0 means none. JetStream redelivery with
	// NakWithDelay(Backoff(...)) is the outer loop: keep this small so two
	// long retry layers are not stacked (catalogue §4.4 step 3).
	RetryMax int

	// RetryWaitMin and RetryWaitMax bound the wait between attempts inside
	// one Deliver call; 0 means 200ms and 2s. An agency's Retry-After longer
	// than RetryWaitMax ends the call instead of being slept through: it is
	// returned in Failure.RetryAfter for the outer loop.
	RetryWaitMin, RetryWaitMax time.Duration

	// MaxRetryAfter caps the Retry-After an agency may ask for; 0 means 5
	// minutes. go-retryablehttp's DefaultBackoff does not cap it (issue
	// #247), so a "Retry-After: 86400" would otherwise park a message a day.
	MaxRetryAfter time.Duration

	// TLS configures the transport NewWebhook builds when Transport is nil
	// (agency CA pool, client certificate). nil means the system roots and
	// no client certificate. Ignored when Transport is set: build that one
	// with NewTransport(TLS) and wrap it.
	TLS *tls.Config

	// Transport carries the requests; the root may wrap it (otelhttp). nil
	// means NewTransport(TLS). Redirects are refused above the transport,
	// whatever it is.
	Transport http.RoundTripper

	// Logger receives one record per failed Deliver (Warn) and per success
	// (Debug). nil discards. URLs are logged as host only: agencies put
	// tokens in query strings.
	Logger *slog.Logger

	// UserAgent is sent on every request; "" means "cmx-gateway".
	UserAgent string
}

// Validate reports every problem of c at once.
func (c WebhookConfig) Validate() error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"Timeout", c.Timeout},
		{"RetryWaitMin", c.RetryWaitMin},
		{"RetryWaitMax", c.RetryWaitMax},
		{"MaxRetryAfter", c.MaxRetryAfter},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("delivery: %s is negative (%v)", d.name, d.v))
		}
	}
	if c.RetryMax < 0 || c.RetryMax > MaxRetryMax {
		errs = append(errs, fmt.Errorf("delivery: RetryMax %d outside 0..%d", c.RetryMax, MaxRetryMax))
	}
	lo, hi := c.RetryWaitMin, c.RetryWaitMax
	if lo <= 0 {
		lo = DefaultRetryWaitMin
	}
	if hi <= 0 {
		hi = DefaultRetryWaitMax
	}
	if lo > hi {
		errs = append(errs, fmt.Errorf("delivery: RetryWaitMin %v exceeds RetryWaitMax %v", lo, hi))
	}
	if c.TLS != nil && c.Transport != nil {
		errs = append(errs, errors.New("delivery: TLS is ignored when Transport is set; build the transport with NewTransport(TLS)"))
	}
	return errors.Join(errs...)
}

// withDefaults returns c with zero (or invalid negative) fields replaced by
// their defaults, so that NewWebhook never builds an unbounded client.
func (c WebhookConfig) withDefaults() WebhookConfig {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Timeout, DefaultTimeout)
	def(&c.RetryWaitMin, DefaultRetryWaitMin)
	def(&c.RetryWaitMax, DefaultRetryWaitMax)
	def(&c.MaxRetryAfter, DefaultMaxRetryAfter)
	c.RetryMax = min(max(c.RetryMax, 0), MaxRetryMax)
	if c.RetryWaitMin > c.RetryWaitMax {
		c.RetryWaitMin = c.RetryWaitMax
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.UserAgent == "" {
		c.UserAgent = DefaultUserAgent
	}
	return c
}

// NewTransport returns the *http.Transport a Webhook uses when none is given:
// pooled keep-alive connections per agency host, bounded dial, handshake and
// header sizes, TLS 1.2 at least, and no proxy (agency traffic goes direct
// unless the operator supplies a transport that says otherwise).
func NewTransport(tlsConfig *tls.Config) *http.Transport {
	var tc *tls.Config
	if tlsConfig != nil {
		tc = tlsConfig.Clone()
	} else {
		tc = &tls.Config{}
	}
	if tc.MinVersion < tls.VersionTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		TLSClientConfig:        tc,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    5 * time.Second,
		MaxIdleConns:           128,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
}
