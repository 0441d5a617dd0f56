package delivery_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/delivery"
	"github.com/cmx-exchange/cmx/gateway/delivery/agencytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newID(t testing.TB) string {
	t.Helper()
	return uuid.Must(uuid.NewV7()).String()
}

func sample(id string) *api.Delivery {
	return &api.Delivery{
		ID:        id,
		Type:      "labor_enforcement_notice",
		From:      "US",
		Sender:    "US:DOL-ILAB",
		Recipient: "JP:MHLW",
		Marking:   "TLP:AMBER",
		Body:      json.RawMessage(`{"entity":"Example Mining","finding":"forced overtime"}`),
		JWS:       "eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
	}
}

// fast is a configuration that keeps the retry waits of the tests short.
func fast(cfg delivery.WebhookConfig) delivery.WebhookConfig {
	if cfg.RetryWaitMin == 0 {
		cfg.RetryWaitMin = 10 * time.Millisecond
	}
	if cfg.RetryWaitMax == 0 {
		cfg.RetryWaitMax = 50 * time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	return cfg
}

func newWebhook(t testing.TB, cfg delivery.WebhookConfig) *delivery.Webhook {
	t.Helper()
	w := delivery.NewWebhook(fast(cfg))
	t.Cleanup(w.CloseIdleConnections)
	return w
}

func failure(t testing.TB, err error) *delivery.Failure {
	t.Helper()
	var f *delivery.Failure
	if !errors.As(err, &f) {
		t.Fatalf("error %v (%T) is not a *delivery.Failure", err, err)
	}
	return f
}

func TestDeliverStatus(t *testing.T) {
	for _, tc := range []struct {
		name           string
		status         int
		retryAfter     string
		cfg            delivery.WebhookConfig
		wantClass      error
		wantRetryAfter time.Duration
		wantHits       int
	}{
		{name: "F-11_503_retry_after_86400_capped", status: 503, retryAfter: "86400",
			cfg: delivery.WebhookConfig{MaxRetryAfter: 2 * time.Minute, RetryMax: 1}, wantClass: delivery.ErrTransient,
			wantRetryAfter: 2 * time.Minute, wantHits: 1},
		{name: "F-11_503_retry_after_date_capped", status: 503,
			retryAfter: time.Now().Add(3 * time.Hour).UTC().Format(http.TimeFormat),
			cfg:        delivery.WebhookConfig{RetryMax: 1}, wantClass: delivery.ErrTransient,
			wantRetryAfter: delivery.DefaultMaxRetryAfter, wantHits: 1},
		{name: "F-11_429_retry_after_seconds", status: 429, retryAfter: "30", wantClass: delivery.ErrTransient,
			wantRetryAfter: 30 * time.Second, wantHits: 1},
		{name: "F-11_429", status: 429, wantClass: delivery.ErrTransient, wantHits: 1},
		{name: "500", status: 500, wantClass: delivery.ErrTransient, wantHits: 1},
		{name: "502", status: 502, wantClass: delivery.ErrTransient, wantHits: 1},
		{name: "504", status: 504, wantClass: delivery.ErrTransient, wantHits: 1},
		{name: "408", status: 408, wantClass: delivery.ErrTransient, wantHits: 1},
		{name: "409_idempotency_key_in_use", status: 409, wantClass: delivery.ErrTransient, wantHits: 1},
		{name: "425", status: 425, wantClass: delivery.ErrTransient, wantHits: 1},
		{name: "F-22_422_permanent", status: 422, cfg: delivery.WebhookConfig{RetryMax: 2},
			wantClass: delivery.ErrPermanent, wantHits: 1},
		{name: "F-11_400_permanent", status: 400, cfg: delivery.WebhookConfig{RetryMax: 2},
			wantClass: delivery.ErrPermanent, wantHits: 1},
		{name: "F-11_401_permanent", status: 401, wantClass: delivery.ErrPermanent, wantHits: 1},
		{name: "F-11_403_permanent", status: 403, wantClass: delivery.ErrPermanent, wantHits: 1},
		{name: "F-11_404_permanent", status: 404, cfg: delivery.WebhookConfig{RetryMax: 2},
			wantClass: delivery.ErrPermanent, wantHits: 1},
		{name: "405", status: 405, wantClass: delivery.ErrPermanent, wantHits: 1},
		{name: "410", status: 410, wantClass: delivery.ErrPermanent, wantHits: 1},
		{name: "F-11_413_permanent", status: 413, wantClass: delivery.ErrPermanent, wantHits: 1},
		{name: "415", status: 415, wantClass: delivery.ErrPermanent, wantHits: 1},
		{name: "501_permanent", status: 501, cfg: delivery.WebhookConfig{RetryMax: 2},
			wantClass: delivery.ErrPermanent, wantHits: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := agencytest.New(t)
			a.SetDown(tc.status)
			a.SetRetryAfter(tc.retryAfter)
			w := newWebhook(t, tc.cfg)
			err := w.Deliver(context.Background(), a.URL(), sample(newID(t)), nil)
			if !errors.Is(err, tc.wantClass) {
				t.Fatalf("Deliver = %v, want %v", err, tc.wantClass)
			}
			other := delivery.ErrPermanent
			if tc.wantClass == delivery.ErrPermanent {
				other = delivery.ErrTransient
			}
			if errors.Is(err, other) {
				t.Errorf("Deliver = %v matches both classes", err)
			}
			f := failure(t, err)
			if f.Status != tc.status || !errors.Is(err, delivery.ErrStatus) {
				t.Errorf("Failure = %+v, want status %d and ErrStatus", f, tc.status)
			}
			if f.RetryAfter != tc.wantRetryAfter {
				t.Errorf("RetryAfter = %v, want %v", f.RetryAfter, tc.wantRetryAfter)
			}
			if got := a.Hits(); got != tc.wantHits {
				t.Errorf("agency hits = %d, want %d", got, tc.wantHits)
			}
		})
	}
}

