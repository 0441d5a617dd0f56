// Package transporttest provides fixtures for tests that need real NATS:
// two embedded servers (US and JP) joined by a leafnode with mutual TLS
// through a proxy that can cut the link, and a polling WaitFor.
package transporttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/gateway/transport"
)

// LeafReconnect is the leafnode reconnect interval of a Pair.
const LeafReconnect = 200 * time.Millisecond

// Pair is two embedded servers: JP accepts the leafnode on 127.0.0.1:0, US
// solicits it through Proxy. Fields change on RestartUS/RestartJP.
type Pair struct {
	US, JP             *transport.Embedded
	Proxy              *Proxy
	USDir, JPDir       string
	USConfig, JPConfig transport.EmbeddedConfig // as last started (actual ports filled in)

	GatewayUser            string // the gateway user on both sides
	USPassword, JPPassword string // its password on US and on JP
	LeafUser, LeafPassword string // US's leafnode credentials at JP
}

// StartPair starts JP, the proxy and US, waits until the leafnode is up on
// both sides and registers their shutdown with t.Cleanup.
func StartPair(t testing.TB) *Pair {
	t.Helper()
	us, jp := PKI(t, "US"), PKI(t, "JP")
	p := &Pair{
		USDir: t.TempDir(), JPDir: t.TempDir(),
		GatewayUser: "gw", USPassword: Secret(t), JPPassword: Secret(t),
		LeafUser: "us", LeafPassword: Secret(t),
	}
	p.JPConfig = transport.EmbeddedConfig{
		Party: "JP", Peer: "US", StoreDir: p.JPDir,
		GatewayUser: p.GatewayUser, GatewayPassword: p.JPPassword,
		LeafListen: "127.0.0.1:0", LeafTLS: ServerTLS(jp, us),
		PeerLeafUser: p.LeafUser, PeerLeafPassword: p.LeafPassword,
		LeafReconnect: LeafReconnect, Logger: debugLogger("JP"),
	}
	p.RestartJP(t)
	t.Cleanup(func() { p.JP.Shutdown() })
	p.Proxy = NewProxy(t, HostPort(p.JP.LeafURL()))
	p.USConfig = transport.EmbeddedConfig{
		Party: "US", Peer: "JP", StoreDir: p.USDir,
		GatewayUser: p.GatewayUser, GatewayPassword: p.USPassword,
		LeafRemote: "tls://" + p.Proxy.Addr(), LeafRemoteTLS: ClientTLS(us, jp),
		LeafRemoteUser: p.LeafUser, LeafRemotePassword: p.LeafPassword,
		LeafReconnect: LeafReconnect, Logger: debugLogger("US"),
	}
	p.RestartUS(t)
	t.Cleanup(func() { p.US.Shutdown() })
	p.WaitLeaf(t)
	return p
}

// RestartUS shuts US down (if running) and starts it again on the same
// store directory and client port. It does not wait for the leafnode.
func (p *Pair) RestartUS(t testing.TB) {
	t.Helper()
	if p.US != nil {
		p.US.Shutdown()
	}
	p.US = start(t, &p.USConfig)
}

// RestartJP shuts JP down (if running) and starts it again on the same
// store directory, client port and leafnode port. It does not wait for the
// leafnode.
func (p *Pair) RestartJP(t testing.TB) {
	t.Helper()
	if p.JP != nil {
		p.JP.Shutdown()
	}
	p.JP = start(t, &p.JPConfig)
	if u, err := url.Parse(p.JP.LeafURL()); err == nil {
		p.JPConfig.LeafListen = u.Host
	}
}

// start starts cfg and records the actual client port in it, retrying a
// port that is still held for a moment after a restart.
func start(t testing.TB, cfg *transport.EmbeddedConfig) *transport.Embedded {
	t.Helper()
	var e *transport.Embedded
	var err error
	WaitFor(t, 10*time.Second, func() bool {
		e, err = transport.StartEmbedded(*cfg)
		return err == nil
	}, "embedded server "+cfg.Party+" starts")
	if u, err := url.Parse(e.ClientURL()); err == nil {
		if port, err := strconv.Atoi(u.Port()); err == nil {
			cfg.Port = port
		}
	}
	return e
}

