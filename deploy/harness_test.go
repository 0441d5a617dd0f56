package deploy_test

import (
	"bufio"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// Deployment folders, relative to this package's directory.
const (
	dirUS      = "us"
	dirJP      = "jp"
	dirCluster = "us-cluster"
)

// secretVars are the CMXNATS_* variables that belong in the never-committed
// secret file (/etc/cmx/nats.secret.env), not in nats.env. Each nats.env
// names the ones its config uses in a comment.
var secretVars = []string{
	"CMXNATS_GATEWAY_PASSWORD", "CMXNATS_ROUTE_PASSWORD",
	"CMXNATS_ROUTE_1", "CMXNATS_ROUTE_2", "CMXNATS_ROUTE_3",
}

// copyDeploy copies the committed deployment files (not the test sources,
// not a local trial's pki/) into a fresh temporary directory and returns it.
// The copies are byte-identical: the tests template by environment only.
func copyDeploy(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "pki" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, path), 0o755)
		}
		if strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, path), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy deploy: %v", err)
	}
	return dst
}

// readEnvFile parses a systemd EnvironmentFile of KEY=value lines (values
// optionally in single quotes) into a map.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not KEY=value: %q", path, line)
		}
		env[k] = strings.Trim(v, "'")
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return env
}

// natsEnv is the environment for the configs of dir (a side's folder in a
// copied tree): its nats.env with the install layout moved into dir
// (/etc/cmx/ → dir/, /var/lib/cmx/ → dir/var/), then overrides. An override
// of a variable that nats.env neither sets nor lists as a secret is a test
// bug (or a gap in nats.env) and fails the test.
func natsEnv(t *testing.T, dir string, overrides map[string]string) map[string]string {
	t.Helper()
	env := readEnvFile(t, filepath.Join(dir, "nats.env"))
	for k, v := range env {
		if rest, ok := strings.CutPrefix(v, "/etc/cmx/"); ok {
			env[k] = filepath.Join(dir, rest)
		} else if rest, ok := strings.CutPrefix(v, "/var/lib/cmx/"); ok {
			env[k] = filepath.Join(dir, "var", rest)
		}
	}
	for k, v := range overrides {
		if _, ok := env[k]; !ok && !slices.Contains(secretVars, k) {
			t.Fatalf("%s/nats.env has no %s", dir, k)
		}
		env[k] = v
	}
	return env
}

// exchangePublicFiles does the certificate exchange between the parties:
// each gives the other its root (bundle.pem) and its encryption
// certificate, never a key, into the peer's peer/ folder.
func exchangePublicFiles(t *testing.T, root string) {
	t.Helper()
	for _, p := range [][2]string{{dirUS, dirJP}, {dirJP, dirUS}} {
		for _, name := range []string{certs.FileBundle, certs.FileEncryption} {
			b, err := os.ReadFile(filepath.Join(root, p[0], "pki", name))
			if err != nil {
				t.Fatal(err)
			}
			writeFiles(t, filepath.Join(root, p[1], "peer"), map[string][]byte{name: b})
		}
	}
}

// bootNATS starts JP's server (leafnode listener) and then US's (which
// solicits it) from the configs in root, with the PKI and the exchanged
// files in place, and waits for the leafnode. passwords are the gateway
// users' clear-text passwords; the servers get their bcrypt hashes.
// mutate, if not nil, may change a party's parsed options (border tests).
func bootNATS(t *testing.T, root string, passwords map[string]string, mutate map[string]func(*server.Options)) (us, jp *natsServer) {
	t.Helper()
	jp = startNATSWith(t, "nats-jp", filepath.Join(root, dirJP, "nats.conf"), natsEnv(t, filepath.Join(root, dirJP), map[string]string{
		"CMXNATS_PORT": "-1", "CMXNATS_MONITOR_PORT": "-1", "CMXNATS_LEAF_HOST": "127.0.0.1", "CMXNATS_LEAF_PORT": "-1",
		"CMXNATS_GATEWAY_PASSWORD": bcryptHash(t, passwords["JP"]),
	}), mutate["JP"])
	us = startNATSWith(t, "nats-us", filepath.Join(root, dirUS, "nats.conf"), natsEnv(t, filepath.Join(root, dirUS), map[string]string{
		"CMXNATS_PORT": "-1", "CMXNATS_MONITOR_PORT": "-1", "CMXNATS_LEAF_URL": jp.leafURL(t),
		"CMXNATS_GATEWAY_PASSWORD": bcryptHash(t, passwords["US"]),
	}), mutate["US"])
	waitLeaf(t, 1, us, jp)
	return us, jp
}

// setNATSEnv makes env the only CMXNATS_* variables of the process until the
// test ends, so no value from a previous parse can leak into the next one.
func setNATSEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "CMXNATS_") {
			t.Setenv(k, "") // restores the old value at the end of the test
			os.Unsetenv(k)
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// parseNATS parses a committed config with env, as nats-server would.
func parseNATS(t *testing.T, conf string, env map[string]string) *server.Options {
	t.Helper()
	setNATSEnv(t, env)
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("parse %s: %v", conf, err)
	}
	return opts
}

