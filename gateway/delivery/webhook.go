package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/cmx-exchange/cmx/gateway/api"
)

// maxResponseBody bounds how much of an agency's response is read (and
// discarded): enough to keep a keep-alive connection reusable after a small
// answer, never enough to let an agency make us read without end.
const maxResponseBody = 64 << 10

// maxForwardedValue bounds a forwarded trace header value (W3C tracestate
// allows 512 characters).
const maxForwardedValue = 512

// forwardHeaders are the only caller headers Deliver passes on.
var forwardHeaders = []string{"Traceparent", "Tracestate"}

// Webhook delivers verified messages to agency webhooks. It is safe for
// concurrent use.
type Webhook struct {
	cfg    WebhookConfig
	rt     http.RoundTripper
	client *retryablehttp.Client

	mu       sync.Mutex
	inflight map[string]struct{} // message ids being delivered by this Webhook
}

// NewWebhook returns a Webhook for cfg. Zero fields take their documented
// defaults and out-of-range ones are clamped; call cfg.Validate first to
// report them instead.
func NewWebhook(cfg WebhookConfig) *Webhook {
	cfg = cfg.withDefaults()
	rt := cfg.Transport
	if rt == nil {
		rt = NewTransport(cfg.TLS)
	}
	w := &Webhook{cfg: cfg, rt: rt, inflight: make(map[string]struct{})}
	w.client = &retryablehttp.Client{
		HTTPClient: &http.Client{
			// go-retryablehttp closes the client's idle connections after
			// every failed call; hiding CloseIdleConnections keeps one
			// agency's outage from dropping the pooled connections of all.
			Transport:     roundTripperOnly{rt},
			Timeout:       cfg.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		RetryWaitMin: cfg.RetryWaitMin,
		RetryWaitMax: cfg.RetryWaitMax,
		RetryMax:     cfg.RetryMax,
		CheckRetry:   w.checkRetry,
		Backoff:      w.retryWait,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
	}
	return w
}

// MaxDuration bounds one Deliver call: (RetryMax+1) attempts of at most
// Timeout each and RetryMax waits of at most RetryWaitMax. Size the
// JetStream AckWait above it, or send InProgress heartbeats, so that no
// redelivery of the same message starts while a call is in flight (F-09).
func (w *Webhook) MaxDuration() time.Duration {
	n := time.Duration(w.cfg.RetryMax)
	return (n+1)*w.cfg.Timeout + n*w.cfg.RetryWaitMax
}

// CloseIdleConnections closes the idle keep-alive connections to agencies.
func (w *Webhook) CloseIdleConnections() {
	if c, ok := w.rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// roundTripperOnly exposes only RoundTrip of the transport it wraps.
type roundTripperOnly struct{ rt http.RoundTripper }

func (r roundTripperOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	return r.rt.RoundTrip(req)
}

// Deliver POSTs d as JSON to the agency webhook at rawURL with
// Idempotency-Key: d.ID on every attempt, and passes on the trace headers
// of hdr (traceparent, tracestate; nothing else). It returns nil on 2xx and
// a *Failure otherwise; see the package documentation for the
// classification.
func (w *Webhook) Deliver(ctx context.Context, rawURL string, d *api.Delivery, hdr http.Header) error {
	if d == nil || !validID(d.ID) {
		return &Failure{Permanent: true, Err: ErrInvalidID}
	}
	u, err := checkURL(rawURL)
	if err != nil {
		return &Failure{Permanent: true, Err: err}
	}
	body, err := json.Marshal(d)
	if err != nil {
		return &Failure{Permanent: true, Err: fmt.Errorf("delivery: encode message %s: %w", d.ID, err)}
	}
	if !w.acquire(d.ID) {
		return &Failure{Err: ErrInFlight}
	}
	defer w.release(d.ID)

	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, u.String(), body)
	if err != nil {
		return &Failure{Permanent: true, Err: fmt.Errorf("%w: %w", ErrInvalidURL, err)}
	}
	setHeaders(req.Header, d.ID, w.cfg.UserAgent, hdr)

	start := time.Now()
	resp, err := w.client.Do(req)
	ferr := w.outcome(resp, err, u.Host)
	w.log(ctx, u.Host, d.ID, ferr, time.Since(start))
	return ferr
}

// outcome classifies the final response or error of a Deliver call and
// releases the response.
func (w *Webhook) outcome(resp *http.Response, err error, host string) error {
	if err != nil {
		if resp != nil {
			discard(resp.Body)
		}
		redact(err, host)
		return &Failure{Permanent: permanentError(err), Err: err}
	}
	code := resp.StatusCode
	if code >= 200 && code <= 299 {
		// The agency has spoken; a body that breaks off leaves the outcome
		// unknown, so it is retried with the same key (F-12).
		if rerr := discard(resp.Body); rerr != nil {
			redact(rerr, host)
			return &Failure{Status: code, Err: fmt.Errorf("%w: %w", ErrAmbiguous, rerr)}
		}
		return nil
	}
	discard(resp.Body)
	switch {
	case code >= 300 && code <= 399:
		return &Failure{Status: code, Permanent: true, Err: ErrRedirect}
	case transientStatus(code):
		ra, _ := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now(), w.cfg.MaxRetryAfter)
		return &Failure{Status: code, RetryAfter: ra, Err: ErrStatus}
	default:
		return &Failure{Status: code, Permanent: true, Err: ErrStatus}
	}
}