func TestDeliverHeadersAndBody(t *testing.T) {
	a := agencytest.New(t)
	w := newWebhook(t, delivery.WebhookConfig{UserAgent: "cmx-gateway/test"})
	d := sample(newID(t))
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	hdr := http.Header{
		"traceparent":   {tp}, // lowercase, as the NATS carrier keeps it
		"Tracestate":    {"cmx=us"},
		"Authorization": {"Bearer stolen"},
		"X-Forwarded":   {"evil"},
	}
	if err := w.Deliver(context.Background(), a.URL(), d, hdr); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	got := a.Headers(d.ID)
	for k, want := range map[string]string{
		"Idempotency-Key": d.ID,
		"Content-Type":    "application/json",
		"Traceparent":     tp,
		"Tracestate":      "cmx=us",
		"User-Agent":      "cmx-gateway/test",
		"Authorization":   "",
		"X-Forwarded":     "",
	} {
		if v := got.Get(k); v != want {
			t.Errorf("agency saw %s = %q, want %q", k, v, want)
		}
	}
	ds := a.Deliveries()
	if len(ds) != 1 {
		t.Fatalf("deliveries = %d, want 1", len(ds))
	}
	gotJSON, _ := json.Marshal(ds[0])
	wantJSON, _ := json.Marshal(d)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("agency got %s, want %s", gotJSON, wantJSON)
	}
}

func TestDeliverDropsMalformedTraceHeader(t *testing.T) {
	a := agencytest.New(t)
	w := newWebhook(t, delivery.WebhookConfig{})
	d := sample(newID(t))
	hdr := http.Header{"Traceparent": {"00-aa\r\nX-Injected: 1"}, "Tracestate": {strings.Repeat("a", 600)}}
	if err := w.Deliver(context.Background(), a.URL(), d, hdr); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	got := a.Headers(d.ID)
	if got.Get("Traceparent") != "" || got.Get("X-Injected") != "" || got.Get("Tracestate") != "" {
		t.Errorf("malformed trace headers passed: %v", got)
	}
}

func TestDeliverRetryMaxSameKey(t *testing.T) {
	// I3: every attempt carries the same Idempotency-Key.
	a := agencytest.New(t)
	a.SetDown(http.StatusServiceUnavailable)
	w := newWebhook(t, delivery.WebhookConfig{RetryMax: 1})
	id := newID(t)
	err := w.Deliver(context.Background(), a.URL(), sample(id), nil)
	if !errors.Is(err, delivery.ErrTransient) {
		t.Fatalf("Deliver = %v, want transient", err)
	}
	if a.Hits() != 2 || a.Attempts(id) != 2 {
		t.Errorf("hits = %d, attempts with key %s = %d; want 2 and 2", a.Hits(), id, a.Attempts(id))
	}
	if a.Effects(id) != 0 {
		t.Errorf("effects = %d while down, want 0", a.Effects(id))
	}
}

