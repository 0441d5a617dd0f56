package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway"
	"go.yaml.in/yaml/v3"
)

func TestPKIInitInspectAgency(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "us")
	var out, errOut bytes.Buffer
	if err := runPKI(ctx, []string{"init", "--party", "US", "--out", dir, "--hosts", "gw.us.example,10.0.0.1"}, &out, &errOut); err != nil {
		t.Fatalf("init: %v\n%s", err, errOut.String())
	}
	assertMode(t, dir, 0o700)
	for _, name := range []string{
		"root.pem", "root.key", "intermediate.pem", "intermediate.key", "signing.pem", "signing.key",
		"encryption.pem", "encryption.key", "tls-server.pem", "tls-server.key", "tls-client.pem",
		"tls-client.key", "bundle.pem", "ca-chain.pem",
	} {
		want := os.FileMode(0o644)
		if strings.HasSuffix(name, ".key") {
			want = 0o600
		}
		assertMode(t, filepath.Join(dir, name), want)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 14 {
		t.Errorf("init wrote %d files, want 14 (no temporary files left)", len(entries))
	}

	// A second init must refuse without --force and leave the files alone.
	before, _ := os.ReadFile(filepath.Join(dir, "signing.pem"))
	err = runPKI(ctx, []string{"init", "--party", "US", "--out", dir}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second init: err = %v, want refusal", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "signing.pem"))
	if !bytes.Equal(before, after) {
		t.Fatal("refused init changed signing.pem")
	}
	if err := runPKI(ctx, []string{"init", "--party", "US", "--out", dir, "--force", "--hosts", "gw.us.example,10.0.0.1"}, &out, &errOut); err != nil {
		t.Fatalf("init --force: %v", err)
	}
	assertMode(t, filepath.Join(dir, "root.key"), 0o600)

	out.Reset()
	if err := runPKI(ctx, []string{"inspect", filepath.Join(dir, "signing.pem"), filepath.Join(dir, "tls-server.pem")}, &out, &errOut); err != nil {
		t.Fatalf("inspect: %v", err)
	}
	for _, want := range []string{
		"role signing, party US", "cmx signing", "urn:cmx:party:US:gateway", "digitalSignature",
		"role tls-server, party US", "serverAuth", "gw.us.example", "10.0.0.1", "CA certificate (no leaf role)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out.String())
		}
	}

	agencyDir := filepath.Join(t.TempDir(), "agency")
	if err := runPKI(ctx, []string{"agency", "--ca", dir, "--agency", "DOL-ILAB", "--out", agencyDir}, &out, &errOut); err != nil {
		t.Fatalf("agency: %v", err)
	}
	assertMode(t, filepath.Join(agencyDir, "agency-DOL-ILAB.key"), 0o600)
	chainPEM, _ := os.ReadFile(filepath.Join(agencyDir, "agency-DOL-ILAB.pem"))
	keyPEM, _ := os.ReadFile(filepath.Join(agencyDir, "agency-DOL-ILAB.key"))
	id, err := certs.ParseIdentity(chainPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if id.Role != certs.RoleTLSClient || id.Party != "US" || id.Agency != "DOL-ILAB" {
		t.Errorf("agency identity = %s %s %s", id.Role, id.Party, id.Agency)
	}
}

func TestPKIUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "no subcommand", args: nil, want: "missing subcommand"},
		{name: "unknown subcommand", args: []string{"rotate"}, want: "unknown subcommand"},
		{name: "init without party", args: []string{"init", "--out", "x"}, want: "required"},
		{name: "init bad party", args: []string{"init", "--party", "usa", "--out", "x"}, want: "two upper-case letters"},
		{name: "inspect nothing", args: []string{"inspect"}, want: "no files"},
		{name: "inspect missing file", args: []string{"inspect", "does-not-exist.pem"}, want: "does-not-exist.pem"},
		{name: "agency bad name", args: []string{"agency", "--ca", "x", "--agency", "../x", "--out", "y"}, want: "pki agency"},
		{name: "issue without role", args: []string{"issue", "--ca", "x", "--out", "y"}, want: "required"},
		{name: "issue agency role", args: []string{"issue", "--ca", "x", "--out", "y", "--role", "agency"}, want: "cmx pki agency"},
		{name: "issue name with a path", args: []string{"issue", "--ca", "x", "--out", "y", "--role", "signing", "--name", "../signing"}, want: "--name"},
		{name: "issue hosts for signing", args: []string{"issue", "--ca", "x", "--out", "y", "--role", "signing", "--hosts", "a"}, want: "tls-server only"},
		{name: "issue zero validity", args: []string{"issue", "--ca", "x", "--out", "y", "--role", "signing", "--validity", "0s"}, want: "positive"},
		{name: "issue missing ca", args: []string{"issue", "--ca", "does-not-exist", "--out", "y", "--role", "signing"}, want: "root.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := runPKI(context.Background(), tt.args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %v, want %v", filepath.Base(path), got, want)
	}
}

