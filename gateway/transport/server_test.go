package transport_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// single starts one embedded server without a leafnode.
func single(t testing.TB, mutate func(*transport.EmbeddedConfig)) (*transport.Embedded, transport.EmbeddedConfig) {
	t.Helper()
	cfg := transport.EmbeddedConfig{
		Party: "US", Peer: "JP", StoreDir: t.TempDir(),
		GatewayUser: "gw", GatewayPassword: transporttest.Secret(t),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := transport.StartEmbedded(cfg)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(e.Shutdown)
	return e, cfg
}

func connectSingle(t testing.TB, e *transport.Embedded, cfg transport.EmbeddedConfig) jetstream.JetStream {
	t.Helper()
	nc, err := transport.Connect(testCtx(t), e.ClientURL(), cfg.GatewayUser, cfg.GatewayPassword)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return jsOf(t, nc)
}

func TestEmbeddedConfigValidate(t *testing.T) {
	us, jp := transporttest.PKI(t, "US"), transporttest.PKI(t, "JP")
	valid := func() transport.EmbeddedConfig {
		return transport.EmbeddedConfig{
			Party: "JP", Peer: "US", StoreDir: "store", GatewayUser: "gw", GatewayPassword: "pw",
			LeafListen: "127.0.0.1:0", LeafTLS: transporttest.ServerTLS(jp, us),
			PeerLeafUser: "us", PeerLeafPassword: "pw2",
		}
	}
	remote := func() transport.EmbeddedConfig {
		return transport.EmbeddedConfig{
			Party: "US", Peer: "JP", StoreDir: "store", GatewayUser: "gw", GatewayPassword: "pw",
			LeafRemote: "tls://127.0.0.1:7422", LeafRemoteTLS: transporttest.ClientTLS(us, jp),
			LeafRemoteUser: "us", LeafRemotePassword: "pw2",
		}
	}
	for _, c := range []struct {
		name    string
		cfg     func() transport.EmbeddedConfig
		mutate  func(*transport.EmbeddedConfig)
		wantErr string // "" = valid
	}{
		{name: "accepting_side", cfg: valid},
		{name: "soliciting_side", cfg: remote},
		{name: "same_party", cfg: valid, mutate: func(c *transport.EmbeddedConfig) { c.Peer = "jp" }, wantErr: "party and peer"},
		{name: "bad_party", cfg: valid, mutate: func(c *transport.EmbeddedConfig) { c.Party = "J.P" }, wantErr: "two-letter"},
		{name: "no_store", cfg: valid, mutate: func(c *transport.EmbeddedConfig) { c.StoreDir = "" }, wantErr: "StoreDir"},
		{name: "no_gateway_user", cfg: valid, mutate: func(c *transport.EmbeddedConfig) { c.GatewayPassword = "" }, wantErr: "GatewayUser"},
		{name: "leaf_without_tls", cfg: valid, mutate: func(c *transport.EmbeddedConfig) { c.LeafTLS = nil }, wantErr: "LeafTLS is required"},
		{name: "leaf_without_client_auth", cfg: valid, mutate: func(c *transport.EmbeddedConfig) { c.LeafTLS.ClientAuth = tls.VerifyClientCertIfGiven }, wantErr: "RequireAndVerifyClientCert"},
		{name: "leaf_without_client_cas", cfg: valid, mutate: func(c *transport.EmbeddedConfig) { c.LeafTLS.ClientCAs = nil }, wantErr: "ClientCAs"},
		{name: "leaf_user_is_gateway_user", cfg: valid, mutate: func(c *transport.EmbeddedConfig) { c.PeerLeafUser = "gw" }, wantErr: "must differ"},
		{name: "bad_listen", cfg: valid, mutate: func(c *transport.EmbeddedConfig) { c.LeafListen = "127.0.0.1" }, wantErr: "LeafListen"},
		{name: "remote_not_tls", cfg: remote, mutate: func(c *transport.EmbeddedConfig) { c.LeafRemote = "nats://127.0.0.1:7422" }, wantErr: "tls://"},
		{name: "remote_with_userinfo", cfg: remote, mutate: func(c *transport.EmbeddedConfig) { c.LeafRemote = "tls://u:p@127.0.0.1:7422" }, wantErr: "without credentials"},
		{name: "remote_without_roots", cfg: remote, mutate: func(c *transport.EmbeddedConfig) { c.LeafRemoteTLS.RootCAs = nil }, wantErr: "RootCAs"},
		{name: "remote_without_client_cert", cfg: remote, mutate: func(c *transport.EmbeddedConfig) { c.LeafRemoteTLS.Certificates = nil }, wantErr: "client certificate"},
		{name: "remote_without_password", cfg: remote, mutate: func(c *transport.EmbeddedConfig) { c.LeafRemotePassword = "" }, wantErr: "LeafRemotePassword"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg()
			if c.mutate != nil {
				c.mutate(&cfg)
			}
			err := cfg.Validate()
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, transport.ErrConfig) || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Validate = %v, want ErrConfig mentioning %q", err, c.wantErr)
			}
		})
	}
}

