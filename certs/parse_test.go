package certs_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/certs/certstest"
)

func TestParseIdentity(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	jp := certstest.NewPKI(t, "JP")
	files, err := us.Files()
	if err != nil {
		t.Fatal(err)
	}
	agency, err := us.IssueAgencyClient("DOL-ILAB", certs.PKIOptions{Now: certstest.Now})
	if err != nil {
		t.Fatal(err)
	}
	agencyKey := mustEncodeKey(t, agency)
	weird := certstest.Leaf(t, us, setKU(x509.KeyUsageDigitalSignature|x509.KeyUsageCertSign))
	twoParties := certstest.Leaf(t, us, setURIs(certs.PartyURI("US"), certs.PartyURI("JP")))

	tests := []struct {
		name       string
		chain, key []byte
		role       certs.Role
		party      string
		agency     string
		want       error
	}{
		{name: "signing", chain: files["signing.pem"], key: files["signing.key"], role: certs.RoleSigning, party: "US"},
		{name: "encryption", chain: files["encryption.pem"], key: files["encryption.key"], role: certs.RoleEncryption, party: "US"},
		{name: "tls_server", chain: files["tls-server.pem"], key: files["tls-server.key"], role: certs.RoleTLSServer, party: "US"},
		{name: "tls_client", chain: files["tls-client.pem"], key: files["tls-client.key"], role: certs.RoleTLSClient, party: "US"},
		{name: "agency_client", chain: certs.EncodeCertificates(agency.Chain...), key: agencyKey, role: certs.RoleTLSClient, party: "US", agency: "DOL-ILAB"},
		{name: "root_dropped_from_chain", chain: certs.EncodeCertificates(us.Signing.Cert, us.Intermediate, us.Root), key: files["signing.key"], role: certs.RoleSigning, party: "US"},
		{name: "key_of_other_leaf", chain: files["signing.pem"], key: files["encryption.key"], want: certs.ErrKeyMismatch},
		{name: "key_of_other_party", chain: files["signing.pem"], key: mustEncodeKey(t, jp.Signing), want: certs.ErrKeyMismatch},
		{name: "ca_certificate", chain: files["intermediate.pem"], key: files["intermediate.key"], want: certs.ErrKeyUsage},
		{name: "no_cmx_role", chain: certs.EncodeCertificates(weird.Chain...), key: mustEncodeKey(t, weird), want: certs.ErrKeyUsage},
		{name: "two_party_uris", chain: certs.EncodeCertificates(twoParties.Chain...), key: mustEncodeKey(t, twoParties), want: certs.ErrParty},
		{name: "no_certificate", chain: files["signing.key"], key: files["signing.key"], want: certs.ErrMalformed},
		{name: "no_key", chain: files["signing.pem"], key: files["signing.pem"], want: certs.ErrMalformed},
		{name: "garbage", chain: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), key: files["signing.key"], want: certs.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := certs.ParseIdentity(tt.chain, tt.key)
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("err = %v, want %v", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.Role != tt.role || id.Party != tt.party || id.Agency != tt.agency || id.KID != certs.KID(id.Cert) || len(id.Chain) != 2 {
				t.Fatalf("identity = role %s party %s agency %q chain %d", id.Role, id.Party, id.Agency, len(id.Chain))
			}
		})
	}
}

func TestParseDecryptionKey(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	files, _ := us.Files()
	dk, err := certs.ParseDecryptionKey(files["encryption.pem"], files["encryption.key"])
	if err != nil {
		t.Fatal(err)
	}
	if dk.KID != us.Encryption.KID || !dk.Cert.Equal(us.Encryption.Cert) || !dk.RetiredAt.IsZero() {
		t.Fatalf("DecryptionKey = %+v", dk)
	}
	assertECDHWorks(t, dk)
	if _, err := certs.ParseDecryptionKey(files["signing.pem"], files["signing.key"]); !errors.Is(err, certs.ErrKeyUsage) {
		t.Fatalf("signing identity as decryption key: err = %v, want ErrKeyUsage", err)
	}
}

func TestEncodeParseCertificates(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	pemBytes := certs.EncodeCertificates(us.Signing.Cert, us.Intermediate, us.Root)
	withKey := append(mustEncodeKey(t, us.Signing), pemBytes...) // other blocks are skipped
	got, err := certs.ParseCertificates(withKey)
	if err != nil || len(got) != 3 || !got[0].Equal(us.Signing.Cert) || !got[2].Equal(us.Root) {
		t.Fatalf("ParseCertificates = %d certs, %v", len(got), err)
	}
	for _, in := range [][]byte{nil, []byte("hello"), mustEncodeKey(t, us.Signing)} {
		if _, err := certs.ParseCertificates(in); !errors.Is(err, certs.ErrMalformed) {
			t.Errorf("ParseCertificates(%.20q) err = %v, want ErrMalformed", in, err)
		}
	}
	key, err := certs.ParsePrivateKey(mustEncodeKey(t, us.Signing))
	if err != nil || !key.Public().(*ecdsa.PublicKey).Equal(us.Signing.Key.Public()) {
		t.Fatalf("ParsePrivateKey: %v", err)
	}
}