// initPKI runs "cmx pki init" for party into a new directory, removes
// root.key (it lives offline) and returns the directory and the PKI as loaded.
func initPKI(t *testing.T, party string) (string, *certs.PKI) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), strings.ToLower(party))
	var out, errOut bytes.Buffer
	if err := runPKI(context.Background(), []string{"init", "--party", party, "--out", dir, "--hosts", "gw.example,10.0.0.1"}, &out, &errOut); err != nil {
		t.Fatalf("init: %v\n%s", err, errOut.String())
	}
	if err := os.Remove(filepath.Join(dir, certs.FileRootKey)); err != nil {
		t.Fatal(err)
	}
	p, err := loadPKIDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p.RootKey != nil {
		t.Fatal("root key still loaded")
	}
	return dir, p
}

// readIdentity parses dir/name.pem and dir/name.key.
func readIdentity(t *testing.T, dir, name string) *certs.Identity {
	t.Helper()
	chainPEM, err := os.ReadFile(filepath.Join(dir, name+".pem"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := certs.ParseIdentity(chainPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestPKIIssue issues each role from a PKI whose root key is offline: the
// new leaf has the role's profile under the party's own root, a new KID, a
// key file of mode 0600, and the output names what was issued.
func TestPKIIssue(t *testing.T) {
	dir, p := initPKI(t, "US")
	bundle, err := certs.NewBundle("US", p.Root)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string // after --ca and --out
		role     certs.Role
		old      *certs.Identity
		file     string // "" = the default <role>-<YYYYMMDD>
		validity time.Duration
		hosts    []string // tls-server
		output   []string // beside the kid and the file names
	}{
		{name: "encryption", args: []string{"--role", "encryption"}, role: certs.RoleEncryption, old: p.Encryption, validity: 365 * 24 * time.Hour,
			output: []string{"peer.encryption", "retired_at:", "outage_budget"}},
		{name: "signing", args: []string{"--role", "signing", "--validity", "720h"}, role: certs.RoleSigning, old: p.Signing, validity: 720 * time.Hour,
			output: []string{"nothing goes to the peer", "signing.pem/.key"}},
		{name: "tls-server_keeps_hosts", args: []string{"--role", "tls-server"}, role: certs.RoleTLSServer, old: p.TLSServer, validity: 365 * 24 * time.Hour,
			hosts: []string{"gw.example", "10.0.0.1"}, output: []string{"hosts:      gw.example, 10.0.0.1", "systemctl reload cmx-nats"}},
		{name: "tls-server_new_hosts", args: []string{"--role", "tls-server", "--hosts", "gw2.example, 192.0.2.1", "--name", "api-2"}, role: certs.RoleTLSServer,
			old: p.TLSServer, file: "api-2", validity: 365 * 24 * time.Hour, hosts: []string{"gw2.example", "192.0.2.1"}},
		{name: "tls-client", args: []string{"--role", "tls-client", "--name", "leaf-client.v2"}, role: certs.RoleTLSClient, old: p.TLSClient,
			file: "leaf-client.v2", validity: 365 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "new")
			var stdout, stderr bytes.Buffer
			before := time.Now().UTC()
			if err := runPKI(context.Background(), append([]string{"issue", "--ca", dir, "--out", out}, tt.args...), &stdout, &stderr); err != nil {
				t.Fatalf("issue: %v\n%s", err, stderr.String())
			}
			file := tt.file
			if file == "" {
				file = onlyBaseName(t, out)
				if want, alt := string(tt.role)+"-"+before.Format("20060102"), string(tt.role)+"-"+time.Now().UTC().Format("20060102"); file != want && file != alt {
					t.Fatalf("default name %q, want %q", file, want)
				}
			}
			assertMode(t, filepath.Join(out, file+".key"), 0o600)
			assertMode(t, filepath.Join(out, file+".pem"), 0o644)
			id := readIdentity(t, out, file)
			if err := bundle.Verify(id.Chain, certs.VerifyOptions{Role: tt.role, Now: time.Now()}); err != nil {
				t.Fatalf("new %s leaf does not verify against the party's bundle: %v", tt.role, err)
			}
			switch {
			case id.Role != tt.role || id.Party != "US" || id.Agency != "":
				t.Errorf("identity = %s %s %q", id.Role, id.Party, id.Agency)
			case id.KID == tt.old.KID:
				t.Errorf("new kid equals the old one: %s", id.KID)
			case len(id.Chain) != 2 || !id.Chain[1].Equal(p.Intermediate):
				t.Errorf("chain of %d certificates, want leaf + intermediate", len(id.Chain))
			case id.Cert.NotAfter.Sub(id.Cert.NotBefore) != tt.validity+time.Minute:
				t.Errorf("valid %v..%v, want %v (+1 min backdate)", id.Cert.NotBefore, id.Cert.NotAfter, tt.validity)
			}
			if tt.hosts != nil && !slices.Equal(hostsOf(id.Cert), tt.hosts) {
				t.Errorf("hosts %v, want %v", hostsOf(id.Cert), tt.hosts)
			}
			for _, want := range append(tt.output, id.KID, file+".pem", file+".key", id.Cert.NotAfter.UTC().Format(time.RFC3339)) {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, stdout.String())
				}
			}
		})
	}
}

