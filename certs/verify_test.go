package certs_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/certs/certstest"
)

// The receiving gateway in these tests is JP: it pins the US roots and
// verifies chains the US gateway presents.
func TestVerify(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	jp := certstest.NewPKI(t, "JP")
	kr := certstest.NewPKI(t, "KR")
	peer := certstest.Bundle(t, "US")
	now := certstest.Now
	leaf := func(mutate func(*x509.Certificate)) []*x509.Certificate {
		return certstest.Leaf(t, us, mutate).Chain
	}
	agency, err := us.IssueAgencyClient("DOL-ILAB", certs.PKIOptions{Now: now})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		chain     []*x509.Certificate
		role      certs.Role
		now       time.Time // zero = certstest.Now
		signedAt  time.Time
		leeway    time.Duration
		want      error
		wantCheck string
	}{
		{name: "valid_signing", chain: us.Signing.Chain, role: certs.RoleSigning},
		{name: "valid_encryption", chain: us.Encryption.Chain, role: certs.RoleEncryption},
		{name: "valid_tls_server", chain: us.TLSServer.Chain, role: certs.RoleTLSServer},
		{name: "valid_tls_client", chain: us.TLSClient.Chain, role: certs.RoleTLSClient},
		{name: "valid_agency_client", chain: agency.Chain, role: certs.RoleTLSClient},
		{name: "valid_fixture_leaf", chain: leaf(nil), role: certs.RoleSigning},
		{name: "valid_with_root_in_chain", chain: append(leaf(nil), us.Root), role: certs.RoleSigning},
		{name: "valid_p384_leaf", chain: certstest.LeafWithKey(t, us, mustECKey(t, elliptic.P384()), nil).Chain, role: certs.RoleSigning},

		{name: "C-01_chain_to_third_party_root", chain: kr.Signing.Chain, role: certs.RoleSigning, want: certs.ErrUntrusted, wantCheck: certs.CheckPath},
		{name: "C-01_chain_to_our_own_root", chain: jp.Signing.Chain, role: certs.RoleSigning, want: certs.ErrUntrusted, wantCheck: certs.CheckPath},
		{name: "C-01_leaf_without_intermediate", chain: us.Signing.Chain[:1], role: certs.RoleSigning, want: certs.ErrUntrusted, wantCheck: certs.CheckPath},
		{name: "C-01_our_agency_client", chain: mustAgency(t, jp).Chain, role: certs.RoleTLSClient, want: certs.ErrUntrusted},

		{name: "C-03_no_digital_signature", chain: leaf(setKU(x509.KeyUsageKeyEncipherment)), role: certs.RoleSigning, want: certs.ErrKeyUsage, wantCheck: certs.CheckKU},
		{name: "C-03_extra_key_usage", chain: leaf(setKU(x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment)), role: certs.RoleSigning, want: certs.ErrKeyUsage, wantCheck: certs.CheckKU},
		{name: "C-03_no_key_usage", chain: leaf(setKU(0)), role: certs.RoleSigning, want: certs.ErrKeyUsage, wantCheck: certs.CheckKU},
		{name: "C-03_leaf_is_ca", chain: leaf(func(c *x509.Certificate) { c.IsCA = true }), role: certs.RoleSigning, want: certs.ErrKeyUsage, wantCheck: certs.CheckCA},
		{name: "C-03_encryption_leaf_with_signature_usage", chain: leaf(func(c *x509.Certificate) {
			certstest.Role(certs.RoleEncryption)(c)
			c.KeyUsage |= x509.KeyUsageDigitalSignature
		}), role: certs.RoleEncryption, want: certs.ErrKeyUsage, wantCheck: certs.CheckKU},

		{name: "C-04_tls_server_cert_as_signer", chain: us.TLSServer.Chain, role: certs.RoleSigning, want: certs.ErrKeyUsage, wantCheck: certs.CheckEKU},
		{name: "C-04_tls_client_cert_as_signer", chain: us.TLSClient.Chain, role: certs.RoleSigning, want: certs.ErrKeyUsage, wantCheck: certs.CheckEKU},
		{name: "C-04_signer_with_server_auth_eku", chain: leaf(setEKU(x509.ExtKeyUsageServerAuth)), role: certs.RoleSigning, want: certs.ErrKeyUsage, wantCheck: certs.CheckEKU},
		{name: "C-04_signer_with_any_eku", chain: leaf(setEKU(x509.ExtKeyUsageAny)), role: certs.RoleSigning, want: certs.ErrKeyUsage, wantCheck: certs.CheckEKU},
		{name: "C-04_encryption_cert_as_signer", chain: us.Encryption.Chain, role: certs.RoleSigning, want: certs.ErrKeyUsage, wantCheck: certs.CheckKU},
		{name: "C-04_signer_as_encryption", chain: us.Signing.Chain, role: certs.RoleEncryption, want: certs.ErrKeyUsage, wantCheck: certs.CheckKU},
		{name: "C-04_signer_as_tls_server", chain: us.Signing.Chain, role: certs.RoleTLSServer, want: certs.ErrKeyUsage, wantCheck: certs.CheckEKU},
		{name: "C-04_tls_client_as_tls_server", chain: us.TLSClient.Chain, role: certs.RoleTLSServer, want: certs.ErrKeyUsage, wantCheck: certs.CheckEKU},

		{name: "C-05_signer_without_policy", chain: leaf(setPolicies()), role: certs.RoleSigning, want: certs.ErrPolicy, wantCheck: certs.CheckPolicy},
		{name: "C-05_signer_with_other_policy", chain: leaf(setPolicies(mustOID(t, "1.2.3.4"))), role: certs.RoleSigning, want: certs.ErrPolicy},
		{name: "C-05_signer_with_encryption_policy", chain: leaf(setPolicies(certs.OIDEncryptionPolicy)), role: certs.RoleSigning, want: certs.ErrPolicy},
		{name: "C-05_encryption_without_policy", chain: leaf(func(c *x509.Certificate) {
			certstest.Role(certs.RoleEncryption)(c)
			c.Policies = nil
		}), role: certs.RoleEncryption, want: certs.ErrPolicy},
		{name: "C-05_tls_server_with_signing_policy", chain: leaf(func(c *x509.Certificate) {
			certstest.Role(certs.RoleTLSServer)(c)
			c.Policies = []x509.OID{certs.OIDSigningPolicy}
		}), role: certs.RoleTLSServer, want: certs.ErrPolicy},

		{name: "C-06_expired_at_now", chain: us.Signing.Chain, role: certs.RoleSigning, now: us.Signing.Cert.NotAfter.Add(time.Hour), want: certs.ErrExpired, wantCheck: certs.CheckValidity},
		{name: "C-06_expired_within_leeway", chain: us.Signing.Chain, role: certs.RoleSigning, now: us.Signing.Cert.NotAfter.Add(time.Minute)},
		{name: "C-06_expired_now_signed_while_valid", chain: us.Signing.Chain, role: certs.RoleSigning, now: us.Signing.Cert.NotAfter.Add(time.Hour), signedAt: now, want: certs.ErrExpired},
		{name: "C-06_expired_at_signed_at", chain: us.Signing.Chain, role: certs.RoleSigning, now: now, signedAt: us.Signing.Cert.NotAfter.Add(time.Hour), want: certs.ErrExpired},
		{name: "C-06_intermediate_expired", chain: leaf(func(c *x509.Certificate) { c.NotAfter = us.Intermediate.NotAfter.Add(48 * time.Hour) }),
			role: certs.RoleSigning, now: us.Intermediate.NotAfter.Add(24 * time.Hour), want: certs.ErrExpired},
		{name: "C-06_leeway_capped_at_max_clock_skew", chain: us.Signing.Chain, role: certs.RoleSigning, now: us.Signing.Cert.NotAfter.Add(10 * time.Minute), leeway: time.Hour, want: certs.ErrExpired},

		{name: "C-07_not_yet_valid", chain: us.Signing.Chain, role: certs.RoleSigning, now: now.Add(-time.Hour), want: certs.ErrNotYetValid, wantCheck: certs.CheckValidity},
		{name: "C-07_not_yet_valid_within_leeway", chain: us.Signing.Chain, role: certs.RoleSigning, now: now.Add(-2 * time.Minute)},
		{name: "C-07_not_yet_valid_no_leeway", chain: us.Signing.Chain, role: certs.RoleSigning, now: now.Add(-2 * time.Minute), leeway: -1, want: certs.ErrNotYetValid},
		{name: "C-07_signed_before_issue", chain: us.Signing.Chain, role: certs.RoleSigning, signedAt: now.Add(-time.Hour), want: certs.ErrNotYetValid},
		{name: "C-07_leaf_valid_before_intermediate", chain: leaf(func(c *x509.Certificate) { c.NotBefore = now.Add(-48 * time.Hour) }),
			role: certs.RoleSigning, now: now.Add(-24 * time.Hour), want: certs.ErrNotYetValid},

		{name: "C-09_intermediate_issues_a_ca", chain: subCAChain(t, us), role: certs.RoleSigning, want: certs.ErrUntrusted, wantCheck: certs.CheckPath},

		{name: "C-10_other_party_uri", chain: leaf(setURIs(certs.PartyURI("JP"))), role: certs.RoleSigning, want: certs.ErrParty, wantCheck: certs.CheckParty},
		{name: "C-10_agency_uri_on_signer", chain: leaf(setURIs(certs.AgencyURI("US", "DOL-ILAB"))), role: certs.RoleSigning, want: certs.ErrParty},
		{name: "C-10_no_uri", chain: leaf(setURIs()), role: certs.RoleSigning, want: certs.ErrParty},
		{name: "C-10_two_uris", chain: leaf(setURIs(certs.PartyURI("US"), certs.PartyURI("JP"))), role: certs.RoleSigning, want: certs.ErrParty},
		{name: "C-10_foreign_uri", chain: leaf(setURIs("https://gateway.us.example/")), role: certs.RoleSigning, want: certs.ErrParty},
		{name: "C-10_uri_with_fragment", chain: leaf(setURIs(certs.PartyURI("US") + "#x")), role: certs.RoleSigning, want: certs.ErrParty},
		{name: "C-10_agency_of_other_party", chain: leaf(func(c *x509.Certificate) {
			certstest.Role(certs.RoleTLSClient)(c)
			setURIs(certs.AgencyURI("JP", "MHLW"))(c)
		}), role: certs.RoleTLSClient, want: certs.ErrParty},

		{name: "C-11_chain_too_long", chain: []*x509.Certificate{us.Signing.Cert, us.Intermediate, us.Root, jp.Intermediate, jp.Root}, role: certs.RoleSigning, want: certs.ErrChainTooLong, wantCheck: certs.CheckChain},
		{name: "C-11_empty_chain", chain: nil, role: certs.RoleSigning, want: certs.ErrMalformed, wantCheck: certs.CheckChain},
		{name: "C-11_certificate_too_large", chain: append(leaf(bloat(9<<10)), us.Intermediate), role: certs.RoleSigning, want: certs.ErrCertTooLarge, wantCheck: certs.CheckSize},

		{name: "C-12_p224_leaf", chain: certstest.LeafWithKey(t, us, mustECKey(t, elliptic.P224()), nil).Chain, role: certs.RoleSigning, want: certs.ErrWeakKey, wantCheck: certs.CheckKey},
		{name: "C-12_rsa2048_leaf", chain: certstest.LeafWithKey(t, us, mustRSAKey(t, 2048), nil).Chain, role: certs.RoleSigning, want: certs.ErrWeakKey, wantCheck: certs.CheckKey},

		{name: "options_no_role", chain: us.Signing.Chain, role: "", want: certs.ErrInvalidOptions, wantCheck: certs.CheckOptions},
		{name: "options_unknown_role", chain: us.Signing.Chain, role: "admin", want: certs.ErrInvalidOptions},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := certs.VerifyOptions{Role: tt.role, Now: tt.now, SignedAt: tt.signedAt, Leeway: tt.leeway}
			if opts.Now.IsZero() {
				opts.Now = now
			}
			// Cold (a fresh bundle builds the path) and warm (the shared
			// bundle may have the path cached): the answer is the same.
			cold, err := certs.NewBundle("US", us.Root)
			if err != nil {
				t.Fatal(err)
			}
			checkVerifyErr(t, cold.Verify(tt.chain, opts), tt.want, tt.wantCheck)
			checkVerifyErr(t, peer.Verify(tt.chain, opts), tt.want, tt.wantCheck)
			_, err = peer.VerifyX5C(x5c(tt.chain), opts)
			checkVerifyErr(t, err, tt.want, tt.wantCheck)
		})
	}
}

