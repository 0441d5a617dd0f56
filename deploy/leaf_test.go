package deploy_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// refusals are the log lines of a leafnode connection that was turned away.
var refusals = regexp.MustCompile(`(?i)handshake error|authentication error|authorization violation`)

// testLeafRefused: N-05. Servers started from the committed US config, but
// with the wrong certificates, solicit JP; raw connections probe the
// listener. None becomes a leafnode: JP keeps exactly the real one.
func (r *borderRig) testLeafRefused(t *testing.T) {
	jp := r.nats["JP"]
	usDir := filepath.Join(r.root, dirUS)
	stranger := filepath.Join(r.root, "stranger")
	writePKI(t, filepath.Join(stranger, "pki"), "US") // a third PKI: the right party code, an unknown root
	agency := writeAgency(t, r.pki["US"], filepath.Join(r.root, "us-agency"), "OPS")
	jpRoot := filepath.Join(usDir, "peer", certs.FileBundle) // JP's root, as US pins it
	for _, c := range []struct {
		name, cert, key, ca string
		refusedBy           string // whose log shows the refusal: JP, or the soliciting server itself
	}{
		{"third_party_pki", filepath.Join(stranger, "pki", certs.FileTLSClient), filepath.Join(stranger, "pki", certs.FileTLSClientKey), jpRoot, "JP"},
		{"peer_root_but_agency_certificate", agency + ".pem", agency + ".key", jpRoot, "JP"},
		{"own_party_certificate", filepath.Join(r.root, dirJP, "pki", certs.FileTLSClient), filepath.Join(r.root, dirJP, "pki", certs.FileTLSClientKey), jpRoot, "JP"},
		{"unpinned_server_root", filepath.Join(usDir, "pki", certs.FileTLSClient), filepath.Join(usDir, "pki", certs.FileTLSClientKey), filepath.Join(stranger, "pki", certs.FileBundle), "self"},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := natsEnv(t, usDir, map[string]string{
				"CMXNATS_PORT": "-1", "CMXNATS_MONITOR_PORT": "-1", "CMXNATS_STORE_DIR": t.TempDir(),
				"CMXNATS_LEAF_URL": jp.leafURL(t), "CMXNATS_TLS_CERT": c.cert, "CMXNATS_TLS_KEY": c.key, "CMXNATS_PEER_CA": c.ca,
				"CMXNATS_GATEWAY_PASSWORD": bcryptHash(t, "unused"),
			})
			base := jp.log.count(refusals)
			s := startNATS(t, "solicitor", filepath.Join(usDir, "nats.conf"), env)
			watch := jp.log
			if c.refusedBy == "self" {
				watch, base = s.log, 0
			}
			transporttest.WaitFor(t, 15*time.Second, func() bool { return watch.count(refusals) > base }, "the refusal")
			t.Logf("refused: %s", watch.matching(refusals)[base])
			if n, m := jp.srv.NumLeafNodes(), s.srv.NumLeafNodes(); n != 1 || m != 0 {
				t.Fatalf("JP has %d leafnodes (want 1), the impostor %d (want 0)", n, m)
			}
		})
	}
	r.testRawLeafProbes(t)
	transporttest.WaitFor(t, 10*time.Second, func() bool {
		return jp.srv.NumLeafNodes() == 1 && r.nats["US"].srv.NumLeafNodes() == 1
	}, "only the real leafnode remains, still up")
}

// testRawLeafProbes: without TLS or without a client certificate nothing,
// not even the server's INFO, is said; with US's certificate INFO comes
// (the control that shows the probe can succeed).
func (r *borderRig) testRawLeafProbes(t *testing.T) {
	addr := strings.TrimPrefix(r.nats["JP"].leafURL(t), "tls://")
	jpRoot := x509.NewCertPool()
	jpRoot.AddCert(r.pki["JP"].Root)
	us := r.pki["US"].TLSClient.TLSCertificate()
	for _, c := range []struct {
		name     string
		tls      *tls.Config
		wantINFO bool
	}{
		{name: "plaintext"},
		{name: "no_client_certificate", tls: &tls.Config{RootCAs: jpRoot, MinVersion: tls.VersionTLS13}},
		{name: "tls_1.2", tls: &tls.Config{RootCAs: jpRoot, Certificates: []tls.Certificate{us}, MaxVersion: tls.VersionTLS12}},
		{name: "control_peer_certificate", tls: &tls.Config{RootCAs: jpRoot, Certificates: []tls.Certificate{us}}, wantINFO: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			line, err := firstLine(t, addr, c.tls)
			if got := err == nil && strings.HasPrefix(line, "INFO "); got != c.wantINFO {
				t.Fatalf("first line %.40q, err %v; want INFO: %v", line, err, c.wantINFO)
			}
		})
	}
}

// writeAgency issues an agency client certificate of p (what
// "cmx pki agency" writes) and returns the path without extension.
func writeAgency(t *testing.T, p *certs.PKI, dir, agency string) string {
	t.Helper()
	id, err := p.IssueAgencyClient(agency, certs.PKIOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := certs.EncodePrivateKey(id.Key)
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string][]byte{"agency.pem": certs.EncodeCertificates(id.Chain...), "agency.key": key})
	return filepath.Join(dir, "agency")
}

// firstLine dials JP's leafnode port with tlsCfg (nil = plain TCP sending a
// CONNECT in clear text) and returns the first line the server sends.
func firstLine(t *testing.T, addr string, tlsCfg *tls.Config) (string, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 2 * time.Second}
	var conn net.Conn
	var err error
	if tlsCfg == nil {
		if conn, err = d.Dial("tcp", addr); err == nil {
			_, err = conn.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n"))
		}
	} else {
		conn, err = tls.DialWithDialer(d, "tcp", addr, tlsCfg)
	}
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	return bufio.NewReader(conn).ReadString('\n')
}
