package deploy_test

import (
	"bytes"
	"debug/elf"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway"
)

// TestCmxdConfigs: each committed gateway config is valid as cmxd reads
// it, uses the external NATS on loopback, holds no secret, names its files
// relative to its own directory, authenticates agencies by certificate, and
// has a receiving agency for every message type.
func TestCmxdConfigs(t *testing.T) {
	for _, c := range []struct {
		dir, party, peer string
		replicas         int
	}{
		{dirUS, "US", "JP", 1},
		{dirJP, "JP", "US", 1},
		{dirCluster, "US", "JP", 3},
	} {
		t.Run(c.dir, func(t *testing.T) {
			cfg := loadConfig(t, filepath.Join(c.dir, "cmxd.yaml"))
			if cfg.Party != c.party || cfg.Peer.Party != c.peer || cfg.NATS.Replicas != c.replicas {
				t.Errorf("party %s peer %s replicas %d, want %s %s %d", cfg.Party, cfg.Peer.Party, cfg.NATS.Replicas, c.party, c.peer, c.replicas)
			}
			if !strings.HasPrefix(cfg.NATS.URL, "nats://127.0.0.1:") || cfg.NATS.User != "gw" || cfg.NATS.Password != "" {
				t.Errorf("nats url %q user %q: want the local server as gw, the password from CMX_NATS_PASSWORD only", cfg.NATS.URL, cfg.NATS.User)
			}
			if cfg.NATS.Embedded.StoreDir != "" || cfg.NATS.Embedded.LeafListen != "" || cfg.NATS.Embedded.LeafRemote != "" {
				t.Error("embedded NATS settings in a config for the external server")
			}
			files := []string{cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.ClientCA, cfg.Signing.Cert, cfg.Signing.Key, cfg.Peer.Trust, cfg.Peer.Encryption}
			for _, e := range cfg.Encryption {
				files = append(files, e.Cert, e.Key)
			}
			for _, f := range files {
				if f == "" || filepath.IsAbs(f) || strings.Contains(f, "..") {
					t.Errorf("file %q: want a path inside the config's directory (the install root /etc/cmx)", f)
				}
			}
			lintAgencies(t, cfg.Party, cfg.Agencies)
		})
	}
}

func lintAgencies(t *testing.T, party string, agencies []gateway.AgencyConfig) {
	t.Helper()
	receives := map[string]bool{}
	admins := 0
	for _, a := range agencies {
		if a.Token != "" || a.CertURI != certs.AgencyURI(party, a.ID) {
			t.Errorf("agency %s: token %t, cert_uri %q; want only %s", a.ID, a.Token != "", a.CertURI, certs.AgencyURI(party, a.ID))
		}
		for _, typ := range a.Receive {
			receives[typ] = true
		}
		if a.Admin {
			admins++
		}
	}
	for _, typ := range envelope.Types {
		if !receives[string(typ)] {
			t.Errorf("no agency receives %s", typ)
		}
	}
	if admins == 0 {
		t.Error("no operators' (admin) agency for /v1/peers")
	}
}

// unitRules are directives every unit must carry (the hardening
// list, modelled on nats-server's hardened unit).
var unitRules = []string{
	"ProtectSystem=strict", "ProtectHome=true", "PrivateTmp=true", "NoNewPrivileges=true",
	"CapabilityBoundingSet=", "RestrictAddressFamilies=AF_INET AF_INET6", "MemoryDenyWriteExecute=true",
	"SystemCallFilter=@system-service", "Restart=on-failure", "Group=cmx",
}

// TestSystemdUnits checks the hardening directives and, when systemd's
// tools are installed, runs systemd-analyze verify and an offline security
// review (exposure at most 2.0) on the units and systemd-sysusers on the
// users file.
func TestSystemdUnits(t *testing.T) {
	units := map[string][]string{
		"cmx-nats.service": {"ExecStart=/usr/local/bin/nats-server --config /etc/cmx/nats.conf", "KillSignal=SIGUSR2",
			"ReadWritePaths=/var/lib/cmx/nats", "StateDirectory=cmx/nats", "EnvironmentFile=/etc/cmx/nats.env",
			"EnvironmentFile=/etc/cmx/nats.secret.env", "User=cmx-nats"},
		"cmxd.service": {"ExecStart=/usr/local/bin/cmxd --config /etc/cmx/cmxd.yaml", "KillSignal=SIGTERM",
			"EnvironmentFile=/etc/cmx/cmxd.secret.env", "User=cmxd"},
	}
	for name, extra := range units {
		b, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for _, want := range append(slices.Clone(unitRules), extra...) {
			if !slices.Contains(lines, want) {
				t.Errorf("%s: no line %q", name, want)
			}
		}
		for _, want := range []string{"LimitNOFILE=", "TimeoutStopSec="} {
			if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, want) && len(l) > len(want) }) {
				t.Errorf("%s: no %s", name, want)
			}
		}
	}
	if stop := unitSeconds(t, "cmx-nats.service", "TimeoutStopSec"); stop <= 40 {
		t.Errorf("cmx-nats.service TimeoutStopSec=%d: must exceed lame_duck_duration 30s + grace 10s", stop)
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd): the units were checked by text only, not verified")
	}
	analyzeUnits(t, slices.Sorted(maps.Keys(units)))
}

