package deploy_test

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/gateway/transport"
)

// natsConfig is one nats-server config under deploy/ and its role.
type natsConfig struct {
	path        string // relative to deploy/
	party, peer string
	accepts     bool // leafnode listener (JP); otherwise it solicits (US)
	cluster     bool
}

var natsConfigs = []natsConfig{
	{path: "jp/nats.conf", party: "JP", peer: "US", accepts: true},
	{path: "us/nats.conf", party: "US", peer: "JP"},
	{path: "us-cluster/nats-1.conf", party: "US", peer: "JP", cluster: true},
	{path: "us-cluster/nats-2.conf", party: "US", peer: "JP", cluster: true},
	{path: "us-cluster/nats-3.conf", party: "US", peer: "JP", cluster: true},
}

// TestNATSConfigLint parses every nats-server config under deploy/ with its
// committed nats.env (only the secrets and the PKI's location supplied) and
// checks, on the options as nats-server sees them, the rules of DESIGN §5:
// durability, own JetStream domain, storage limits, loopback-only clients
// and monitoring, the exchange account on the leafnode, the border's TLS
// and permissions, and no system account across it.
func TestNATSConfigLint(t *testing.T) {
	found, err := filepath.Glob("*/nats*.conf")
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, c := range natsConfigs {
		listed = append(listed, c.path)
	}
	slices.Sort(found)
	slices.Sort(listed)
	if !slices.Equal(found, listed) {
		t.Fatalf("nats configs under deploy/ are %q, the lint knows %q: add new ones to natsConfigs", found, listed)
	}
	root := copyDeploy(t)
	names := map[string]bool{}
	for _, c := range natsConfigs {
		t.Run(c.path, func(t *testing.T) {
			opts, peerRoot := parseForLint(t, root, c)
			lintCommon(t, opts, c)
			if c.accepts {
				lintAccepting(t, opts, c, peerRoot)
			} else {
				lintSoliciting(t, opts, c, peerRoot)
			}
			if c.cluster {
				lintCluster(t, opts)
			}
			if names[opts.ServerName] {
				t.Errorf("server_name %q used twice", opts.ServerName)
			}
			names[opts.ServerName] = true
		})
	}
}

// parseForLint lays out a PKI where nats.env says it is installed and
// parses c with nats.env plus the secrets. It returns the options and the
// peer's root certificate.
func parseForLint(t *testing.T, root string, c natsConfig) (*server.Options, *x509.Certificate) {
	t.Helper()
	dir := filepath.Join(root, filepath.Dir(c.path))
	if _, err := os.Stat(filepath.Join(dir, "pki")); err != nil {
		writePKI(t, filepath.Join(dir, "pki"), c.party)
		peer, err := certs.NewPKI(c.peer, certs.PKIOptions{})
		if err != nil {
			t.Fatal(err)
		}
		writeFiles(t, filepath.Join(dir, "peer"), map[string][]byte{certs.FileBundle: certs.EncodeCertificates(peer.Root)})
	}
	secrets := map[string]string{"CMXNATS_GATEWAY_PASSWORD": bcryptHash(t, rand.Text())}
	if c.cluster {
		secrets["CMXNATS_ROUTE_PASSWORD"] = "route-password"
		for i := 1; i <= 3; i++ {
			secrets[fmt.Sprintf("CMXNATS_ROUTE_%d", i)] = fmt.Sprintf("nats://route:route-password@cmx-us-%d:6222", i)
		}
	}
	opts := parseNATS(t, filepath.Join(root, c.path), natsEnv(t, dir, secrets))
	b, err := os.ReadFile(filepath.Join(dir, "peer", certs.FileBundle))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := certs.ParseCertificates(b)
	if err != nil || len(roots) != 1 {
		t.Fatalf("peer bundle: %v", err)
	}
	return opts, roots[0]
}