// C-12: Go 1.24+ may refuse an RSA-1024 key itself; either way it must fail.
func TestVerify_C12_rsa1024(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Logf("Go refuses to generate RSA-1024: %v", err)
		return
	}
	chain := certstest.LeafWithKey(t, us, key, nil).Chain
	err = certstest.Bundle(t, "US").Verify(chain, certs.VerifyOptions{Role: certs.RoleSigning, Now: certstest.Now})
	if !errors.Is(err, certs.ErrWeakKey) {
		t.Fatalf("err = %v, want ErrWeakKey", err)
	}
}

// C-13: during a rollover the bundle holds the old and the new root; both
// chains verify. After the old root is removed, its chains fail.
func TestVerify_C13_root_rollover(t *testing.T) {
	old := certstest.NewPKI(t, "US")
	next := certstest.FreshPKI(t, "US")
	opts := certs.VerifyOptions{Role: certs.RoleSigning, Now: certstest.Now}

	overlap, err := certs.NewBundle("US", old.Root, next.Root)
	if err != nil {
		t.Fatal(err)
	}
	for name, chain := range map[string][]*x509.Certificate{"old": old.Signing.Chain, "new": next.Signing.Chain} {
		if err := overlap.Verify(chain, opts); err != nil {
			t.Errorf("overlap bundle, %s chain: %v", name, err)
		}
	}
	pemBundle := certs.EncodeCertificates(next.Root)
	after, err := certs.ParseBundle("US", pemBundle)
	if err != nil {
		t.Fatal(err)
	}
	if err := after.Verify(next.Signing.Chain, opts); err != nil {
		t.Errorf("after rollover, new chain: %v", err)
	}
	if err := after.Verify(old.Signing.Chain, opts); !errors.Is(err, certs.ErrUntrusted) {
		t.Errorf("after rollover, old chain: err = %v, want ErrUntrusted", err)
	}
}

