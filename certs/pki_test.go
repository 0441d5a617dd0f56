package certs_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/certs/certstest"
)

func TestNewPKIProfile(t *testing.T) {
	p := certstest.NewPKI(t, "US")
	now := certstest.Now

	checkCA(t, p.Root, "CN=cmx US Root CA,O=cmx US", 1)
	checkCA(t, p.Intermediate, "CN=cmx US Intermediate CA,O=cmx US", 0)
	if !p.Intermediate.MaxPathLenZero {
		t.Error("intermediate: MaxPathLenZero not set")
	}
	if err := p.Root.CheckSignatureFrom(p.Root); err != nil {
		t.Errorf("root not self-signed: %v", err)
	}
	if err := p.Intermediate.CheckSignatureFrom(p.Root); err != nil {
		t.Errorf("intermediate not signed by root: %v", err)
	}
	if !p.Root.NotAfter.Equal(now.Add(10*365*24*time.Hour)) || !p.Intermediate.NotAfter.Equal(now.Add(5*365*24*time.Hour)) {
		t.Errorf("CA validity: root until %v, intermediate until %v", p.Root.NotAfter, p.Intermediate.NotAfter)
	}

	tests := []struct {
		name   string
		id     *certs.Identity
		role   certs.Role
		cn     string
		ku     x509.KeyUsage
		eku    []x509.ExtKeyUsage
		policy []x509.OID
	}{
		{name: "signing", id: p.Signing, role: certs.RoleSigning, cn: "cmx US gateway signing", ku: x509.KeyUsageDigitalSignature, policy: []x509.OID{certs.OIDSigningPolicy}},
		{name: "encryption", id: p.Encryption, role: certs.RoleEncryption, cn: "cmx US gateway encryption", ku: x509.KeyUsageKeyAgreement, policy: []x509.OID{certs.OIDEncryptionPolicy}},
		{name: "tls-server", id: p.TLSServer, role: certs.RoleTLSServer, cn: "localhost", ku: x509.KeyUsageDigitalSignature, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		{name: "tls-client", id: p.TLSClient, role: certs.RoleTLSClient, cn: "cmx US gateway tls-client", ku: x509.KeyUsageDigitalSignature, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	}
	serials := map[string]bool{p.Root.SerialNumber.String(): true, p.Intermediate.SerialNumber.String(): true}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.id.Cert
			switch {
			case tt.id.Role != tt.role || tt.id.Party != "US" || tt.id.Agency != "":
				t.Errorf("identity = %s %s %q", tt.id.Role, tt.id.Party, tt.id.Agency)
			case c.Subject.CommonName != tt.cn || !slices.Equal(c.Subject.Organization, []string{"cmx US"}):
				t.Errorf("subject = %s", c.Subject)
			case c.IsCA || !c.BasicConstraintsValid:
				t.Error("leaf basic constraints wrong")
			case c.KeyUsage != tt.ku || !slices.Equal(c.ExtKeyUsage, tt.eku):
				t.Errorf("KU %#x EKU %v", c.KeyUsage, c.ExtKeyUsage)
			case !slices.EqualFunc(c.Policies, tt.policy, x509.OID.Equal):
				t.Errorf("policies %v", c.Policies)
			case len(c.URIs) != 1 || c.URIs[0].String() != certs.PartyURI("US"):
				t.Errorf("URIs %v", c.URIs)
			case !c.NotBefore.Equal(now.Add(-time.Minute)) || !c.NotAfter.Equal(now.Add(365*24*time.Hour)):
				t.Errorf("validity %v .. %v", c.NotBefore, c.NotAfter)
			case c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 || serials[c.SerialNumber.String()]:
				t.Errorf("serial %v", c.SerialNumber)
			case len(tt.id.Chain) != 2 || tt.id.Chain[0] != c || !tt.id.Chain[1].Equal(p.Intermediate):
				t.Error("chain is not leaf + intermediate")
			case tt.id.KID != certs.KID(c) || len(tt.id.KID) != 43:
				t.Errorf("KID %q", tt.id.KID)
			case c.CheckSignatureFrom(p.Intermediate) != nil:
				t.Error("leaf not signed by the intermediate")
			}
			pub, ok := c.PublicKey.(*ecdsa.PublicKey)
			if !ok || pub.Curve != elliptic.P256() {
				t.Errorf("leaf key %T, want P-256", c.PublicKey)
			}
			serials[c.SerialNumber.String()] = true
		})
	}
	if !slices.Equal(p.TLSServer.Cert.DNSNames, []string{"localhost"}) || len(p.TLSServer.Cert.IPAddresses) != 2 {
		t.Errorf("TLS server SANs: %v %v", p.TLSServer.Cert.DNSNames, p.TLSServer.Cert.IPAddresses)
	}
}