// WaitLeaf waits until both sides see the leafnode connection.
func (p *Pair) WaitLeaf(t testing.TB) {
	t.Helper()
	WaitFor(t, 10*time.Second, func() bool {
		return p.US.LeafConnected() && p.JP.LeafConnected()
	}, "leafnode US→JP connected")
}

// Layout is the LayoutConfig of party in a Pair: small streams, defaults otherwise.
func Layout(party string) transport.LayoutConfig {
	peer := "JP"
	if party == "JP" {
		peer = "US"
	}
	return transport.LayoutConfig{Party: party, Peer: peer, MaxOutBytes: 64 << 20, MaxInBytes: 64 << 20}
}

// EnsureLayout creates the contract streams and buckets on both sides.
func (p *Pair) EnsureLayout(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, side := range []string{"US", "JP"} {
		if err := transport.EnsureLayout(ctx, jetstreamOf(t, p.Connect(t, side)), Layout(side)); err != nil {
			t.Fatalf("transporttest: EnsureLayout %s: %v", side, err)
		}
	}
}

// Connect opens the gateway's internal connection (transport.Connect) to
// side ("US" or "JP"), closed at cleanup.
func (p *Pair) Connect(t testing.TB, side string) *nats.Conn {
	t.Helper()
	return p.connect(t, side, transport.Connect)
}

// ConnectBorder opens a forwarder connection (transport.ConnectBorder) to
// side, closed at cleanup.
func (p *Pair) ConnectBorder(t testing.TB, side string) *nats.Conn {
	t.Helper()
	return p.connect(t, side, transport.ConnectBorder)
}

type connectFunc func(context.Context, string, string, string, ...nats.Option) (*nats.Conn, error)

func (p *Pair) connect(t testing.TB, side string, connect connectFunc) *nats.Conn {
	t.Helper()
	e, pw := p.US, p.USPassword
	if side == "JP" {
		e, pw = p.JP, p.JPPassword
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := connect(ctx, e.ClientURL(), p.GatewayUser, pw)
	if err != nil {
		t.Fatalf("transporttest: connect %s: %v", side, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func jetstreamOf(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("transporttest: jetstream: %v", err)
	}
	return js
}

// Secret returns a random 32-hex-digit password.
func Secret(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// WaitFor polls cond every 10 ms until it is true, and fails the test with
// msg if it is still false after timeout.
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("transporttest: timed out after %v waiting for: %s", timeout, msg)
		}
		<-tick.C
	}
}

// HostPort strips a URL's scheme: "tls://127.0.0.1:7422" → "127.0.0.1:7422".
func HostPort(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil && u.Host != "" {
		return u.Host
	}
	h, p, _ := net.SplitHostPort(rawURL)
	return net.JoinHostPort(h, p)
}

// debugLogger sends the servers' debug log to stderr when CMX_NATS_DEBUG is
// set, to diagnose a failing border test.
func debugLogger(side string) *slog.Logger {
	if os.Getenv("CMX_NATS_DEBUG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("side", side)
}

// StartSingle starts one party's embedded server on a temporary store with
// the contract layout, and returns its JetStream context (tests of one side).
func StartSingle(t testing.TB, party string) jetstream.JetStream {
	t.Helper()
	peer := map[string]string{"US": "JP", "JP": "US"}[party]
	cfg := transport.EmbeddedConfig{
		Party: party, Peer: peer, StoreDir: t.TempDir(),
		GatewayUser: "gw", GatewayPassword: Secret(t),
	}
	e, err := transport.StartEmbedded(cfg)
	if err != nil {
		t.Fatalf("transporttest: StartEmbedded: %v", err)
	}
	t.Cleanup(e.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := transport.Connect(ctx, e.ClientURL(), cfg.GatewayUser, cfg.GatewayPassword)
	if err != nil {
		t.Fatalf("transporttest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js := jetstreamOf(t, nc)
	if err := transport.EnsureLayout(ctx, js, Layout(party)); err != nil {
		t.Fatalf("transporttest: EnsureLayout: %v", err)
	}
	return js
}

// StreamMessages returns every message of stream, in order.
func StreamMessages(t testing.TB, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("transporttest: stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("transporttest: stream %s info: %v", stream, err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("transporttest: %s seq %d: %v", stream, seq, err)
		}
		out = append(out, m)
	}
	return out
}