// The path cache must not short-circuit the cheap checks: a chain that once
// verified is still judged on role, party and time on every call.
func TestVerifyCachedChainStillChecked(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	b := certstest.Bundle(t, "US")
	ok := certs.VerifyOptions{Role: certs.RoleSigning, Now: certstest.Now}
	for i := range 2 {
		if err := b.Verify(us.Signing.Chain, ok); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	tests := []struct {
		name string
		opts certs.VerifyOptions
		want error
	}{
		{name: "expired", opts: certs.VerifyOptions{Role: certs.RoleSigning, Now: certstest.Now.Add(2 * 365 * 24 * time.Hour)}, want: certs.ErrExpired},
		{name: "not_yet_valid", opts: certs.VerifyOptions{Role: certs.RoleSigning, Now: certstest.Now.Add(-time.Hour)}, want: certs.ErrNotYetValid},
		{name: "wrong_role", opts: certs.VerifyOptions{Role: certs.RoleTLSServer, Now: certstest.Now}, want: certs.ErrKeyUsage},
		{name: "root_expired", opts: certs.VerifyOptions{Role: certs.RoleSigning, Now: us.Root.NotAfter.Add(time.Hour)}, want: certs.ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := b.Verify(us.Signing.Chain, tt.opts); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if _, err := b.VerifyX5C(x5c(us.Signing.Chain), tt.opts); !errors.Is(err, tt.want) {
				t.Fatalf("x5c: err = %v, want %v", err, tt.want)
			}
		})
	}
	// Another party's bundle never sees this bundle's cache.
	if err := certstest.Bundle(t, "JP").Verify(us.Signing.Chain, ok); !errors.Is(err, certs.ErrUntrusted) {
		t.Fatalf("JP bundle: err = %v, want ErrUntrusted", err)
	}
}