// onlyBaseName returns the base name of the one .pem/.key pair in dir.
func onlyBaseName(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("%d files written, want a .pem and a .key", len(entries))
	}
	return strings.TrimSuffix(entries[0].Name(), filepath.Ext(entries[0].Name()))
}

// TestPKIIssueEncryptionYAML: the lines printed for cmxd.yaml are exactly
// the list entry of the new key, indented as in deploy/*/cmxd.yaml.
func TestPKIIssueEncryptionYAML(t *testing.T) {
	dir, _ := initPKI(t, "JP")
	var stdout, stderr bytes.Buffer
	if err := runPKI(context.Background(), []string{"issue", "--ca", dir, "--out", dir, "--role", "encryption", "--name", "encryption-2027"}, &stdout, &stderr); err != nil {
		t.Fatalf("issue: %v\n%s", err, stderr.String())
	}
	entry := "\n  - cert: pki/encryption-2027.pem\n    key: pki/encryption-2027.key\n"
	_, retired, ok := strings.Cut(stdout.String(), "\n    retired_at: <")
	if !strings.Contains(stdout.String(), entry) || !ok {
		t.Fatalf("output lacks the YAML entry %q or the retired_at line:\n%s", entry, stdout.String())
	}
	if _, rest, _ := strings.Cut(retired, ">"); !strings.HasPrefix(rest, "\n") {
		t.Fatalf("retired_at placeholder is not the rest of its line: %q", retired)
	}
	// The operator's edit of cmxd.yaml: the printed entry appended, the
	// printed retired_at line on the old entry with the switch time.
	doc := "encryption:\n  - cert: pki/encryption.pem\n    key: pki/encryption.key\n" +
		"    retired_at: 2027-01-02T03:04:05Z" + entry
	var cfg gateway.Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("edited cmxd.yaml does not decode: %v\n%s", err, doc)
	}
	want := []gateway.KeyFiles{
		{Cert: "pki/encryption.pem", Key: "pki/encryption.key", RetiredAt: time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)},
		{Cert: "pki/encryption-2027.pem", Key: "pki/encryption-2027.key"},
	}
	if !slices.EqualFunc(cfg.Encryption, want, func(a, b gateway.KeyFiles) bool {
		return a.Cert == b.Cert && a.Key == b.Key && a.RetiredAt.Equal(b.RetiredAt)
	}) {
		t.Errorf("encryption list %+v, want %+v", cfg.Encryption, want)
	}
	// Issued into the CA directory itself, the old key is untouched and the
	// directory still loads.
	if _, err := loadPKIDir(dir); err != nil {
		t.Fatalf("CA directory no longer loads: %v", err)
	}
}

