package transporttest

import (
	"crypto/tls"
	"crypto/x509"
	"sync"
	"testing"

	"github.com/cmx-exchange/cmx/certs"
)

// Live TLS handshakes check validity against the wall clock, so these PKIs
// are issued now (not at certstest's fixed clock) and cached per process.
var (
	pkiMu sync.Mutex
	pkis  = map[string]*certs.PKI{}
)

// PKI returns party's PKI issued now, shared by the tests of one process.
// Its TLS server certificate names localhost and 127.0.0.1.
func PKI(t testing.TB, party string) *certs.PKI {
	t.Helper()
	pkiMu.Lock()
	defer pkiMu.Unlock()
	if p, ok := pkis[party]; ok {
		return p
	}
	p := FreshPKI(t, party)
	pkis[party] = p
	return p
}

// FreshPKI returns a new, unshared PKI for party: same party code, unknown
// roots (a stranger for N-05).
func FreshPKI(t testing.TB, party string) *certs.PKI {
	t.Helper()
	p, err := certs.NewPKI(party, certs.PKIOptions{})
	if err != nil {
		t.Fatalf("transporttest: NewPKI(%q): %v", party, err)
	}
	return p
}

// ServerTLS is the accepting side's leafnode TLS: self's TLS server
// certificate, client certificates verified against peer's root.
func ServerTLS(self, peer *certs.PKI) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{self.TLSServer.TLSCertificate()},
		ClientCAs:    pool(peer.Root),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

// ClientTLS is the soliciting side's leafnode TLS: self's TLS client
// certificate, the server verified against peer's root.
func ClientTLS(self, peer *certs.PKI) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{self.TLSClient.TLSCertificate()},
		RootCAs:      pool(peer.Root),
		MinVersion:   tls.VersionTLS13,
	}
}

func pool(roots ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range roots {
		p.AddCert(r)
	}
	return p
}