func checkCA(t *testing.T, c *x509.Certificate, subject string, pathLen int) {
	t.Helper()
	if c.Subject.String() != subject || !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != pathLen ||
		c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign || len(c.ExtKeyUsage) != 0 {
		t.Errorf("CA %s: IsCA %v MaxPathLen %d KU %#x", c.Subject, c.IsCA, c.MaxPathLen, c.KeyUsage)
	}
}

func TestNewPKIOptions(t *testing.T) {
	now := certstest.Now
	p, err := certs.NewPKI("JP", certs.PKIOptions{
		Now: now, RootValidity: 48 * time.Hour, InterValidity: 72 * time.Hour, LeafValidity: 24 * time.Hour,
		Hosts: []string{"gw.jp.example", "[2001:db8::1]", "192.0.2.7"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Intermediate.NotAfter.Equal(p.Root.NotAfter) {
		t.Errorf("intermediate outlives the root: %v > %v", p.Intermediate.NotAfter, p.Root.NotAfter)
	}
	if !p.Signing.Cert.NotAfter.Equal(now.Add(24 * time.Hour)) {
		t.Errorf("leaf NotAfter %v", p.Signing.Cert.NotAfter)
	}
	s := p.TLSServer.Cert
	if !slices.Equal(s.DNSNames, []string{"gw.jp.example"}) || len(s.IPAddresses) != 2 ||
		!s.IPAddresses[0].Equal(net.ParseIP("2001:db8::1")) || s.Subject.CommonName != "gw.jp.example" {
		t.Errorf("TLS server SANs: %v %v CN %q", s.DNSNames, s.IPAddresses, s.Subject.CommonName)
	}
	long, err := p.IssueEncryption(certs.PKIOptions{Now: now, LeafValidity: 100 * 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !long.Cert.NotAfter.Equal(p.Intermediate.NotAfter) {
		t.Errorf("leaf outlives its issuer: %v", long.Cert.NotAfter)
	}
	if long.Role != certs.RoleEncryption || long.KID == p.Encryption.KID {
		t.Errorf("IssueEncryption: role %s, same kid %v", long.Role, long.KID == p.Encryption.KID)
	}
}

func TestNewPKIErrors(t *testing.T) {
	tests := []struct {
		name  string
		party string
		opts  certs.PKIOptions
	}{
		{name: "lower_case_party", party: "us"},
		{name: "three_letters", party: "USA"},
		{name: "empty_party", party: ""},
		{name: "non_ascii_party", party: "ÜS"},
		{name: "negative_validity", party: "US", opts: certs.PKIOptions{LeafValidity: -time.Hour}},
		{name: "bad_host", party: "US", opts: certs.PKIOptions{Hosts: []string{"a b"}}},
		{name: "empty_host", party: "US", opts: certs.PKIOptions{Hosts: []string{""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p, err := certs.NewPKI(tt.party, tt.opts); err == nil {
				t.Fatalf("NewPKI = %v, want error", p.Party)
			}
		})
	}
	p := certstest.NewPKI(t, "US")
	for _, name := range []string{"", "../x", "a:b", "a b", strings.Repeat("A", 65), "É"} {
		if _, err := p.IssueAgencyClient(name, certs.PKIOptions{Now: certstest.Now}); err == nil {
			t.Errorf("IssueAgencyClient(%q) succeeded", name)
		}
	}
}

func TestFilesLoadPKIRoundTrip(t *testing.T) {
	p := certstest.NewPKI(t, "US")
	files, err := p.Files()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"bundle.pem", "ca-chain.pem", "encryption.key", "encryption.pem", "intermediate.key", "intermediate.pem",
		"root.key", "root.pem", "signing.key", "signing.pem", "tls-client.key", "tls-client.pem", "tls-server.key", "tls-server.pem",
	}
	if got := slices.Sorted(maps.Keys(files)); !slices.Equal(got, want) {
		t.Fatalf("Files names = %v", got)
	}
	for name, data := range files {
		isKey := strings.HasSuffix(name, ".key")
		if certs.IsPrivateKeyFile(name) != isKey || bytes.Contains(data, []byte("PRIVATE KEY")) != isKey {
			t.Errorf("%s: IsPrivateKeyFile or content disagree", name)
		}
	}
	if !bytes.Equal(files["bundle.pem"], files["root.pem"]) {
		t.Error("bundle.pem differs from root.pem")
	}
	caChain, err := certs.ParseCertificates(files["ca-chain.pem"])
	if err != nil || len(caChain) != 2 || !caChain[0].Equal(p.Intermediate) || !caChain[1].Equal(p.Root) {
		t.Errorf("ca-chain.pem is not intermediate + root (%v)", err)
	}

	q, err := certs.LoadPKI(files)
	if err != nil {
		t.Fatal(err)
	}
	if q.Party != "US" || !q.Root.Equal(p.Root) || !q.Intermediate.Equal(p.Intermediate) {
		t.Fatal("CA certificates differ after the round trip")
	}
	for _, pair := range [][2]*certs.Identity{{p.Signing, q.Signing}, {p.Encryption, q.Encryption}, {p.TLSServer, q.TLSServer}, {p.TLSClient, q.TLSClient}} {
		a, b := pair[0], pair[1]
		if b == nil || a.KID != b.KID || a.Role != b.Role || a.Party != b.Party || len(b.Chain) != 2 ||
			!a.Key.Public().(*ecdsa.PublicKey).Equal(b.Key.Public()) {
			t.Errorf("%s identity differs after the round trip", a.Role)
		}
	}
	// The loaded PKI can issue more, and what it issues verifies.
	agency, err := q.IssueAgencyClient("DOL-ILAB", certs.PKIOptions{Now: certstest.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := certstest.Bundle(t, "US").Verify(agency.Chain, certs.VerifyOptions{Role: certs.RoleTLSClient, Now: certstest.Now}); err != nil {
		t.Fatalf("agency certificate from the loaded PKI: %v", err)
	}
	if agency.Agency != "DOL-ILAB" || agency.Cert.URIs[0].String() != certs.AgencyURI("US", "DOL-ILAB") {
		t.Errorf("agency identity %q %v", agency.Agency, agency.Cert.URIs)
	}
}

func TestLoadPKIErrors(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	jp := certstest.NewPKI(t, "JP")
	usFiles, _ := us.Files()
	jpFiles, _ := jp.Files()
	with := func(edit func(map[string][]byte)) map[string][]byte {
		m := maps.Clone(usFiles)
		edit(m)
		return m
	}
	tests := []struct {
		name  string
		files map[string][]byte
		want  error  // nil = any error
		ok    bool   // loads fine
		check string // substring of the error
	}{
		{name: "offline_root_key", files: with(func(m map[string][]byte) { delete(m, "root.key") }), ok: true},
		{name: "only_the_ca", files: with(func(m map[string][]byte) {
			for _, n := range []string{"signing", "encryption", "tls-server", "tls-client"} {
				delete(m, n+".pem")
				delete(m, n+".key")
			}
		}), ok: true},
		{name: "no_intermediate_key", files: with(func(m map[string][]byte) { delete(m, "intermediate.key") }), check: "intermediate.key"},
		{name: "no_root", files: with(func(m map[string][]byte) { delete(m, "root.pem") }), want: certs.ErrMalformed},
		{name: "swapped_root_key", files: with(func(m map[string][]byte) { m["root.key"] = jpFiles["root.key"] }), want: certs.ErrKeyMismatch},
		{name: "intermediate_of_other_party", files: with(func(m map[string][]byte) {
			m["intermediate.pem"], m["intermediate.key"] = jpFiles["intermediate.pem"], jpFiles["intermediate.key"]
		}), check: "not signed by"},
		{name: "signing_file_holds_tls_cert", files: with(func(m map[string][]byte) {
			m["signing.pem"], m["signing.key"] = m["tls-server.pem"], m["tls-server.key"]
		}), check: "want signing"},
		{name: "leaf_key_of_other_leaf", files: with(func(m map[string][]byte) { m["signing.key"] = m["encryption.key"] }), want: certs.ErrKeyMismatch},
		{name: "leaf_without_key", files: with(func(m map[string][]byte) { delete(m, "signing.key") }), want: certs.ErrMalformed},
		{name: "leaf_of_other_party", files: with(func(m map[string][]byte) {
			m["signing.pem"], m["signing.key"] = jpFiles["signing.pem"], jpFiles["signing.key"]
		}), check: "of JP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := certs.LoadPKI(tt.files)
			switch {
			case tt.ok && err != nil:
				t.Fatalf("LoadPKI: %v", err)
			case tt.ok:
			case err == nil:
				t.Fatal("LoadPKI succeeded, want error")
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("err = %v, want %v", err, tt.want)
			case tt.check != "" && !strings.Contains(err.Error(), tt.check):
				t.Fatalf("err = %v, want it to mention %q", err, tt.check)
			}
		})
	}
}

// TestPKIIssue: Issue renews any gateway leaf from the intermediate alone
// (the root key offline), with the profile Verify expects and a new KID.
func TestPKIIssue(t *testing.T) {
	full := certstest.NewPKI(t, "US")
	offline := *full
	offline.RootKey = nil
	bundle := certstest.Bundle(t, "US")
	at := certstest.Now.Add(24 * time.Hour)
	tests := []struct {
		name  string
		role  certs.Role
		old   *certs.Identity
		hosts []string
	}{
		{name: "signing", role: certs.RoleSigning, old: full.Signing},
		{name: "encryption", role: certs.RoleEncryption, old: full.Encryption},
		{name: "tls-server", role: certs.RoleTLSServer, old: full.TLSServer, hosts: []string{"gw.us.example", "192.0.2.9"}},
		{name: "tls-client", role: certs.RoleTLSClient, old: full.TLSClient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := offline.Issue(tt.role, certs.PKIOptions{Now: at, LeafValidity: 90 * 24 * time.Hour, Hosts: tt.hosts})
			if err != nil {
				t.Fatal(err)
			}
			if err := bundle.Verify(id.Chain, certs.VerifyOptions{Role: tt.role, Now: at}); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			switch {
			case id.Role != tt.role || id.Party != "US" || id.Agency != "":
				t.Errorf("identity = %s %s %q", id.Role, id.Party, id.Agency)
			case id.KID == tt.old.KID || id.KID != certs.KID(id.Cert):
				t.Errorf("kid %s, old %s", id.KID, tt.old.KID)
			case len(id.Chain) != 2 || id.Chain[1] != full.Intermediate:
				t.Errorf("chain of %d, want leaf + intermediate", len(id.Chain))
			case !id.Cert.NotAfter.Equal(at.Add(90 * 24 * time.Hour)):
				t.Errorf("NotAfter %v", id.Cert.NotAfter)
			}
			if role, err := certs.RoleOf(id.Cert); err != nil || role != tt.role {
				t.Errorf("RoleOf = %s, %v", role, err)
			}
		})
	}
	srv, err := offline.Issue(certs.RoleTLSServer, certs.PKIOptions{Now: at, Hosts: []string{"gw.us.example", "192.0.2.9"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(srv.Cert.DNSNames, []string{"gw.us.example"}) || len(srv.Cert.IPAddresses) != 1 || srv.Cert.Subject.CommonName != "gw.us.example" {
		t.Errorf("tls-server SANs %v %v CN %q", srv.Cert.DNSNames, srv.Cert.IPAddresses, srv.Cert.Subject.CommonName)
	}
}

func TestPKIIssueErrors(t *testing.T) {
	full := certstest.NewPKI(t, "US")
	noInterKey := *full
	noInterKey.InterKey = nil
	tests := []struct {
		name  string
		p     *certs.PKI
		role  certs.Role
		opts  certs.PKIOptions
		check string
	}{
		{name: "unknown_role", p: full, role: "admin", check: "unknown role"},
		{name: "agency_role_name", p: full, role: "", check: "unknown role"},
		{name: "no_intermediate_key", p: &noInterKey, role: certs.RoleEncryption, check: "no intermediate CA key"},
		{name: "nil_pki", p: nil, role: certs.RoleSigning, check: "no intermediate CA key"},
		{name: "negative_validity", p: full, role: certs.RoleSigning, opts: certs.PKIOptions{LeafValidity: -time.Hour}, check: "negative validity"},
		{name: "bad_host", p: full, role: certs.RoleTLSServer, opts: certs.PKIOptions{Hosts: []string{"bad host"}}, check: "neither an IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := tt.p.Issue(tt.role, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.check) {
				t.Fatalf("Issue = %v, %v; want an error mentioning %q", id, err, tt.check)
			}
		})
	}
}