// TestPKIIssueRefusesOverwrite: a second key under the same name is refused
// and leaves both files as they were; --force replaces them.
func TestPKIIssueRefusesOverwrite(t *testing.T) {
	dir, _ := initPKI(t, "US")
	out := t.TempDir()
	args := []string{"issue", "--ca", dir, "--out", out, "--role", "encryption", "--name", "enc"}
	var stdout, stderr bytes.Buffer
	if err := runPKI(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("issue: %v", err)
	}
	first := readIdentity(t, out, "enc")
	err := runPKI(context.Background(), args, &stdout, &stderr)
	if !errors.Is(err, errWouldOverwrite) || !strings.Contains(err.Error(), "--name") {
		t.Fatalf("second issue: err = %v, want a refusal naming --name", err)
	}
	if again := readIdentity(t, out, "enc"); again.KID != first.KID || !again.Key.(*ecdsa.PrivateKey).Equal(first.Key) {
		t.Fatal("refused issue changed enc.pem or enc.key")
	}
	if err := runPKI(context.Background(), append(args, "--force"), &stdout, &stderr); err != nil {
		t.Fatalf("issue --force: %v", err)
	}
	if forced := readIdentity(t, out, "enc"); forced.KID == first.KID {
		t.Fatal("--force did not replace enc.pem")
	}
	assertMode(t, filepath.Join(out, "enc.key"), 0o600)
}

// TestPKIIssue_C14_rotation_retired_key_decrypts follows deploy/README.md's
// rotation with the issued files: our gateway lists the old key (retired at
// the switch) and the new one; an envelope the peer sealed to the old key
// before the switch still opens within the outage budget, and not after it;
// the peer's envelopes after the switch go to the new key.
func TestPKIIssue_C14_rotation_retired_key_decrypts(t *testing.T) {
	dir, us := initPKI(t, "US")
	var stdout, stderr bytes.Buffer
	if err := runPKI(context.Background(), []string{"issue", "--ca", dir, "--out", dir, "--role", "encryption", "--name", "encryption-next"}, &stdout, &stderr); err != nil {
		t.Fatalf("issue: %v", err)
	}
	oldKey, newKey := readDecryptionKey(t, dir, "encryption"), readDecryptionKey(t, dir, "encryption-next")
	jp, err := certs.NewPKI("JP", certs.PKIOptions{})
	if err != nil {
		t.Fatal(err)
	}
	usBundle, _ := certs.NewBundle("US", us.Root)
	jpBundle, _ := certs.NewBundle("JP", jp.Root)

	const budget = 7 * 24 * time.Hour
	sealedAt := time.Now().Truncate(time.Second)
	switchAt := sealedAt.Add(time.Hour)
	inFlight := sealToPeer(t, jp, usBundle, filepath.Join(dir, "encryption.pem"), sealedAt, budget)
	afterSwitch := sealToPeer(t, jp, usBundle, filepath.Join(dir, "encryption-next.pem"), switchAt.Add(time.Minute), budget)

	oldKey.RetiredAt = switchAt
	rotated, err := certs.NewKeySet(budget, oldKey, newKey)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.Current().KID != newKey.KID {
		t.Fatalf("current key %s, want the issued %s", rotated.Current().KID, newKey.KID)
	}
	newOnly, err := certs.NewKeySet(budget, newKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		keys *certs.KeySet
		env  []byte
		at   time.Time
		want error // nil = opens
	}{
		{name: "sealed_to_old_before_switch", keys: rotated, env: inFlight, at: switchAt.Add(time.Minute)},
		{name: "sealed_to_old_late_in_budget", keys: rotated, env: inFlight, at: sealedAt.Add(budget - time.Minute)},
		{name: "sealed_to_old_after_budget", keys: rotated, env: inFlight, at: switchAt.Add(budget + time.Second), want: certs.ErrKeyRetired},
		{name: "sealed_to_new_after_switch", keys: rotated, env: afterSwitch, at: switchAt.Add(time.Hour)},
		{name: "old_entry_removed_too_early", keys: newOnly, env: inFlight, at: switchAt.Add(time.Minute), want: certs.ErrUnknownKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &envelope.Opener{Self: "US", Peer: jpBundle, Keys: tt.keys}
			op, err := o.Open(tt.env, tt.at)
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("Open: %v", err)
			case tt.want == nil && op.Claims.Issuer != "JP":
				t.Fatalf("opened claims of %q", op.Claims.Issuer)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("Open: err = %v, want %v", err, tt.want)
			case tt.want != nil && envelope.ReasonOf(err) != envelope.ReasonDecryptFailed:
				t.Fatalf("reason %s, want %s", envelope.ReasonOf(err), envelope.ReasonDecryptFailed)
			}
		})
	}
}

