package agencytest_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/delivery/agencytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	id1 = "0190f5a2-7b3c-7d4e-8f10-123456789abc"
	id2 = "0190f5a2-7b3c-7d4e-8f10-123456789abd"
)

func client(t *testing.T) *http.Client {
	t.Helper()
	// No keep-alive: net/http replays a request carrying Idempotency-Key
	// once on a reused connection that fails, which would blur Hits.
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// post sends a delivery of id with Idempotency-Key key and returns the
// status, or 0 when the connection failed.
func post(t *testing.T, c *http.Client, url, key, id string) int {
	t.Helper()
	body, _ := json.Marshal(api.Delivery{ID: id, Type: "labor_enforcement_notice", Body: json.RawMessage(`{}`)})
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestDedupByKey(t *testing.T) {
	a := agencytest.New(t)
	c := client(t)
	for range 3 {
		if got := post(t, c, a.URL(), id1, id1); got != http.StatusNoContent {
			t.Fatalf("status = %d, want 204", got)
		}
	}
	if got := post(t, c, a.URL(), id2, id2); got != http.StatusNoContent {
		t.Fatalf("status = %d, want 204", got)
	}
	if a.Hits() != 4 || a.Attempts(id1) != 3 {
		t.Errorf("hits = %d, attempts(id1) = %d; want 4, 3", a.Hits(), a.Attempts(id1))
	}
	if a.Effects(id1) != 1 || a.Effects(id2) != 1 || len(a.Deliveries()) != 2 {
		t.Errorf("effects = %d, %d, deliveries = %d; want 1, 1, 2", a.Effects(id1), a.Effects(id2), len(a.Deliveries()))
	}
	if got := a.Headers(id1).Get("Traceparent"); got == "" {
		t.Error("Headers lost the traceparent")
	}
	a.WaitDeliveries(t, 2, time.Second)
}

func TestRefusesNonDeliveries(t *testing.T) {
	a := agencytest.New(t)
	c := client(t)
	if got := post(t, c, a.URL(), id2, id1); got != http.StatusBadRequest {
		t.Errorf("key different from id: status %d, want 400", got)
	}
	if got := post(t, c, a.URL(), "", id1); got != http.StatusBadRequest {
		t.Errorf("no key: status %d, want 400", got)
	}
	if len(a.Deliveries()) != 0 || a.Effects(id1) != 0 {
		t.Errorf("refused requests recorded: %v", a.Deliveries())
	}
}

func TestDownAndUp(t *testing.T) {
	a := agencytest.New(t)
	c := client(t)
	a.SetDown(http.StatusServiceUnavailable)
	a.SetRetryAfter("120")
	req, _ := http.NewRequest(http.MethodPost, a.URL(), bytes.NewReader([]byte(`{}`)))
	req.Header.Set("Idempotency-Key", id1)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "120" {
		t.Errorf("down: %d Retry-After %q, want 503 and 120", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	a.SetDown(0)
	if got := post(t, c, a.URL(), id1, id1); got != 0 {
		t.Errorf("cut: status %d, want a connection error", got)
	}
	if a.Effects(id1) != 0 {
		t.Errorf("effects while down = %d", a.Effects(id1))
	}
	a.SetUp()
	if got := post(t, c, a.URL(), id1, id1); got != http.StatusNoContent {
		t.Errorf("up: status %d, want 204", got)
	}
	if a.Effects(id1) != 1 || a.Hits() != 3 {
		t.Errorf("effects = %d, hits = %d; want 1, 3", a.Effects(id1), a.Hits())
	}
}

func TestMaxConcurrentDetectsOverlap(t *testing.T) {
	a := agencytest.New(t)
	a.SetDelay(500 * time.Millisecond)
	c := client(t)
	var wg sync.WaitGroup
	for _, key := range []string{id1, id1, id2} {
		wg.Go(func() { post(t, c, a.URL(), key, key) })
	}
	wg.Wait()
	if a.MaxConcurrent(id1) != 2 || a.MaxConcurrent(id2) != 1 {
		t.Errorf("MaxConcurrent = %d, %d; want 2, 1", a.MaxConcurrent(id1), a.MaxConcurrent(id2))
	}
	if a.InFlight(id1) != 0 || a.Effects(id1) != 1 {
		t.Errorf("in flight = %d, effects = %d; want 0, 1", a.InFlight(id1), a.Effects(id1))
	}
}

func TestTLSAgency(t *testing.T) {
	a := agencytest.NewTLS(t)
	tr := &http.Transport{TLSClientConfig: a.ClientTLS()}
	t.Cleanup(tr.CloseIdleConnections)
	if got := post(t, &http.Client{Transport: tr}, a.URL(), id1, id1); got != http.StatusNoContent {
		t.Errorf("status = %d, want 204", got)
	}
	if got := post(t, client(t), a.URL(), id2, id2); got != 0 {
		t.Errorf("untrusting client got status %d, want a TLS error", got)
	}
}
