package ingress

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestBearer(t *testing.T) {
	e := newEnv(t, envOption{})
	tests := []struct {
		name   string
		auth   []string // Authorization header values
		status int
	}{
		{name: "no_credentials", status: 401},
		{name: "wrong_token", auth: []string{"Bearer " + strings.Repeat("x", 41)}, status: 401},
		{name: "prefix_of_a_token", auth: []string{"Bearer " + tokDOL[:20]}, status: 401},
		{name: "token_plus_suffix", auth: []string{"Bearer " + tokDOL + "x"}, status: 401},
		{name: "basic_scheme", auth: []string{"Basic " + tokDOL}, status: 401},
		{name: "empty_bearer", auth: []string{"Bearer "}, status: 401},
		{name: "two_headers", auth: []string{"Bearer " + tokDOL, "Bearer " + tokDOL}, status: 401},
		{name: "valid", auth: []string{"Bearer " + tokDOL}, status: 202},
		{name: "scheme_case_insensitive", auth: []string{"bearer " + tokDOL}, status: 202},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/messages", strings.NewReader(validBody))
			req.Header.Set("Content-Type", "application/json")
			for _, a := range tt.auth {
				req.Header.Add("Authorization", a)
			}
			r := e.send(t, req)
			if tt.status == 202 {
				wantAccepted(t, r)
				return
			}
			wantProblem(t, r, tt.status, CodeUnauthorized)
			if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
			}
		})
	}
	if calls := e.be.submits(); len(calls) != 2 || calls[0].agency != "DOL-ILAB" {
		t.Fatalf("submissions %+v", calls)
	}
	t.Run("public_routes_need_none", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/readyz", "/v1/openapi.yaml"} {
			if r := e.do(t, http.MethodGet, p, "", ""); r.status != 200 {
				t.Fatalf("%s: %d", p, r.status)
			}
		}
	})
}

// testPKI is a throwaway agency CA with a server certificate for 127.0.0.1.
type testPKI struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	server tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test agency CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &testPKI{ca: ca, caKey: key, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.server = p.issue(t, nil, func(c *x509.Certificate) {
		c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	})
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var serial = big.NewInt(100)

// issue returns a leaf signed by the CA with the given SAN URIs.
func (p *testPKI) issue(t *testing.T, uris []string, edit func(*x509.Certificate)) tls.Certificate {
	t.Helper()
	key := newKey(t)
	serial.Add(serial, big.NewInt(1))
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).Set(serial), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	e := newEnv(t, envOption{tls: &tls.Config{
		Certificates: []tls.Certificate{pki.server},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pki.pool,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"}, // HTTPServer must drop h2
	}})
	other := newTestPKI(t)
	tests := []struct {
		name      string
		cert      *tls.Certificate
		token     string
		status    int
		agency    string
		handshake bool // the TLS handshake itself must fail
	}{
		{name: "agency_certificate", cert: ptr(pki.issue(t, []string{uriDOL}, nil)), status: 202, agency: "DOL-ILAB"},
		{name: "other_agency_certificate", cert: ptr(pki.issue(t, []string{"urn:x:other", uriUSTR}, nil)), status: 403}, // USTR may not send labor notices
		{name: "unknown_uri", cert: ptr(pki.issue(t, []string{"urn:cmx:agency:US:NOBODY"}, nil)), status: 401},
		{name: "no_uri", cert: ptr(pki.issue(t, nil, nil)), status: 401},
		{name: "two_agencies_in_one_cert", cert: ptr(pki.issue(t, []string{uriDOL, uriUSTR}, nil)), status: 401},
		{name: "cert_and_token_disagree", cert: ptr(pki.issue(t, []string{uriDOL}, nil)), token: tokUSTR, status: 401},
		{name: "cert_and_token_agree", cert: ptr(pki.issue(t, []string{uriDOL}, nil)), token: tokDOL, status: 202, agency: "DOL-ILAB"},
		{name: "no_cert_token_only", token: tokDOL, status: 202, agency: "DOL-ILAB"},
		{name: "H-07_cert_of_another_CA", cert: ptr(other.issue(t, []string{uriDOL}, nil)), handshake: true},
		{name: "H-07_expired_cert", cert: ptr(pki.issue(t, []string{uriDOL}, func(c *x509.Certificate) {
			c.NotAfter = time.Now().Add(-time.Minute)
		})), handshake: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: pki.pool, NextProtos: []string{"h2", "http/1.1"}}
			if tt.cert != nil {
				cfg.Certificates = []tls.Certificate{*tt.cert}
			}
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
			defer client.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/messages", strings.NewReader(validBody))
			req.Header.Set("Content-Type", "application/json")
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			before := len(e.be.submits())
			resp, err := client.Do(req)
			if tt.handshake {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("handshake succeeded: %d", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Proto != "HTTP/1.1" {
				t.Fatalf("protocol %s, want HTTP/1.1 only (H-05)", resp.Proto)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			calls := e.be.submits()
			if tt.agency != "" && (len(calls) != before+1 || calls[len(calls)-1].agency != tt.agency) {
				t.Fatalf("submissions %+v, want one by %s", calls[before:], tt.agency)
			}
			if tt.agency == "" && len(calls) != before {
				t.Fatal("an unauthenticated request reached Submit")
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestRateLimit covers H-15: an agency over its rate gets 429 with
// Retry-After before its body is read; other agencies are not affected.
func TestRateLimit(t *testing.T) {
	e := newEnv(t, envOption{cfg: func(c *Config) { c.RatePerSecond, c.Burst = 0.5, 3 }})
	for i := range 3 {
		if r := e.submit(t, tokDOL, validBody); r.status != http.StatusAccepted {
			t.Fatalf("request %d: %d", i, r.status)
		}
	}
	r := e.submit(t, tokDOL, `{not even json`)
	wantProblem(t, r, http.StatusTooManyRequests, CodeRateLimited)
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 || s > 2 {
		t.Fatalf("Retry-After %q, want 1..2 seconds at 0.5/s", r.header.Get("Retry-After"))
	}
	wantProblem(t, e.do(t, http.MethodGet, "/v1/inbox", tokDOL, ""), http.StatusTooManyRequests, CodeRateLimited)
	if r := e.submit(t, tokUSTR, `{"type":"non_market_practice_report","to":"JP","body":{}}`); r.status != http.StatusAccepted {
		t.Fatalf("other agency: %d %s", r.status, r.body)
	}
	if n := len(e.be.submits()); n != 4 {
		t.Fatalf("%d submissions, want 4", n)
	}
	e.clock.Advance(2 * time.Second) // one token refilled
	wantAccepted(t, e.submit(t, tokDOL, validBody))
	wantProblem(t, e.submit(t, "", validBody), http.StatusUnauthorized, CodeUnauthorized) // auth comes first
}