func lintCommon(t *testing.T, o *server.Options, c natsConfig) {
	t.Helper()
	switch {
	case !o.JetStream:
		t.Error("JetStream is not enabled")
	case !o.SyncAlways:
		t.Error("jetstream.sync_interval is not always: acknowledged writes would not survive power loss")
	case o.JetStreamDomain != strings.ToLower(c.party):
		t.Errorf("JetStream domain %q, want %q", o.JetStreamDomain, strings.ToLower(c.party))
	case o.JetStreamMaxStore <= 0 || o.JetStreamMaxMemory <= 0:
		t.Errorf("storage limits max_file_store=%d max_memory_store=%d, want both set", o.JetStreamMaxStore, o.JetStreamMaxMemory)
	case o.ServerName == "":
		t.Error("no server_name")
	}
	if ip := net.ParseIP(o.Host); ip == nil || !ip.IsLoopback() {
		t.Errorf("clients listen on %q, want loopback only", o.Host)
	}
	if o.HTTPPort <= 0 || o.HTTPSPort != 0 || (o.HTTPHost != "" && o.HTTPHost != o.Host) {
		t.Errorf("monitoring http %s:%d https %d, want http on the loopback client host only", o.HTTPHost, o.HTTPPort, o.HTTPSPort)
	}
	if o.MaxPayload != transport.DefaultMaxPayload {
		t.Errorf("max_payload %d, want cmx's %d", o.MaxPayload, transport.DefaultMaxPayload)
	}
	if o.LameDuckDuration <= 0 {
		t.Error("no lame_duck_duration")
	}
	lintAccounts(t, o, c)
}

// lintAccounts: only XCHG carries users, every user is bound to its
// connection types, and nothing is exposed through the system account.
func lintAccounts(t *testing.T, o *server.Options, c natsConfig) {
	t.Helper()
	if o.NoAuthUser != "" || (o.SystemAccount != "" && o.SystemAccount != server.DEFAULT_SYSTEM_ACCOUNT) {
		t.Errorf("no_auth_user %q, system_account %q", o.NoAuthUser, o.SystemAccount)
	}
	if len(o.Nkeys) != 0 || o.Username != "" || o.Authorization != "" {
		t.Error("authentication outside the XCHG users")
	}
	for _, u := range o.Users {
		if u.Account == nil || u.Account.Name != transport.AccountExchange {
			t.Errorf("user %q is not in account %s", u.Username, transport.AccountExchange)
		}
		if len(u.AllowedConnectionTypes) != 1 {
			t.Errorf("user %q may connect as %v, want exactly one connection type", u.Username, u.AllowedConnectionTypes)
		}
		if _, leaf := u.AllowedConnectionTypes["LEAFNODE"]; leaf != (u.Username == "urn:cmx:party:"+c.peer+":gateway") {
			t.Errorf("user %q: leafnode connections only for the peer's gateway identity", u.Username)
		}
	}
}

func lintAccepting(t *testing.T, o *server.Options, c natsConfig, peerRoot *x509.Certificate) {
	t.Helper()
	l := o.LeafNode
	if l.Port <= 0 || len(l.Remotes) != 0 {
		t.Fatalf("leafnode listener port %d, %d remotes; want a listener only", l.Port, len(l.Remotes))
	}
	if l.Username != "" || l.Nkey != "" || len(l.Users) != 0 || l.Account != "" {
		t.Error("leafnodes.authorization set: it would bypass the border user's permissions")
	}
	lintTLS(t, l.TLSConfig, l.TLSHandshakeFirst, peerRoot, true)
	if !l.TLSMap {
		t.Error("leafnodes.tls.verify_and_map is off: the certificate is not the credential")
	}
	want := transport.BorderPermissions(c.party, c.peer)
	var leafUsers int
	for _, u := range o.Users {
		if _, leaf := u.AllowedConnectionTypes["LEAFNODE"]; !leaf {
			continue
		}
		leafUsers++
		if u.Password != "" {
			t.Errorf("border user %q has a password: a secret shared across the border", u.Username)
		}
		if !reflect.DeepEqual(u.Permissions, want) {
			t.Errorf("border permissions %s, want transport.BorderPermissions %s", permString(u.Permissions), permString(want))
		}
	}
	if leafUsers != 1 {
		t.Errorf("%d leafnode users, want 1", leafUsers)
	}
}

func permString(p *server.Permissions) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprintf("publish %+v subscribe %+v", *p.Publish, *p.Subscribe)
}

