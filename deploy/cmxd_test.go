package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/gateway"
	"github.com/cmx-exchange/cmx/gateway/client"
	"github.com/cmx-exchange/cmx/gateway/pair"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// Binaries built once per test process from this repository.
var bins struct {
	once sync.Once
	dir  string
	out  []byte
	err  error
}

// binaries builds cmxd and cmx (as deploy/Dockerfile does) and returns their
// paths. TestMain removes them.
func binaries(t *testing.T) (cmxd, cmx string) {
	t.Helper()
	bins.once.Do(func() {
		if bins.dir, bins.err = os.MkdirTemp("", "cmx-deploy-bin-"); bins.err != nil {
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-o", bins.dir+string(os.PathSeparator), "./cmd/cmxd", "./cmd/cmx")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as deploy/Dockerfile builds them
		bins.out, bins.err = cmd.CombinedOutput()
	})
	if bins.err != nil {
		t.Fatalf("go build ./cmd/cmxd ./cmd/cmx: %v\n%s", bins.err, bins.out)
	}
	return filepath.Join(bins.dir, "cmxd"), filepath.Join(bins.dir, "cmx")
}

// run runs a command and fails the test if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// gatewayProc is one cmxd process running a committed config.
type gatewayProc struct {
	party  string
	bin    string
	config string
	env    []string
	cfg    *gateway.Config
	roots  *x509.CertPool             // our own root: the API's server certificate chains to it
	agents map[string]*http.Transport // agency → HTTP transport with its client certificate
	hooks  map[string]*pair.Agency    // sample webhook agencies
	cmd    *exec.Cmd
	done   chan struct{}
	out    *syncBuffer // this run's output
	prev   string      // output of earlier runs
	url    string
}

// logs is the output of every run so far.
func (g *gatewayProc) logs() string { return g.prev + g.out.String() }

// startGateway runs cmxd with dir/cmxd.yaml (dir holds pki/, peer/ and
// agencies/ as laid out by the test) against natsURL. Only the listen
// address, the NATS URL and password and the webhook URLs are overridden.
func startGateway(t *testing.T, bin, dir, party, natsURL, natsPassword string) *gatewayProc {
	t.Helper()
	g := &gatewayProc{party: party, bin: bin, config: filepath.Join(dir, "cmxd.yaml"),
		agents: map[string]*http.Transport{}, hooks: map[string]*pair.Agency{}}
	cfg := loadConfig(t, g.config)
	g.cfg = cfg
	g.env = append(cleanEnv(), "CMX_LISTEN=127.0.0.1:0", "CMX_NATS_URL="+natsURL, "CMX_NATS_PASSWORD="+natsPassword)
	for i, a := range cfg.Agencies {
		if a.Webhook != "" {
			ag, err := pair.StartAgency()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ag.Close() })
			g.hooks[a.ID] = ag
			g.env = append(g.env, envIndex("CMX_AGENCIES_", i, "_WEBHOOK=")+ag.URL())
		}
	}
	g.roots = certPool(t, filepath.Join(dir, "pki", "bundle.pem"))
	for _, a := range cfg.Agencies {
		g.agents[a.ID] = agencyTransport(t, dir, a.ID, g.roots)
	}
	t.Cleanup(func() {
		for _, tr := range g.agents {
			tr.CloseIdleConnections()
		}
	})
	run(t, bin, "validate", "--config", g.config) // what ExecStartPre does
	g.start(t)
	t.Cleanup(func() { g.stop(t) })
	return g
}

// loadConfig reads and validates a cmxd config as cmxd does.
func loadConfig(t *testing.T, path string) *gateway.Config {
	t.Helper()
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cfg
}

func envIndex(prefix string, i int, suffix string) string {
	return prefix + strconv.Itoa(i) + suffix
}

// cleanEnv is the test's environment without CMX_ variables, which cmxd
// would take as config keys.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CMX_") {
			env = append(env, kv)
		}
	}
	return env
}

func certPool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatalf("%s: no certificates", path)
	}
	return p
}

// agencyTransport presents the agency's client certificate (written by
// "cmx pki agency" into dir/agencies/<agency>) and trusts our own root only.
func agencyTransport(t *testing.T, dir, agency string, roots *x509.CertPool) *http.Transport {
	t.Helper()
	base := filepath.Join(dir, "agencies", agency, "agency-"+agency)
	pair, err := tls.LoadX509KeyPair(base+".pem", base+".key")
	if err != nil {
		t.Fatal(err)
	}
	return &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12,
	}}
}

// client is the API client of one of our agencies.
func (g *gatewayProc) client(agency string) *client.Client {
	tr, ok := g.agents[agency]
	if !ok {
		panic("no agency " + agency)
	}
	return &client.Client{BaseURL: g.url, HTTP: &http.Client{Transport: tr, Timeout: 15 * time.Second}}
}

// start runs the process and waits until its API answers /readyz.
func (g *gatewayProc) start(t *testing.T) {
	t.Helper()
	if g.out != nil {
		g.prev += g.out.String()
	}
	g.out = &syncBuffer{}
	g.cmd = exec.Command(g.bin, "--config", g.config)
	g.cmd.Env, g.cmd.Stdout, g.cmd.Stderr = g.env, g.out, g.out
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	g.done = done
	go func(cmd *exec.Cmd) { _ = cmd.Wait(); close(done) }(g.cmd)
	transporttest.WaitFor(t, 60*time.Second, func() bool {
		select {
		case <-done:
			t.Fatalf("cmxd %s exited: %v\n%s", g.party, g.cmd.ProcessState, g.logs())
		default:
		}
		g.url = httpAddr(g.out.String())
		return g.url != ""
	}, "cmxd "+g.party+" listening")
	g.waitReady(t)
}

// waitReady polls GET /readyz (NATS, streams, keys).
func (g *gatewayProc) waitReady(t *testing.T) {
	t.Helper()
	c := &client.Client{BaseURL: g.url, HTTP: &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: g.roots}, DisableKeepAlives: true}}}
	var last error
	ok := waitUntil(60*time.Second, func() bool {
		last = c.Ready(context.Background())
		return last == nil
	})
	if !ok {
		t.Fatalf("cmxd %s not ready: %v\n%s", g.party, last, g.logs())
	}
}

// httpAddr finds the API address in cmxd's JSON log ("gateway running").
func httpAddr(log string) string {
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var line struct {
			Msg  string `json:"msg"`
			HTTP string `json:"http"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "gateway running" && line.HTTP != "" {
			return "https://" + line.HTTP
		}
	}
	return ""
}

// stop sends SIGTERM (what systemd's KillSignal does) and waits for the
// graceful shutdown; after 30 s it kills the process and fails the test.
func (g *gatewayProc) stop(t *testing.T) {
	t.Helper()
	if g.cmd == nil || g.cmd.Process == nil {
		return
	}
	select {
	case <-g.done:
		return
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
		if !g.cmd.ProcessState.Success() {
			t.Errorf("cmxd %s: graceful stop ended with %v\n%s", g.party, g.cmd.ProcessState, g.logs())
		}
	case <-time.After(30 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.done
		t.Errorf("cmxd %s did not stop within 30s of SIGTERM\n%s", g.party, g.logs())
	}
}

// waitUntil polls cond every 25 ms until it is true or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}