func unitSeconds(t *testing.T, unit, key string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("systemd", unit))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + key + `=(\d+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s: no %s=<seconds>", unit, key)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// analyzeUnits runs systemd-analyze on copies of the units whose
// /usr/local/bin/ is replaced by a directory of stand-in executables:
// verify insists that ExecStart= programs exist, and this machine has
// neither the install layout nor root to create it.
func analyzeUnits(t *testing.T, units []string) {
	t.Helper()
	dir := t.TempDir()
	for _, prog := range []string{"cmxd", "nats-server"} {
		if err := os.WriteFile(filepath.Join(dir, prog), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var paths []string
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, u)
		paths = append(paths, p)
		if err := os.WriteFile(p, bytes.ReplaceAll(b, []byte("/usr/local/bin/"), []byte(dir+"/")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("systemd-analyze", append([]string{"verify"}, paths...)...).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, p := range paths {
		out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--threshold=20", p).CombinedOutput()
		if err != nil {
			t.Errorf("systemd-analyze security %s: %v\n%s", filepath.Base(p), err, lastLines(out, 3))
		} else {
			t.Logf("%s: %s", filepath.Base(p), lastLines(out, 1))
		}
	}
	if _, err := exec.LookPath("systemd-sysusers"); err == nil {
		root := t.TempDir()
		if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		conf, err := filepath.Abs(filepath.Join("systemd", "cmx.sysusers.conf"))
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("systemd-sysusers", "--root="+root, "--dry-run", conf).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("cmx-nats")) || !bytes.Contains(out, []byte("cmxd")) {
			t.Errorf("systemd-sysusers --dry-run: %v\n%s", err, out)
		}
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestContainerFiles checks deploy/Dockerfile and deploy/compose.yaml by
// reading them (there is no container engine here to run them) and that
// the binaries the Dockerfile's build command makes are static.
func TestContainerFiles(t *testing.T) {
	df, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	froms := regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllSubmatch(df, -1)
	if len(froms) < 2 {
		t.Fatal("Dockerfile is not multi-stage")
	}
	if final := string(froms[len(froms)-1][1]); !strings.Contains(final, "distroless/static") && final != "scratch" {
		t.Errorf("final stage FROM %s, want distroless static or scratch", final)
	}
	if m := regexp.MustCompile(`(?m)^USER (\S+)`).FindAllSubmatch(df, -1); len(m) == 0 || strings.HasPrefix(string(m[len(m)-1][1]), "0") || strings.HasPrefix(string(m[len(m)-1][1]), "root") {
		t.Error("the image does not end with a non-root USER")
	}
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/cmxd", "./cmd/cmx", "github.com/nats-io/nats-server/v2"} {
		if !bytes.Contains(df, []byte(want)) {
			t.Errorf("Dockerfile does not mention %s", want)
		}
	}
	if ign, err := os.ReadFile("Dockerfile.dockerignore"); err != nil || !bytes.Contains(ign, []byte("deploy/*/pki")) {
		t.Errorf("Dockerfile.dockerignore must keep deploy/*/pki out of the build context (%v)", err)
	}
	lintCompose(t)
	cmxd, _ := binaries(t) // built with CGO_ENABLED=0, as in the Dockerfile
	if f, err := elf.Open(cmxd); err != nil {
		t.Error(err)
	} else {
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("cmxd built with CGO_ENABLED=0 has an ELF interpreter: not static")
			}
		}
	}
}

type composeFile struct {
	Services map[string]struct {
		Entrypoint  []string          `yaml:"entrypoint"`
		Command     []string          `yaml:"command"`
		NetworkMode string            `yaml:"network_mode"`
		DependsOn   []string          `yaml:"depends_on"`
		EnvFile     []string          `yaml:"env_file"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		User        string            `yaml:"user"`
		ReadOnly    bool              `yaml:"read_only"`
		CapDrop     []string          `yaml:"cap_drop"`
	} `yaml:"services"`
}