func TestDeliverRetryInsideCallSucceeds(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if n.Add(1) == 1 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	w := newWebhook(t, delivery.WebhookConfig{RetryMax: 1})
	if err := w.Deliver(context.Background(), srv.URL, sample(newID(t)), nil); err != nil {
		t.Fatalf("Deliver = %v, want nil after one retry", err)
	}
	if n.Load() != 2 {
		t.Errorf("requests = %d, want 2", n.Load())
	}
}

func TestDeliverRedirectNotFollowed(t *testing.T) {
	other := agencytest.New(t)
	for _, code := range []int{301, 302, 307, 308} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL(), code)
		}))
		t.Cleanup(srv.Close)
		w := newWebhook(t, delivery.WebhookConfig{RetryMax: 2})
		err := w.Deliver(context.Background(), srv.URL, sample(newID(t)), nil)
		if !errors.Is(err, delivery.ErrPermanent) || !errors.Is(err, delivery.ErrRedirect) {
			t.Errorf("%d: Deliver = %v, want permanent ErrRedirect", code, err)
		}
	}
	if other.Hits() != 0 {
		t.Errorf("redirect target got %d requests, want 0", other.Hits())
	}
}

func TestDeliverConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	w := newWebhook(t, delivery.WebhookConfig{})
	url := "http://" + addr + "/hook?token=SECRET-TOKEN"
	err = w.Deliver(context.Background(), url, sample(newID(t)), nil)
	if !errors.Is(err, delivery.ErrTransient) {
		t.Fatalf("Deliver = %v, want transient", err)
	}
	if f := failure(t, err); f.Status != 0 {
		t.Errorf("Status = %d, want 0", f.Status)
	}
	if strings.Contains(err.Error(), "SECRET-TOKEN") || strings.Contains(err.Error(), "/hook") {
		t.Errorf("error leaks the URL path or query: %v", err)
	}
}

func TestDeliverConnectionCut(t *testing.T) {
	// F-11/F-12: the agency reads the request and drops the connection.
	a := agencytest.New(t)
	a.SetDown(0)
	w := newWebhook(t, delivery.WebhookConfig{})
	id := newID(t)
	err := w.Deliver(context.Background(), a.URL(), sample(id), nil)
	if !errors.Is(err, delivery.ErrTransient) {
		t.Fatalf("Deliver = %v, want transient", err)
	}
	if a.Attempts(id) == 0 || a.Effects(id) != 0 {
		t.Errorf("attempts = %d, effects = %d; want ≥1 and 0", a.Attempts(id), a.Effects(id))
	}
}

func TestDeliverTruncatedSuccessIsAmbiguous(t *testing.T) {
	// F-12: 2xx, then the connection drops before the body ends.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
		buf.Flush()
		conn.Close()
	}))
	t.Cleanup(srv.Close)
	w := newWebhook(t, delivery.WebhookConfig{})
	err := w.Deliver(context.Background(), srv.URL, sample(newID(t)), nil)
	if !errors.Is(err, delivery.ErrTransient) || !errors.Is(err, delivery.ErrAmbiguous) {
		t.Fatalf("Deliver = %v, want transient ErrAmbiguous", err)
	}
	if f := failure(t, err); f.Status != 200 {
		t.Errorf("Status = %d, want 200", f.Status)
	}
}

func TestDeliverTLS(t *testing.T) {
	a := agencytest.NewTLS(t)
	t.Run("F-11_unknown_certificate_permanent", func(t *testing.T) {
		w := newWebhook(t, delivery.WebhookConfig{RetryMax: 2})
		err := w.Deliver(context.Background(), a.URL(), sample(newID(t)), nil)
		if !errors.Is(err, delivery.ErrPermanent) {
			t.Fatalf("Deliver = %v, want permanent", err)
		}
		if a.Hits() != 0 {
			t.Errorf("agency got %d requests over an unverified connection", a.Hits())
		}
	})
	t.Run("trusted_certificate_delivers", func(t *testing.T) {
		w := newWebhook(t, delivery.WebhookConfig{TLS: a.ClientTLS()})
		if err := w.Deliver(context.Background(), a.URL(), sample(newID(t)), nil); err != nil {
			t.Fatalf("Deliver = %v", err)
		}
	})
	t.Run("plain_http_to_tls_agency_fails", func(t *testing.T) {
		w := newWebhook(t, delivery.WebhookConfig{})
		url := strings.Replace(a.URL(), "https://", "http://", 1)
		err := w.Deliver(context.Background(), url, sample(newID(t)), nil)
		if err == nil {
			t.Fatal("Deliver over plain HTTP to a TLS agency succeeded")
		}
	})
}

