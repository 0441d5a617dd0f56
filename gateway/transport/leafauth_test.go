package transport_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// firstLine dials JP's leafnode port directly (not through the proxy) with
// tlsCfg (nil = plain TCP, sending a CONNECT in clear text) and returns the
// first protocol line, or the error that ended the connection.
func firstLine(t *testing.T, p *transporttest.Pair, tlsCfg *tls.Config) (string, error) {
	t.Helper()
	addr := transporttest.HostPort(p.JP.LeafURL())
	d := &net.Dialer{Timeout: 2 * time.Second}
	var conn net.Conn
	var err error
	if tlsCfg == nil {
		conn, err = d.Dial("tcp", addr)
		if err == nil {
			_, err = conn.Write([]byte("CONNECT {\"user\":\"us\"}\r\nPING\r\n"))
		}
	} else {
		conn, err = tls.DialWithDialer(d, "tcp", addr, tlsCfg)
	}
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	return bufio.NewReader(conn).ReadString('\n')
}

func rawTLS(id *certs.Identity, roots *x509.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(roots)
	c := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if id != nil {
		c.Certificates = []tls.Certificate{id.TLSCertificate()}
	}
	return c
}

// testLeafHandshake: N-05. Only a client certificate from the peer's roots
// gets as far as the server's INFO; nothing is said in clear text.
func testLeafHandshake(t *testing.T, p *transporttest.Pair) {
	us, jp := transporttest.PKI(t, "US"), transporttest.PKI(t, "JP")
	stranger := transporttest.FreshPKI(t, "US")
	for _, c := range []struct {
		name     string
		tls      *tls.Config
		wantINFO bool
	}{
		{name: "peer_client_cert", tls: rawTLS(us.TLSClient, jp.Root), wantINFO: true},
		{name: "unknown_CA", tls: rawTLS(stranger.TLSClient, jp.Root)},
		{name: "own_party_cert", tls: rawTLS(jp.TLSClient, jp.Root)},
		{name: "server_cert_as_client", tls: rawTLS(us.TLSServer, jp.Root)},
		{name: "no_client_cert", tls: rawTLS(nil, jp.Root)},
		{name: "plaintext"},
	} {
		t.Run(c.name, func(t *testing.T) {
			line, err := firstLine(t, p, c.tls)
			gotINFO := err == nil && strings.HasPrefix(line, "INFO ")
			if gotINFO != c.wantINFO {
				t.Fatalf("first line %q, err %v; want INFO: %v", line, err, c.wantINFO)
			}
		})
	}
	if !p.US.LeafConnected() || !p.JP.LeafConnected() {
		t.Fatal("the real leafnode dropped")
	}
}

// leafConnect speaks the leafnode protocol to JP with a valid US
// certificate and the given credentials, and returns the server's answer
// to CONNECT+PING: "PONG" or an -ERR line.
func leafConnect(t *testing.T, p *transporttest.Pair, user, pass string) string {
	t.Helper()
	us, jp := transporttest.PKI(t, "US"), transporttest.PKI(t, "JP")
	conn, err := tls.Dial("tcp", transporttest.HostPort(p.JP.LeafURL()), rawTLS(us.TLSClient, jp.Root))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("no INFO: %q %v", line, err)
	}
	connect, _ := json.Marshal(map[string]any{
		"version": "2.15.2", "user": user, "pass": pass, "name": "raw-test-leaf",
		"server_id": "NRAWTESTLEAF", "headers": true, "remote_account": transport.AccountExchange,
	})
	if _, err := conn.Write([]byte("CONNECT " + string(connect) + "\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "closed: " + err.Error()
		}
		if strings.HasPrefix(line, "PONG") || strings.HasPrefix(line, "-ERR") {
			return strings.TrimSpace(line)
		}
	}
}

// testConnectionTypes: the border user is a leafnode only, the gateway user
// a client only, and passwords are checked.
func testConnectionTypes(t *testing.T, p *transporttest.Pair) {
	for _, c := range []struct {
		name, user, pass string
		want             string
	}{
		{name: "leaf_user", user: p.LeafUser, pass: p.LeafPassword, want: "PONG"},
		{name: "wrong_password", user: p.LeafUser, pass: "wrong", want: "-ERR 'Authorization Violation'"},
		{name: "gateway_user_as_leaf", user: p.GatewayUser, pass: p.JPPassword, want: "-ERR 'Authorization Violation'"},
		{name: "no_credentials", want: "-ERR 'Authorization Violation'"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := leafConnect(t, p, c.user, c.pass); got != c.want {
				t.Fatalf("leaf CONNECT as %q: %q, want %q", c.user, got, c.want)
			}
		})
	}
	t.Run("leaf_user_as_client", func(t *testing.T) {
		nc, err := transport.Connect(testCtx(t), p.JP.ClientURL(), p.LeafUser, p.LeafPassword, nats.NoReconnect())
		if err == nil {
			nc.Close()
			t.Fatal("the border user connected as a client")
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("err = %v, want authorization violation", err)
		}
	})
	transporttest.WaitFor(t, 5*time.Second, func() bool {
		return p.US.LeafConnected() && p.JP.LeafConnected() && p.JP.Server().NumLeafNodes() == 1
	}, "only the real leafnode remains")
}
