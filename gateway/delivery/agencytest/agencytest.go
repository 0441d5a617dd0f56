package agencytest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
)

// maxBody bounds what the agency reads of one request.
const maxBody = 16 << 20

// Agency is a fake agency webhook. Its methods are safe for concurrent use.
type Agency struct {
	srv    *httptest.Server
	closed chan struct{} // closed at cleanup: cuts delays short

	mu         sync.Mutex
	conns      int
	hits       int
	attempts   map[string]int
	inflight   map[string]int
	maxInFl    map[string]int
	headers    map[string]http.Header
	effects    map[string]int
	deliveries []api.Delivery
	downStatus int
	down       bool
	retryAfter string
	delay      time.Duration
}

// New starts a plain-HTTP agency on 127.0.0.1; t.Cleanup closes it.
func New(t testing.TB) *Agency {
	t.Helper()
	a := newAgency(t)
	a.srv.Start()
	return a
}

// NewTLS starts an HTTPS agency on 127.0.0.1 with a certificate that only
// RootCAs trusts; t.Cleanup closes it.
func NewTLS(t testing.TB) *Agency {
	t.Helper()
	a := newAgency(t)
	a.srv.StartTLS()
	return a
}

func newAgency(t testing.TB) *Agency {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("agencytest: listen: %v", err)
	}
	a := &Agency{
		closed:   make(chan struct{}),
		attempts: make(map[string]int),
		inflight: make(map[string]int),
		maxInFl:  make(map[string]int),
		headers:  make(map[string]http.Header),
		effects:  make(map[string]int),
	}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(a.serve))
	// Failed handshakes and cut connections are what the tests provoke.
	a.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	a.srv.Config.ConnState = a.connState
	a.srv.Listener.Close()
	a.srv.Listener = ln
	t.Cleanup(func() {
		close(a.closed)
		a.srv.Close()
	})
	return a
}

// URL is the webhook URL.
func (a *Agency) URL() string { return a.srv.URL + "/webhook" }

// RootCAs returns a pool trusting a TLS agency's certificate.
func (a *Agency) RootCAs() *x509.CertPool {
	pool := x509.NewCertPool()
	if c := a.srv.Certificate(); c != nil {
		pool.AddCert(c)
	}
	return pool
}

// ClientTLS returns a client TLS configuration that trusts a TLS agency.
func (a *Agency) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: a.RootCAs(), MinVersion: tls.VersionTLS12}
}

// Conns is the number of connections accepted: with keep-alive, fewer than
// the requests.
func (a *Agency) Conns() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.conns
}

func (a *Agency) connState(_ net.Conn, s http.ConnState) {
	if s == http.StateNew {
		a.mu.Lock()
		a.conns++
		a.mu.Unlock()
	}
}

// Hits is the number of raw requests received, whatever their fate.
func (a *Agency) Hits() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hits
}

// Attempts is the number of requests received with Idempotency-Key id.
func (a *Agency) Attempts(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.attempts[id]
}

// Deliveries returns the recorded deliveries, one per Idempotency-Key, in
// the order they were first recorded.
func (a *Agency) Deliveries() []api.Delivery {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]api.Delivery(nil), a.deliveries...)
}

// Effects is 1 if message id was recorded (answered 2xx), 0 otherwise. A
// repeated delivery is answered 2xx again but recorded once.
func (a *Agency) Effects(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.effects[id]
}

// MaxConcurrent is the largest number of requests with Idempotency-Key id
// that were in flight at the same time.
func (a *Agency) MaxConcurrent(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.maxInFl[id]
}

// InFlight is the number of requests with Idempotency-Key id being
// handled now.
func (a *Agency) InFlight(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inflight[id]
}

// Headers returns the headers of the last request with Idempotency-Key id.
func (a *Agency) Headers(id string) http.Header {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.headers[id].Clone()
}

// SetDown makes the agency answer every request with status until SetUp;
// status 0 cuts the connection after reading the request, without answer.
func (a *Agency) SetDown(status int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.down, a.downStatus = true, status
}

// SetUp ends SetDown.
func (a *Agency) SetUp() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.down = false
}

// SetRetryAfter sets the Retry-After header sent while down ("" for none).
func (a *Agency) SetRetryAfter(v string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.retryAfter = v
}

// SetDelay makes the agency wait d after reading a request before it
// answers. The agency commits a delivery after the delay even if the client
// has given up meanwhile, like a real back office would (F-12).
func (a *Agency) SetDelay(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.delay = d
}

// WaitDeliveries waits until at least n deliveries are recorded, polling,
// and fails t after timeout.
func (a *Agency) WaitDeliveries(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := len(a.Deliveries())
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agencytest: %d deliveries after %v, want %d (hits %d)", got, timeout, n, a.Hits())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// state is what one request sees of the agency's settings.
type state struct {
	down       bool
	status     int
	retryAfter string
	delay      time.Duration
}

func (a *Agency) enter(key string, h http.Header) state {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hits++
	a.attempts[key]++
	a.inflight[key]++
	a.maxInFl[key] = max(a.maxInFl[key], a.inflight[key])
	a.headers[key] = h.Clone()
	return state{down: a.down, status: a.downStatus, retryAfter: a.retryAfter, delay: a.delay}
}

func (a *Agency) leave(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inflight[key]--
}

// record commits d once per key.
func (a *Agency) record(d api.Delivery) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.effects[d.ID] == 0 {
		a.effects[d.ID] = 1
		a.deliveries = append(a.deliveries, d)
	}
}

func (a *Agency) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	key := r.Header.Get("Idempotency-Key")
	st := a.enter(key, r.Header)
	defer a.leave(key)
	if err != nil {
		http.Error(w, "unreadable body", http.StatusBadRequest)
		return
	}
	if st.delay > 0 {
		t := time.NewTimer(st.delay)
		select {
		case <-t.C:
		case <-a.closed:
			t.Stop()
		}
	}
	if st.down {
		a.fail(w, st)
		return
	}
	var d api.Delivery
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" ||
		json.Unmarshal(body, &d) != nil || key == "" || d.ID != key {
		http.Error(w, "not a cmx delivery", http.StatusBadRequest)
		return
	}
	a.record(d)
	w.WriteHeader(http.StatusNoContent)
}

func (a *Agency) fail(w http.ResponseWriter, st state) {
	if st.status != 0 {
		if st.retryAfter != "" {
			w.Header().Set("Retry-After", st.retryAfter)
		}
		w.WriteHeader(st.status)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("agencytest: connection cannot be hijacked")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0) // reset, not an orderly close
	}
	conn.Close()
}