// checkRetry is the retry policy inside one Deliver call. It retries what
// outcome would call transient, except when the agency asks for a wait
// longer than RetryWaitMax: that wait belongs to the JetStream redelivery.
func (w *Webhook) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		return !permanentError(err), nil
	}
	code := resp.StatusCode
	if code >= 200 && code <= 399 || !transientStatus(code) {
		return false, nil
	}
	if ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now(), w.cfg.MaxRetryAfter); ok && ra > w.cfg.RetryWaitMax {
		return false, nil
	}
	return true, nil
}

// retryWait is the wait before retry attempt+1 inside one Deliver call:
// exponential from lo, capped at hi, raised to the agency's Retry-After
// (which checkRetry has already limited to hi).
func (w *Webhook) retryWait(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
	wait := hi
	if attempt < 30 && lo<<attempt < hi {
		wait = lo << attempt
	}
	if resp != nil {
		if ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now(), hi); ok && ra > wait {
			wait = ra
		}
	}
	return wait
}

func (w *Webhook) acquire(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, busy := w.inflight[id]; busy {
		return false
	}
	w.inflight[id] = struct{}{}
	return true
}

func (w *Webhook) release(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.inflight, id)
}

func (w *Webhook) log(ctx context.Context, host, id string, err error, took time.Duration) {
	attrs := []slog.Attr{
		slog.String("msg_id", id),
		slog.String("agency_host", host),
		slog.Duration("took", took),
	}
	var f *Failure
	if !errors.As(err, &f) {
		w.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "webhook delivered", attrs...)
		return
	}
	attrs = append(attrs,
		slog.Int("status", f.Status),
		slog.Bool("permanent", f.Permanent),
		slog.Duration("retry_after", f.RetryAfter),
		slog.String("error", f.Err.Error()))
	w.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "webhook delivery failed", attrs...)
}

// setHeaders sets the fixed headers and forwards the allowed trace headers
// of extra, whatever the case of their keys; values that net/http would
// refuse are dropped rather than turned into a failed delivery.
func setHeaders(h http.Header, id, userAgent string, extra http.Header) {
	h.Set("Content-Type", "application/json")
	h.Set("Idempotency-Key", id)
	h.Set("User-Agent", userAgent)
	for k, vs := range extra {
		ck := http.CanonicalHeaderKey(k)
		for _, allowed := range forwardHeaders {
			if ck != allowed {
				continue
			}
			for _, v := range vs {
				if validHeaderValue(v) {
					h.Add(ck, v)
				}
			}
		}
	}
}

func validHeaderValue(v string) bool {
	if v == "" || len(v) > maxForwardedValue {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, ErrInvalidURL
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, ErrInvalidURL
	}
	return u, nil
}

// discard reads at most maxResponseBody bytes of body and closes it.
func discard(body io.ReadCloser) error {
	_, err := io.Copy(io.Discard, io.LimitReader(body, maxResponseBody))
	body.Close()
	return err
}

// redact keeps an agency URL's path and query (which may carry a token) out
// of errors that end up in logs and receipts' local reasons.
func redact(err error, host string) {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = host
	}
}