// The TLS identities work with crypto/tls as issued, with pools from the
// bundle only: server auth and client auth in one mutual handshake.
func TestTLSCertificateHandshake(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	jp := certstest.NewPKI(t, "JP")
	usBundle, jpBundle := certstest.Bundle(t, "US"), certstest.Bundle(t, "JP")
	clock := func() time.Time { return certstest.Now }

	server := tls.Config{
		Certificates: []tls.Certificate{jp.TLSServer.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    usBundle.Pool(),
		MinVersion:   tls.VersionTLS13,
		Time:         clock,
	}
	client := tls.Config{
		Certificates: []tls.Certificate{us.TLSClient.TLSCertificate()},
		RootCAs:      jpBundle.Pool(),
		ServerName:   "localhost",
		MinVersion:   tls.VersionTLS13,
		Time:         clock,
	}
	if err := handshake(t, &server, &client); err != nil {
		t.Fatalf("mutual TLS with the issued identities: %v", err)
	}
	// A client certificate of the wrong party is refused by the server.
	client.Certificates = []tls.Certificate{jp.TLSClient.TLSCertificate()}
	if err := handshake(t, &server, &client); err == nil {
		t.Fatal("server accepted a client certificate of its own party's CA")
	}
	// The signing certificate cannot serve TLS.
	client.Certificates = []tls.Certificate{us.TLSClient.TLSCertificate()}
	server.Certificates = []tls.Certificate{jp.Signing.TLSCertificate()}
	if err := handshake(t, &server, &client); err == nil {
		t.Fatal("client accepted the signing certificate as a TLS server")
	}
}

func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := tls.Server(a, serverCfg)
	done := make(chan error, 1)
	go func() {
		err := srv.HandshakeContext(ctx)
		if err == nil {
			_, err = srv.Write([]byte{1})
		}
		a.Close()
		done <- err
	}()
	cli := tls.Client(b, clientCfg)
	err := cli.HandshakeContext(ctx)
	if err == nil {
		_, err = cli.Read(make([]byte, 1)) // TLS 1.3: the server judges the client certificate after the client's Finished
	}
	b.Close()
	if serr := <-done; serr != nil {
		return serr
	}
	return err
}

func TestNewBundle(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	tests := []struct {
		name  string
		party string
		roots []*x509.Certificate
		ok    bool
	}{
		{name: "one_root", party: "US", roots: []*x509.Certificate{us.Root}, ok: true},
		{name: "no_roots", party: "US"},
		{name: "nil_root", party: "US", roots: []*x509.Certificate{nil}},
		{name: "intermediate_as_root", party: "US", roots: []*x509.Certificate{us.Intermediate}},
		{name: "leaf_as_root", party: "US", roots: []*x509.Certificate{us.Signing.Cert}},
		{name: "bad_party", party: "us", roots: []*x509.Certificate{us.Root}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := certs.NewBundle(tt.party, tt.roots...)
			if tt.ok != (err == nil) {
				t.Fatalf("NewBundle err = %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && (b.Party() != tt.party || len(b.Roots()) != len(tt.roots)) {
				t.Fatalf("bundle party %s roots %d", b.Party(), len(b.Roots()))
			}
		})
	}
	if _, err := certs.ParseBundle("US", []byte("not pem")); !errors.Is(err, certs.ErrMalformed) {
		t.Fatalf("ParseBundle(garbage) err = %v", err)
	}
}

// Pool and Roots hand out copies: adding a root to them does not widen what
// the bundle trusts.
func TestBundleCopiesAreDetached(t *testing.T) {
	jp := certstest.NewPKI(t, "JP")
	b := certstest.Bundle(t, "US")
	b.Pool().AddCert(jp.Root)
	roots := b.Roots()
	roots[0] = jp.Root
	err := b.Verify(jp.Signing.Chain, certs.VerifyOptions{Role: certs.RoleSigning, Now: certstest.Now})
	if !errors.Is(err, certs.ErrUntrusted) {
		t.Fatalf("err = %v, want ErrUntrusted", err)
	}
	if !b.Roots()[0].Equal(certstest.NewPKI(t, "US").Root) {
		t.Fatal("Roots changed through the returned slice")
	}
}