// natsServer is a nats-server started in-process from a deploy config.
type natsServer struct {
	name   string
	conf   string
	env    map[string]string
	mutate func(*server.Options) // nil, or a deliberate departure from the config (border tests)
	srv    *server.Server
	log    *logRecorder
}

// startNATS parses conf with env and starts the server. It is shut down
// when the test ends.
func startNATS(t *testing.T, name, conf string, env map[string]string) *natsServer {
	t.Helper()
	return startNATSWith(t, name, conf, env, nil)
}

// startNATSWith is startNATS with mutate applied to the parsed options.
func startNATSWith(t *testing.T, name, conf string, env map[string]string, mutate func(*server.Options)) *natsServer {
	t.Helper()
	n := &natsServer{name: name, conf: conf, env: env, mutate: mutate, log: &logRecorder{}}
	n.start(t)
	t.Cleanup(n.shutdown)
	return n
}

func (n *natsServer) start(t *testing.T) {
	t.Helper()
	opts := parseNATS(t, n.conf, n.env)
	opts.NoSigs = true // the test process owns its signals
	if n.mutate != nil {
		n.mutate(opts)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("%s: new server: %v", n.name, err)
	}
	srv.SetLoggerV2(n.log, true, false, false)
	srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		srv.Shutdown()
		t.Fatalf("%s: not ready; log:\n%s", n.name, n.log.dump())
	}
	n.srv = srv
}

func (n *natsServer) shutdown() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
}

// stop shuts the server down and pins its client and leafnode ports in its
// environment, so that start brings it back on the same addresses with the
// same store.
func (n *natsServer) stop(t *testing.T) {
	t.Helper()
	env := cloneEnv(n.env)
	env["CMXNATS_PORT"] = strconv.Itoa(n.srv.Addr().(*net.TCPAddr).Port)
	if _, ok := env["CMXNATS_LEAF_PORT"]; ok {
		env["CMXNATS_LEAF_PORT"] = strconv.Itoa(n.leafPort(t))
	}
	n.shutdown()
	n.env = env
}

// clientURL is nats://127.0.0.1:<port>.
func (n *natsServer) clientURL() string { return n.srv.ClientURL() }

func (n *natsServer) leafPort(t *testing.T) int {
	t.Helper()
	v, err := n.srv.Varz(nil)
	if err != nil || v.LeafNode.Port == 0 {
		t.Fatalf("%s: no leafnode listener: %v", n.name, err)
	}
	return v.LeafNode.Port
}

// leafURL is the URL the peer solicits: tls://127.0.0.1:<leaf port>.
func (n *natsServer) leafURL(t *testing.T) string {
	return "tls://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(n.leafPort(t)))
}

func cloneEnv(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// waitLeaf waits until every server has n leafnode connections.
func waitLeaf(t *testing.T, n int, servers ...*natsServer) {
	t.Helper()
	transporttest.WaitFor(t, 30*time.Second, func() bool {
		for _, s := range servers {
			if s.srv.NumLeafNodes() != n {
				return false
			}
		}
		return true
	}, fmt.Sprintf("%d leafnode connection(s)", n))
}

// logRecorder is a server.Logger that keeps every line.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) add(level, format string, v []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, level+" "+fmt.Sprintf(format, v...))
}

func (l *logRecorder) Noticef(format string, v ...any) { l.add("INF", format, v) }
func (l *logRecorder) Warnf(format string, v ...any)   { l.add("WRN", format, v) }
func (l *logRecorder) Fatalf(format string, v ...any)  { l.add("FTL", format, v) }
func (l *logRecorder) Errorf(format string, v ...any)  { l.add("ERR", format, v) }
func (l *logRecorder) Debugf(format string, v ...any)  { l.add("DBG", format, v) }
func (l *logRecorder) Tracef(format string, v ...any)  { l.add("TRC", format, v) }

// count is the number of lines matching re.
func (l *logRecorder) count(re *regexp.Regexp) int { return len(l.matching(re)) }

// matching returns the lines matching re, oldest first.
func (l *logRecorder) matching(re *regexp.Regexp) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.lines {
		if re.MatchString(s) {
			out = append(out, s)
		}
	}
	return out
}

func (l *logRecorder) dump() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// writePKI writes party's PKI into dir with the files and modes of
// "cmx pki init" (certs.PKI.Files; keys 0600).
func writePKI(t *testing.T, dir, party string) *certs.PKI {
	t.Helper()
	p, err := certs.NewPKI(party, certs.PKIOptions{})
	if err != nil {
		t.Fatal(err)
	}
	files, err := p.Files()
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, files)
	return p
}

func writeFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		mode := os.FileMode(0o644)
		if certs.IsPrivateKeyFile(name) {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, mode); err != nil {
			t.Fatal(err)
		}
	}
}

// bcryptHash is what an operator puts in CMXNATS_GATEWAY_PASSWORD: the
// server then never holds the clear text. MinCost keeps the test fast.
func bcryptHash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}