func TestVerifyZeroBundleTrustsNothing(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	opts := certs.VerifyOptions{Role: certs.RoleSigning, Now: certstest.Now}
	var zero certs.Bundle
	var nilBundle *certs.Bundle
	for name, b := range map[string]*certs.Bundle{"zero": &zero, "nil": nilBundle} {
		if err := b.Verify(us.Signing.Chain, opts); !errors.Is(err, certs.ErrUntrusted) {
			t.Errorf("%s bundle: err = %v, want ErrUntrusted", name, err)
		}
		if _, err := b.VerifyX5C(x5c(us.Signing.Chain), opts); !errors.Is(err, certs.ErrUntrusted) {
			t.Errorf("%s bundle, x5c: err = %v, want ErrUntrusted", name, err)
		}
		if !b.Pool().Equal(x509.NewCertPool()) {
			t.Errorf("%s bundle: pool is not empty", name)
		}
	}
}

func TestVerifyErrorMessage(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	err := certstest.Bundle(t, "US").Verify(us.TLSServer.Chain, certs.VerifyOptions{Role: certs.RoleSigning, Now: certstest.Now})
	var ve *certs.VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %#v, want *VerifyError", err)
	}
	if ve.Check != certs.CheckEKU || ve.Subject != us.TLSServer.Cert.Subject.String() {
		t.Errorf("VerifyError = %+v", ve)
	}
	msg := err.Error()
	for _, want := range []string{"certs: ", certs.CheckEKU, ve.Subject} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

