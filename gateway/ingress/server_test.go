package ingress

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want []string // substrings of the joined error; none = valid
	}{
		{name: "valid", edit: func(*Config) {}},
		{name: "every_problem_at_once", edit: func(c *Config) {
			c.Party = "usa"
			c.MaxBodyBytes, c.ReadTimeout, c.RatePerSecond = -1, -1, -1
			c.Agencies = append(c.Agencies,
				Agency{ID: "DOL-ILAB", Token: strings.Repeat("z", 40)},
				Agency{ID: "bad id", Token: "short"},
				Agency{ID: "NOAUTH"},
				Agency{ID: "SAME", Token: tokDOL, CertURI: uriDOL, Send: []string{"gossip"}},
				Agency{ID: "RELURI", CertURI: "no-scheme"},
			)
		}, want: []string{"Party", "MaxBodyBytes", "ReadTimeout", "RatePerSecond", `duplicate ID "DOL-ILAB"`,
			"Agencies[4]: ID", "shorter than 32", "NOAUTH: needs a Token or a CertURI", "SAME: Token shared",
			"SAME: CertURI shared", `unknown type "gossip"`, "RELURI: CertURI is not an absolute URI"}},
		{name: "no_agencies", edit: func(c *Config) { c.Agencies = nil }, want: []string{"at least one agency"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.edit(&cfg)
			err := cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted an invalid config")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if _, nerr := New(cfg, newFakeBackend(), KVIdem{}); nerr == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
	t.Run("nil_dependencies", func(t *testing.T) {
		if _, err := New(testConfig(), nil, KVIdem{}); err == nil {
			t.Fatal("New without a Backend")
		}
	})
	t.Run("conflicting_extra_handler", func(t *testing.T) {
		_, err := New(testConfig(), newFakeBackend(), KVIdem{}, WithExtraHandler("GET /healthz", http.NotFoundHandler()))
		if err == nil {
			t.Fatal("New accepted a pattern that conflicts with a route")
		}
	})
}

func TestHTTPServer(t *testing.T) {
	s, err := New(testConfig(), newFakeBackend(), KVIdem{})
	if err != nil {
		t.Fatal(err)
	}
	srv := s.HTTPServer("127.0.0.1:0", nil)
	if srv.ReadHeaderTimeout != DefaultReadHeaderTimeout || srv.ReadTimeout != DefaultReadTimeout ||
		srv.WriteTimeout != DefaultWriteTimeout || srv.IdleTimeout != DefaultIdleTimeout ||
		srv.MaxHeaderBytes != DefaultMaxHeaderBytes {
		t.Fatalf("server limits not set: %+v", srv)
	}
	if srv.Protocols.HTTP2() || srv.Protocols.UnencryptedHTTP2() || srv.TLSNextProto == nil {
		t.Fatal("HTTP/2 must be off (H-05)")
	}
}

// TestRunShutdown checks the shutdown order: intake stops first, a running
// submission still completes with its 202, then Run returns.
func TestRunShutdown(t *testing.T) {
	be := newFakeBackend()
	cfg := testConfig()
	s, err := New(cfg, be, KVIdem{KV: newBucket(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln, nil) }()

	e := &env{t: t, be: be, base: "http://" + addr, client: &http.Client{Timeout: 10 * time.Second}}
	defer e.client.CloseIdleConnections()
	entered, release := blockSubmit(e)
	first := make(chan reply, 1)
	go func() { first <- e.submit(noFatal{t}, tokDOL, validBody) }()
	<-entered
	cancel()
	waitFor(t, "the listener to close", 5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while a request was running", err)
	default:
	}
	close(release)
	wantAccepted(t, <-first)
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(be.submits()) != 1 {
		t.Fatal("the running submission was lost")
	}
}