// TestDurability: acknowledged writes are fsynced (sync_interval: always)
// and survive a restart on the same store.
func TestDurability(t *testing.T) {
	e, cfg := single(t, nil)
	if jc := e.Server().JetStreamConfig(); jc == nil || !jc.SyncAlways || jc.Domain != "us" || jc.StoreDir != filepath.Join(cfg.StoreDir, "jetstream") {
		t.Fatalf("JetStream config = %+v, want SyncAlways in domain us on %s", jc, cfg.StoreDir)
	}
	js := connectSingle(t, e, cfg)
	layout := transporttest.Layout("US")
	if err := transport.EnsureLayout(testCtx(t), js, layout); err != nil {
		t.Fatal(err)
	}
	subj := transport.OutMsgSubject("JP", "labor_enforcement_notice")
	ack, err := js.Publish(testCtx(t), subj, []byte("kept"), jetstream.WithMsgID("m-1"))
	if err != nil {
		t.Fatal(err)
	}

	e.Shutdown()
	cfg.Port = portOf(t, e.ClientURL())
	e2, err := transport.StartEmbedded(cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Cleanup(e2.Shutdown)
	js2 := connectSingle(t, e2, cfg)
	if err := transport.CheckLayout(testCtx(t), js2, layout); err != nil {
		t.Fatalf("layout after restart: %v", err)
	}
	s, err := js2.Stream(testCtx(t), transport.StreamOut)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetMsg(testCtx(t), ack.Sequence)
	if err != nil || string(got.Data) != "kept" {
		t.Fatalf("message %d after restart: %+v, %v", ack.Sequence, got, err)
	}
	// The dedup window survives the restart too: the same id is a duplicate.
	dup, err := js2.Publish(testCtx(t), subj, []byte("kept"), jetstream.WithMsgID("m-1"))
	if err != nil || !dup.Duplicate || dup.Sequence != ack.Sequence {
		t.Fatalf("republish after restart = %+v, %v; want duplicate of %d", dup, err, ack.Sequence)
	}
}

func portOf(t testing.TB, rawURL string) int {
	t.Helper()
	_, ps, err := net.SplitHostPort(transporttest.HostPort(rawURL))
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func TestStartEmbeddedFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	_, err = transport.StartEmbedded(transport.EmbeddedConfig{
		Party: "US", Peer: "JP", StoreDir: t.TempDir(), GatewayUser: "gw", GatewayPassword: "pw",
		Port: ln.Addr().(*net.TCPAddr).Port,
	})
	if err == nil {
		t.Fatal("started on a port in use")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("failure reported after %v", d)
	}
	if !strings.Contains(err.Error(), "listen") {
		t.Fatalf("error does not explain the failure: %v", err)
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestEmbeddedLogsToSlog(t *testing.T) {
	var buf syncBuffer
	e, _ := single(t, func(c *transport.EmbeddedConfig) {
		c.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	e.Shutdown()
	if out := buf.String(); !strings.Contains(out, "level=INFO") || !strings.Contains(out, "Server is ready") {
		t.Fatalf("nats-server log not adapted to slog:\n%s", out)
	}
}

func TestLeafURL(t *testing.T) {
	us, jp := transporttest.PKI(t, "US"), transporttest.PKI(t, "JP")
	e, _ := single(t, func(c *transport.EmbeddedConfig) {
		c.Party, c.Peer = "JP", "US"
		c.LeafListen, c.LeafTLS = "127.0.0.1:0", transporttest.ServerTLS(jp, us)
		c.PeerLeafUser, c.PeerLeafPassword = "us", "pw"
	})
	u := e.LeafURL()
	if !strings.HasPrefix(u, "tls://127.0.0.1:") || portOf(t, u) == 0 {
		t.Fatalf("LeafURL = %q, want tls://127.0.0.1:<actual port>", u)
	}
	c, err := net.DialTimeout("tcp", transporttest.HostPort(u), time.Second)
	if err != nil {
		t.Fatalf("leaf listener not at %s: %v", u, err)
	}
	c.Close()
	if e.LeafConnected() {
		t.Fatal("LeafConnected without a peer")
	}
	plain, _ := single(t, nil)
	if got := plain.LeafURL(); got != "" {
		t.Fatalf("LeafURL without LeafListen = %q", got)
	}
}

func TestConnectInboxes(t *testing.T) {
	e, cfg := single(t, nil)
	for _, c := range []struct {
		name    string
		connect func(context.Context, string, string, string) (string, error)
		prefix  string
	}{
		{"internal", func(ctx context.Context, url, u, p string) (string, error) {
			nc, err := transport.Connect(ctx, url, u, p)
			if err != nil {
				return "", err
			}
			defer nc.Close()
			return nc.NewRespInbox(), nil
		}, transport.InboxPrefix + "."},
		{"border", func(ctx context.Context, url, u, p string) (string, error) {
			nc, err := transport.ConnectBorder(ctx, url, u, p)
			if err != nil {
				return "", err
			}
			defer nc.Close()
			return nc.NewRespInbox(), nil
		}, "_INBOX."},
	} {
		t.Run(c.name, func(t *testing.T) {
			inbox, err := c.connect(testCtx(t), e.ClientURL(), cfg.GatewayUser, cfg.GatewayPassword)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(inbox, c.prefix) {
				t.Fatalf("inbox %q, want prefix %q", inbox, c.prefix)
			}
		})
	}
	t.Run("cancelled_context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := transport.Connect(ctx, e.ClientURL(), cfg.GatewayUser, cfg.GatewayPassword); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
}
