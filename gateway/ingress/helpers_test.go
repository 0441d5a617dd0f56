package ingress

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
)

// Tokens of the test agencies (at least MinTokenBytes long).
const (
	tokDOL  = "dol-ilab-token-0123456789abcdef0123456789"
	tokUSTR = "ustr-token-0123456789abcdef0123456789abcd"
	tokOps  = "operator-token-0123456789abcdef0123456789"
	uriDOL  = "urn:cmx:agency:US:DOL-ILAB"
	uriUSTR = "urn:cmx:agency:US:USTR"
)

// natsURL is the embedded JetStream server shared by the package's tests;
// each test gets its own KV bucket.
var (
	natsURL    string
	bucketSeq  atomic.Int64
	observedMu sync.Mutex
	observed   = map[string]map[int]bool{} // route pattern -> statuses answered in any test
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ingress-js-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		fmt.Fprintln(os.Stderr, "nats-server not ready")
		os.Exit(1)
	}
	natsURL = ns.ClientURL()
	code := m.Run()
	ns.Shutdown()
	ns.WaitForShutdown()
	_ = os.RemoveAll(dir)
	if code == 0 {
		code = checkObserved()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// checkObserved fails the package if any test saw a route answer with a
// status that openapi.yaml does not document for it.
func checkObserved() int {
	doc, err := loadOpenAPI()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	observedMu.Lock()
	defer observedMu.Unlock()
	code := 0
	for pattern, statuses := range observed {
		for st := range statuses {
			if !doc.documents(pattern, st) {
				fmt.Fprintf(os.Stderr, "openapi.yaml: %s answered %d in a test but does not document it\n", pattern, st)
				code = 1
			}
		}
	}
	return code
}

func observe(pattern string, status int) {
	if pattern == "" {
		return
	}
	observedMu.Lock()
	defer observedMu.Unlock()
	if observed[pattern] == nil {
		observed[pattern] = map[int]bool{}
	}
	observed[pattern][status] = true
}

// clock is time.Now shifted by an offset that tests can advance.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// lockedBuffer collects the server's logs so tests can inspect them.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// env is one running Server on 127.0.0.1 with a fake Backend and a real
// JetStream KV idempotency table.
type env struct {
	t      *testing.T
	srv    *Server
	be     *fakeBackend
	kv     jetstream.KeyValue
	clock  *clock
	logs   *lockedBuffer
	addr   string
	base   string
	client *http.Client
}

type envOption struct {
	cfg func(*Config)
	tls *tls.Config // serve TLS with this config
	opt []Option
}

func testConfig() Config {
	return Config{
		Party: "US",
		Agencies: []Agency{
			{ID: "DOL-ILAB", Token: tokDOL, CertURI: uriDOL, Send: []string{"labor_enforcement_notice", "non_market_practice_report"}},
			{ID: "USTR", Token: tokUSTR, CertURI: uriUSTR, Send: []string{"non_market_practice_report", "investment_review_best_practice"}},
			{ID: "OPS", Token: tokOps, Admin: true},
		},
	}
}

func newEnv(t *testing.T, eo envOption) *env {
	t.Helper()
	e := &env{t: t, be: newFakeBackend(), clock: &clock{}, logs: &lockedBuffer{}}
	e.kv = newBucket(t)
	cfg := testConfig()
	cfg.Logger = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Now = e.clock.Now
	if eo.cfg != nil {
		eo.cfg(&cfg)
	}
	srv, err := New(cfg, e.be, KVIdem{KV: e.kv}, eo.opt...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv.observe = observe
	e.srv = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	e.base = "http://" + e.addr
	tr := &http.Transport{DisableKeepAlives: false}
	if eo.tls != nil {
		e.base = "https://" + e.addr
	}
	e.client = &http.Client{Timeout: 10 * time.Second, Transport: tr}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln, eo.tls) }()
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return e
}

// newBucket creates a fresh KV bucket on the shared server.
func newBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: fmt.Sprintf("idem_%d", bucketSeq.Add(1)), History: 1, Storage: jetstream.FileStorage,
	})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// reply is a received answer with its body read.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) do(t testing.TB, method, path, token string, body string, hdr ...string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.send(t, req)
}

func (e *env) send(t testing.TB, req *http.Request) reply {
	t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// submit posts a message as the agency with the given token.
func (e *env) submit(t testing.TB, token, body string, hdr ...string) reply {
	t.Helper()
	return e.do(t, http.MethodPost, "/v1/messages", token, body, hdr...)
}

const validBody = `{"type":"labor_enforcement_notice","to":"JP","body":{"title":"notice","n":1}}`

// wantProblem checks that r is a problem+json answer with status and code.
func wantProblem(t *testing.T, r reply, status int, code string) api.Problem {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json", ct)
	}
	var p api.Problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem body %q: %v", r.body, err)
	}
	if p.Type != api.ProblemTypePrefix+code || p.Status != status || p.Title == "" {
		t.Fatalf("problem %+v, want type %s%s status %d", p, api.ProblemTypePrefix, code, status)
	}
	wantCommonHeaders(t, r)
	return p
}

func wantCommonHeaders(t *testing.T, r reply) {
	t.Helper()
	if r.header.Get("Cache-Control") != "no-store" || r.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("missing common headers: %v", r.header)
	}
}

// wantAccepted checks a 202 and returns the message id.
func wantAccepted(t *testing.T, r reply) string {
	t.Helper()
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d, want 202; body %s", r.status, r.body)
	}
	var sr api.SubmitResponse
	if err := json.Unmarshal(r.body, &sr); err != nil || !envelope.ValidID(sr.ID) || sr.Status != api.StatusAccepted {
		t.Fatalf("submit response %s: %v", r.body, err)
	}
	if loc := r.header.Get("Location"); loc != "/v1/messages/"+sr.ID {
		t.Fatalf("Location %q", loc)
	}
	wantCommonHeaders(t, r)
	return sr.ID
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