func checkVerifyErr(t *testing.T, err, want error, wantCheck string) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("err = %v, want nil", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	var ve *certs.VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %T, want *certs.VerifyError", err)
	}
	if wantCheck != "" && ve.Check != wantCheck {
		t.Fatalf("check = %q, want %q (%v)", ve.Check, wantCheck, err)
	}
}

func setKU(ku x509.KeyUsage) func(*x509.Certificate) {
	return func(c *x509.Certificate) { c.KeyUsage = ku }
}

func setEKU(eku ...x509.ExtKeyUsage) func(*x509.Certificate) {
	return func(c *x509.Certificate) { c.ExtKeyUsage = eku }
}

func setPolicies(oids ...x509.OID) func(*x509.Certificate) {
	return func(c *x509.Certificate) { c.Policies = oids }
}

func setURIs(uris ...string) func(*x509.Certificate) {
	return func(c *x509.Certificate) {
		c.URIs = nil
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				panic(err)
			}
			c.URIs = append(c.URIs, u)
		}
	}
}

// bloat adds a private extension so the certificate's DER exceeds n bytes.
func bloat(n int) func(*x509.Certificate) {
	return func(c *x509.Certificate) {
		c.ExtraExtensions = append(c.ExtraExtensions, pkixExtension(n))
	}
}

func mustOID(t *testing.T, s string) x509.OID {
	t.Helper()
	oid, err := x509.ParseOID(s)
	if err != nil {
		t.Fatal(err)
	}
	return oid
}

func mustECKey(t *testing.T, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func mustRSAKey(t *testing.T, bits int) *rsa.PrivateKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func mustAgency(t *testing.T, p *certs.PKI) *certs.Identity {
	t.Helper()
	id, err := p.IssueAgencyClient("MHLW", certs.PKIOptions{Now: certstest.Now})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// subCAChain returns [leaf, subCA, intermediate]: the intermediate
// (MaxPathLen 0) issued a CA, which issued a signing leaf (catalogue C-09).
func subCAChain(t *testing.T, p *certs.PKI) []*x509.Certificate {
	t.Helper()
	sub := certstest.Leaf(t, p, func(c *x509.Certificate) {
		c.IsCA, c.MaxPathLen, c.MaxPathLenZero = true, 0, true
		c.KeyUsage, c.Policies, c.URIs = x509.KeyUsageCertSign, nil, nil
	})
	tmpl, err := certs.LeafTemplate(p.Party, certs.RoleSigning, "", certs.PKIOptions{Now: certstest.Now})
	if err != nil {
		t.Fatal(err)
	}
	leaf := certstest.Issue(t, sub.Cert, sub.Key, mustECKey(t, elliptic.P256()), tmpl, sub.Cert, p.Intermediate)
	return leaf.Chain
}