func lintSoliciting(t *testing.T, o *server.Options, c natsConfig, peerRoot *x509.Certificate) {
	t.Helper()
	if o.LeafNode.Port != 0 || len(o.LeafNode.Remotes) != 1 {
		t.Fatalf("leafnode listener port %d, %d remotes; want exactly one remote", o.LeafNode.Port, len(o.LeafNode.Remotes))
	}
	r := o.LeafNode.Remotes[0]
	if r.LocalAccount != transport.AccountExchange {
		t.Errorf("remote bound to account %q, want %s (never $SYS or the global account)", r.LocalAccount, transport.AccountExchange)
	}
	for _, u := range r.URLs {
		if u.Scheme != "tls" || u.User != nil {
			t.Errorf("remote URL %s: want tls:// without credentials", u.Redacted())
		}
	}
	if r.Credentials != "" || r.Nkey != "" {
		t.Error("remote presents credentials: the certificate is the identity")
	}
	if !r.IgnoreDiscoveredServers {
		t.Error("remote follows leafnode URLs the peer advertises: want ignore_discovered_servers, the border endpoint only")
	}
	lintTLS(t, r.TLSConfig, r.TLSHandshakeFirst, peerRoot, false)
	if !sameStrings(r.DenyImports, transport.DenyImports(c.party, c.peer)) {
		t.Errorf("deny_imports %q, want transport.DenyImports %q", r.DenyImports, transport.DenyImports(c.party, c.peer))
	}
	if !sameStrings(r.DenyExports, transport.DenyExports(c.party, c.peer)) {
		t.Errorf("deny_exports %q, want transport.DenyExports %q", r.DenyExports, transport.DenyExports(c.party, c.peer))
	}
}

// lintTLS: TLS 1.3, handshake first, our certificate, the peer's root and
// nothing else as the anchor (client CAs on the listener, root CAs on the
// remote), and a client certificate required on the listener.
func lintTLS(t *testing.T, c *tls.Config, handshakeFirst bool, peerRoot *x509.Certificate, listener bool) {
	t.Helper()
	if c == nil {
		t.Fatal("no TLS on the leafnode")
	}
	pinned := x509.NewCertPool()
	pinned.AddCert(peerRoot)
	anchors, what := c.RootCAs, "ca_file (root CAs)"
	if listener {
		anchors, what = c.ClientCAs, "ca_file (client CAs)"
		if c.ClientAuth != tls.RequireAndVerifyClientCert {
			t.Errorf("client auth %v, want RequireAndVerifyClientCert (verify)", c.ClientAuth)
		}
	}
	if anchors == nil || !anchors.Equal(pinned) {
		t.Errorf("%s is not exactly the peer's root", what)
	}
	if c.MinVersion < tls.VersionTLS13 || !handshakeFirst || len(c.Certificates) == 0 {
		t.Errorf("min version %#x, handshake_first %v, %d certificates; want TLS 1.3, true, ours", c.MinVersion, handshakeFirst, len(c.Certificates))
	}
}

func lintCluster(t *testing.T, o *server.Options) {
	t.Helper()
	if o.Cluster.Name != "cmx-us" || o.Cluster.Port <= 0 || len(o.Routes) != 3 {
		t.Errorf("cluster %q port %d with %d routes, want cmx-us with 3", o.Cluster.Name, o.Cluster.Port, len(o.Routes))
	}
	if o.Cluster.Username == "" || o.Cluster.Password == "" {
		t.Error("routes accept anyone: no cluster authorization")
	}
}

func sameStrings(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

var envRef = regexp.MustCompile(`\$(CMXNATS_[A-Z0-9_]+)`)

// TestNATSEnvFiles: every $CMXNATS_ variable a config uses is set by the
// nats.env beside it (secrets: named in its comments, for the secret file),
// every variable nats.env sets is used, and its values follow the install
// layout.
func TestNATSEnvFiles(t *testing.T) {
	for _, dir := range []string{dirUS, dirJP, dirCluster} {
		t.Run(dir, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, "nats.env"))
			if err != nil {
				t.Fatal(err)
			}
			env := readEnvFile(t, filepath.Join(dir, "nats.env"))
			used := map[string]bool{}
			files, _ := filepath.Glob(filepath.Join(dir, "*.conf"))
			incs, _ := filepath.Glob(filepath.Join(dir, "*.inc"))
			for _, f := range append(files, incs...) {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range envRef.FindAllStringSubmatch(string(b), -1) {
					used[m[1]] = true
				}
			}
			for v := range used {
				_, set := env[v]
				secret := slices.Contains(secretVars, v) && strings.Contains(string(raw), v)
				if !set && !secret {
					t.Errorf("%s uses $%s but nats.env neither sets it nor names it as a secret", dir, v)
				}
				if set && slices.Contains(secretVars, v) {
					t.Errorf("nats.env sets the secret %s: it belongs in the secret file", v)
				}
			}
			for k, v := range env {
				if !used[k] {
					t.Errorf("nats.env sets %s, which no config uses", k)
				}
				if strings.HasPrefix(v, "/") && !strings.HasPrefix(v, "/etc/cmx/") && !strings.HasPrefix(v, "/var/lib/cmx/") {
					t.Errorf("%s=%s is outside the install layout (/etc/cmx, /var/lib/cmx)", k, v)
				}
			}
		})
	}
}