// lintCompose: the four services, each cmxd in its NATS server's network
// namespace, every bind mount read-only and present, and of the trial PKI
// only files a side may hold: its own certificates and gateway keys and
// the peer's public files, never a CA key.
func lintCompose(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(b, &cf); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	names := slices.Sorted(maps.Keys(cf.Services))
	if want := []string{"cmxd-jp", "cmxd-us", "nats-jp", "nats-us"}; !slices.Equal(names, want) {
		t.Fatalf("services %q, want %q", names, want)
	}
	for name, s := range cf.Services {
		side := name[len(name)-2:]
		if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") {
			t.Errorf("%s: want read_only and cap_drop ALL", name)
		}
		if strings.HasPrefix(name, "cmxd-") && (s.NetworkMode != "service:nats-"+side || !slices.Contains(s.DependsOn, "nats-"+side)) {
			t.Errorf("%s: network_mode %q depends_on %q, want its NATS server's namespace", name, s.NetworkMode, s.DependsOn)
		}
		if strings.HasPrefix(name, "nats-") && (!slices.Contains(s.Entrypoint, "/usr/local/bin/nats-server") || !slices.Contains(s.Command, "/etc/cmx/nats.conf")) {
			t.Errorf("%s: entrypoint %q command %q, want nats-server with /etc/cmx/nats.conf", name, s.Entrypoint, s.Command)
		}
		for _, v := range s.Volumes {
			lintMount(t, name, side, v)
		}
	}
}

func lintMount(t *testing.T, service, side, v string) {
	t.Helper()
	src, rest, _ := strings.Cut(v, ":")
	if !strings.HasPrefix(src, "./") {
		return // a named volume
	}
	if !strings.HasSuffix(rest, ":ro") {
		t.Errorf("%s: bind mount %s is writable", service, v)
	}
	dir, name := filepath.Split(strings.TrimPrefix(src, "./"))
	if !strings.HasSuffix(dir, "/pki/") {
		if _, err := os.Stat(src); err != nil {
			t.Errorf("%s mounts %s: %v", service, src, err)
		}
		return
	}
	public := []string{certs.FileBundle, certs.FileEncryption}
	own := []string{certs.FileBundle, certs.FileSigning, certs.FileSigningKey, certs.FileEncryption, certs.FileEncryptKey,
		certs.FileTLSServer, certs.FileTLSServerKey, certs.FileTLSClient, certs.FileTLSClientKey}
	switch ownSide := strings.TrimSuffix(dir, "/pki/") == side; {
	case ownSide && !slices.Contains(own, name):
		t.Errorf("%s mounts %s: not a file a running gateway needs (CA keys stay offline)", service, src)
	case !ownSide && !slices.Contains(public, name):
		t.Errorf("%s mounts the peer's %s: only bundle.pem and encryption.pem are exchanged", service, src)
	}
}

// TestMakefileDeployPKI: "make deploy-pki" runs cmx pki init for both
// parties into deploy/*/pki, which git ignores.
func TestMakefileDeployPKI(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	out, err := exec.Command("make", "-C", "..", "-n", "deploy-pki").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n deploy-pki: %v\n%s", err, out)
	}
	for _, want := range []string{"go run ./cmd/cmx pki init --party US --out deploy/us/pki", "go run ./cmd/cmx pki init --party JP --out deploy/jp/pki"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("make deploy-pki does not run %q:\n%s", want, out)
		}
	}
	if help, err := exec.Command("make", "-C", "..", "--no-print-directory", "help").CombinedOutput(); err != nil || !bytes.Contains(help, []byte("deploy-pki")) {
		t.Errorf("make help does not list deploy-pki: %v\n%s", err, help)
	}
	if exec.Command("git", "rev-parse", "--is-inside-work-tree").Run() == nil {
		for _, p := range []string{"us/pki/root.key", "jp/pki/secret.env"} {
			ign := exec.Command("git", "check-ignore", "-q", "--no-index", p)
			ign.Env = append(os.Environ(), "GIT_OPTIONAL_LOCKS=0")
			if err := ign.Run(); err != nil {
				t.Errorf("git does not ignore deploy/%s: %v", p, err)
			}
		}
	}
}
