package certstest

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"sync"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/certs"
)

// Now is the fixed clock of every fixture: PKIs are issued at Now, so their
// leaves are valid from Now-1min to Now+1 year.
var Now = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

var (
	mu   sync.Mutex
	pkis = map[string]*certs.PKI{}
)

// NewPKI returns the party's PKI issued at Now, created once per process and
// shared: do not modify it.
func NewPKI(tb testing.TB, party string) *certs.PKI {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()
	if p, ok := pkis[party]; ok {
		return p
	}
	p, err := certs.NewPKI(party, certs.PKIOptions{Now: Now})
	if err != nil {
		tb.Fatalf("certstest: NewPKI(%q): %v", party, err)
	}
	pkis[party] = p
	return p
}

// FreshPKI returns a new, unshared PKI for party issued at Now (e.g. a
// second generation of roots for a rollover test).
func FreshPKI(tb testing.TB, party string) *certs.PKI {
	tb.Helper()
	p, err := certs.NewPKI(party, certs.PKIOptions{Now: Now})
	if err != nil {
		tb.Fatalf("certstest: NewPKI(%q): %v", party, err)
	}
	return p
}

// Bundle returns a bundle pinning the root of NewPKI(tb, party).
func Bundle(tb testing.TB, party string) *certs.Bundle {
	tb.Helper()
	b, err := certs.NewBundle(party, NewPKI(tb, party).Root)
	if err != nil {
		tb.Fatalf("certstest: NewBundle(%q): %v", party, err)
	}
	return b
}

// Leaf issues a new leaf from p's intermediate with a fresh P-256 key. It
// starts from the profile's signing template for p.Party at Now; mutate (if
// not nil) changes the template before issuance. The returned identity's
// Role and Party are what the profile derives, or empty if the leaf fits
// none.
func Leaf(tb testing.TB, p *certs.PKI, mutate func(*x509.Certificate)) *certs.Identity {
	tb.Helper()
	key, err := certs.NewKey()
	if err != nil {
		tb.Fatal(err)
	}
	return LeafWithKey(tb, p, key, mutate)
}

// LeafWithKey is Leaf with a caller-chosen key (e.g. P-224 or RSA-1024).
func LeafWithKey(tb testing.TB, p *certs.PKI, key crypto.Signer, mutate func(*x509.Certificate)) *certs.Identity {
	tb.Helper()
	tmpl, err := certs.LeafTemplate(p.Party, certs.RoleSigning, "", certs.PKIOptions{Now: Now})
	if err != nil {
		tb.Fatal(err)
	}
	if mutate != nil {
		mutate(tmpl)
	}
	return Issue(tb, p.Intermediate, p.InterKey, key, tmpl, p.Intermediate)
}

// Issue signs tmpl for key with parent/parentKey and returns an identity
// whose chain is the new certificate followed by rest.
func Issue(tb testing.TB, parent *x509.Certificate, parentKey crypto.Signer, key crypto.Signer, tmpl *x509.Certificate, rest ...*x509.Certificate) *certs.Identity {
	tb.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		tb.Fatalf("certstest: create certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("certstest: parse certificate: %v", err)
	}
	id := &certs.Identity{Cert: cert, Chain: append([]*x509.Certificate{cert}, rest...), Key: key, KID: certs.KID(cert)}
	if role, err := certs.RoleOf(cert); err == nil {
		id.Role = role
	}
	if party, agency, err := certs.PartyOf(cert); err == nil {
		id.Party, id.Agency = party, agency
	}
	return id
}

// Role returns a mutate function that turns the signing template into the
// profile's template for role (same subject, serial and validity).
func Role(role certs.Role) func(*x509.Certificate) {
	return func(t *x509.Certificate) {
		party, _, _ := certs.PartyOf(t)
		r, err := certs.LeafTemplate(party, role, "", certs.PKIOptions{Now: Now})
		if err != nil {
			panic(err)
		}
		t.KeyUsage, t.ExtKeyUsage, t.Policies = r.KeyUsage, r.ExtKeyUsage, r.Policies
		t.DNSNames, t.IPAddresses = r.DNSNames, r.IPAddresses
	}
}

// X5C returns id's chain as x5c strings (standard base64 DER).
func X5C(id *certs.Identity) []string {
	out := make([]string, len(id.Chain))
	for i, c := range id.Chain {
		out[i] = base64.StdEncoding.EncodeToString(c.Raw)
	}
	return out
}