func readDecryptionKey(t *testing.T, dir, name string) *certs.DecryptionKey {
	t.Helper()
	chainPEM, _ := os.ReadFile(filepath.Join(dir, name+".pem"))
	keyPEM, _ := os.ReadFile(filepath.Join(dir, name+".key"))
	dk, err := certs.ParseDecryptionKey(chainPEM, keyPEM)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return dk
}

// sealToPeer seals a JP → US message at iat, as the peer does with the
// encryption certificate we sent it: it checks the file against our root
// (its peer.trust) first. exp = iat + budget, as the gateway sets it.
func sealToPeer(t *testing.T, jp *certs.PKI, usBundle *certs.Bundle, certFile string, iat time.Time, budget time.Duration) []byte {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := certs.ParseCertificates(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := usBundle.Verify(chain, certs.VerifyOptions{Role: certs.RoleEncryption, Now: iat}); err != nil {
		t.Fatalf("%s does not verify as our encryption certificate: %v", filepath.Base(certFile), err)
	}
	c := &envelope.Claims{
		Issuer: "JP", Audience: "US", ID: envelope.NewID(), IssuedAt: iat.Unix(), Expiry: iat.Add(budget).Unix(),
		Type: envelope.LaborEnforcementNotice, Schema: envelope.LaborEnforcementNotice.Schema(),
		Sender: "JP:MHLW", Recipient: "US:DOL-ILAB", Body: json.RawMessage(`{"title":"rotation"}`),
	}
	sealed, err := envelope.Seal(c, jp.Signing, chain[0])
	if err != nil {
		t.Fatal(err)
	}
	return sealed.Envelope
}

// TestPKIIssueCAErrors: what the CA directory must hold.
func TestPKIIssueCAErrors(t *testing.T) {
	dir, _ := initPKI(t, "US")
	tests := []struct {
		name   string
		remove []string
		args   []string
		want   string
	}{
		{name: "no_intermediate_key", remove: []string{certs.FileInterKey}, args: []string{"--role", "signing"}, want: "intermediate.key missing"},
		{name: "tls_server_without_hosts_or_current", remove: []string{certs.FileTLSServer, certs.FileTLSServerKey}, args: []string{"--role", "tls-server"}, want: "--hosts is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := t.TempDir()
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if slices.Contains(tt.remove, e.Name()) {
					continue
				}
				b, err := os.ReadFile(filepath.Join(dir, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(ca, e.Name()), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			out := filepath.Join(t.TempDir(), "new")
			var stdout, stderr bytes.Buffer
			err = runPKI(context.Background(), append([]string{"issue", "--ca", ca, "--out", out}, tt.args...), &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a failed issue created %s (%v)", out, err)
			}
		})
	}
}