func TestDeliverSlowAgency(t *testing.T) {
	// F-12: the agency answers after the timeout; the retry with the same key
	// is deduplicated by the agency, which commits the first request late.
	a := agencytest.New(t)
	a.SetDelay(600 * time.Millisecond)
	w := newWebhook(t, delivery.WebhookConfig{Timeout: 100 * time.Millisecond})
	id := newID(t)
	start := time.Now()
	err := w.Deliver(context.Background(), a.URL(), sample(id), nil)
	if !errors.Is(err, delivery.ErrTransient) {
		t.Fatalf("Deliver = %v, want transient", err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("Deliver took %v with Timeout 100ms", took)
	}
	a.SetDelay(0)
	if err := w.Deliver(context.Background(), a.URL(), sample(id), nil); err != nil {
		t.Fatalf("second Deliver = %v", err)
	}
	waitFor(t, 2*time.Second, func() bool { return a.InFlight(id) == 0 })
	if a.Effects(id) != 1 || len(a.Deliveries()) != 1 || a.Attempts(id) != 2 {
		t.Errorf("effects = %d, deliveries = %d, attempts = %d; want 1, 1, 2",
			a.Effects(id), len(a.Deliveries()), a.Attempts(id))
	}
}

func TestDeliverNoConcurrentCallsPerID(t *testing.T) {
	// F-09: a second Deliver of an id in flight does not reach the agency.
	a := agencytest.New(t)
	a.SetDelay(300 * time.Millisecond)
	w := newWebhook(t, delivery.WebhookConfig{})
	id := newID(t)
	first := make(chan error, 1)
	go func() { first <- w.Deliver(context.Background(), a.URL(), sample(id), nil) }()
	waitFor(t, 2*time.Second, func() bool { return a.Attempts(id) == 1 })
	err := w.Deliver(context.Background(), a.URL(), sample(id), nil)
	if !errors.Is(err, delivery.ErrInFlight) || !errors.Is(err, delivery.ErrTransient) {
		t.Errorf("concurrent Deliver = %v, want transient ErrInFlight", err)
	}
	if err := <-first; err != nil {
		t.Fatalf("first Deliver = %v", err)
	}
	if got := a.MaxConcurrent(id); got != 1 {
		t.Errorf("MaxConcurrent = %d, want 1", got)
	}
	if err := w.Deliver(context.Background(), a.URL(), sample(id), nil); err != nil {
		t.Errorf("Deliver after the first ended = %v, want nil", err)
	}
}

// countingTransport counts the response body bytes the client reads.
type countingTransport struct {
	rt   http.RoundTripper
	read atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if resp != nil {
		resp.Body = &countingBody{ReadCloser: resp.Body, n: &c.read}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func TestDeliverBoundedResponseBody(t *testing.T) {
	// I7: a 10 MiB answer is not read to its end.
	chunk := make([]byte, 64<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", "10485760")
		w.WriteHeader(http.StatusOK)
		for i := 0; i < 160; i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	base := delivery.NewTransport(nil)
	t.Cleanup(base.CloseIdleConnections)
	ct := &countingTransport{rt: base}
	w := newWebhook(t, delivery.WebhookConfig{Transport: ct})
	if err := w.Deliver(context.Background(), srv.URL, sample(newID(t)), nil); err != nil {
		t.Fatalf("Deliver = %v", err)
	}
	if n := ct.read.Load(); n > 64<<10 {
		t.Errorf("read %d bytes of the response body, want at most %d", n, 64<<10)
	}
}

func TestDeliverRefusedInputs(t *testing.T) {
	a := agencytest.New(t)
	w := newWebhook(t, delivery.WebhookConfig{})
	for _, tc := range []struct {
		name  string
		url   string
		d     *api.Delivery
		cause error
	}{
		{name: "nil_delivery", url: a.URL(), d: nil, cause: delivery.ErrInvalidID},
		{name: "id_not_uuid", url: a.URL(), d: sample("not-a-uuid"), cause: delivery.ErrInvalidID},
		{name: "id_uppercase", url: a.URL(), d: sample(strings.ToUpper(newID(t))), cause: delivery.ErrInvalidID},
		{name: "url_ftp", url: "ftp://127.0.0.1/x", d: sample(newID(t)), cause: delivery.ErrInvalidURL},
		{name: "url_relative", url: "/webhook", d: sample(newID(t)), cause: delivery.ErrInvalidURL},
		{name: "url_garbage", url: "http://[::1", d: sample(newID(t)), cause: delivery.ErrInvalidURL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := w.Deliver(context.Background(), tc.url, tc.d, nil)
			if !errors.Is(err, delivery.ErrPermanent) || !errors.Is(err, tc.cause) {
				t.Errorf("Deliver = %v, want permanent %v", err, tc.cause)
			}
		})
	}
	if a.Hits() != 0 {
		t.Errorf("agency got %d requests for refused inputs", a.Hits())
	}
}

func TestDeliverCallerContextEnded(t *testing.T) {
	a := agencytest.New(t)
	a.SetDelay(time.Second)
	w := newWebhook(t, delivery.WebhookConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := w.Deliver(ctx, a.URL(), sample(newID(t)), nil)
	if !errors.Is(err, delivery.ErrTransient) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Deliver = %v, want transient wrapping context.DeadlineExceeded", err)
	}
}

func TestWebhookConfigValidate(t *testing.T) {
	if err := (delivery.WebhookConfig{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
	err := delivery.WebhookConfig{
		Timeout:      -time.Second,
		RetryMax:     99,
		RetryWaitMin: 3 * time.Second,
		RetryWaitMax: time.Second,
		TLS:          agencytest.New(t).ClientTLS(),
		Transport:    http.DefaultTransport,
	}.Validate()
	for _, want := range []string{"Timeout", "RetryMax", "RetryWaitMin", "TLS is ignored"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
}

func TestMaxDuration(t *testing.T) {
	w := newWebhook(t, delivery.WebhookConfig{Timeout: 3 * time.Second, RetryMax: 2, RetryWaitMax: time.Second})
	if got, want := w.MaxDuration(), 11*time.Second; got != want {
		t.Errorf("MaxDuration = %v, want %v", got, want)
	}
}

func TestFailureClasses(t *testing.T) {
	cause := errors.New("boom")
	for _, tc := range []struct {
		name      string
		f         *delivery.Failure
		permanent bool
	}{
		{name: "transient", f: &delivery.Failure{Status: 503, RetryAfter: time.Minute, Err: cause}},
		{name: "permanent", f: &delivery.Failure{Status: 422, Permanent: true, Err: cause}, permanent: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error = tc.f
			if errors.Is(err, delivery.ErrPermanent) != tc.permanent || errors.Is(err, delivery.ErrTransient) == tc.permanent {
				t.Errorf("classes of %v wrong", err)
			}
			if !errors.Is(err, cause) {
				t.Errorf("%v does not unwrap to its cause", err)
			}
			if !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "HTTP") {
				t.Errorf("Error() = %q", err.Error())
			}
		})
	}
}

func waitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDeliverKeepsPoolWhenAnotherAgencyFails(t *testing.T) {
	// One agency's outage must not close the pooled connections to others
	// (go-retryablehttp closes idle connections after every failed call).
	up, down := agencytest.New(t), agencytest.New(t)
	down.SetDown(http.StatusServiceUnavailable)
	w := newWebhook(t, delivery.WebhookConfig{})
	ctx := context.Background()
	for i := range 3 {
		if err := w.Deliver(ctx, up.URL(), sample(newID(t)), nil); err != nil {
			t.Fatalf("Deliver to the healthy agency #%d: %v", i+1, err)
		}
		if err := w.Deliver(ctx, down.URL(), sample(newID(t)), nil); !errors.Is(err, delivery.ErrTransient) {
			t.Fatalf("Deliver to the agency that is down = %v", err)
		}
	}
	if got := up.Conns(); got != 1 {
		t.Errorf("healthy agency saw %d connections for 3 deliveries, want 1 (keep-alive)", got)
	}
}
