package transport_test

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// TestBorder checks DESIGN §5 on two real servers joined by a real
// leafnode with mutual TLS: what must cross does, nothing else does.
func TestBorder(t *testing.T) {
	p := transporttest.StartPair(t)
	p.EnsureLayout(t)

	t.Run("leaf_bound_to_exchange_account", func(t *testing.T) { testLeafAccount(t, p) })
	t.Run("flow", func(t *testing.T) { testFlow(t, p) })
	t.Run("nothing_else_crosses", func(t *testing.T) { testNothingElseCrosses(t, p) })
	t.Run("N-06_peer_jetstream_api_unreachable", func(t *testing.T) { testPeerAPIUnreachable(t, p) })
	t.Run("N-12_local_publish_to_inbound", func(t *testing.T) { testLocalPublishToInbound(t, p) })
	t.Run("N-03_stream_source_header", func(t *testing.T) { testStreamSourceHeader(t, p) })
	t.Run("N-05_leaf_handshake", func(t *testing.T) { testLeafHandshake(t, p) })
	t.Run("credentials_bound_to_connection_type", func(t *testing.T) { testConnectionTypes(t, p) })
}

// other returns the peer of side in a Pair.
func other(side string) string {
	if side == "US" {
		return "JP"
	}
	return "US"
}

// testLeafAccount: exactly one leafnode, bound to XCHG on both sides (never
// the system account), US the spoke.
func testLeafAccount(t *testing.T, p *transporttest.Pair) {
	for _, c := range []struct {
		side  string
		e     *transport.Embedded
		spoke bool
	}{{"US", p.US, true}, {"JP", p.JP, false}} {
		lz, err := c.e.Server().Leafz(&server.LeafzOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(lz.Leafs) != 1 {
			t.Fatalf("%s has %d leafnodes, want 1", c.side, len(lz.Leafs))
		}
		l := lz.Leafs[0]
		if l.Account != transport.AccountExchange || l.IsSpoke != c.spoke {
			t.Fatalf("%s leafnode = %+v, want account %s, spoke %v", c.side, l, transport.AccountExchange, c.spoke)
		}
	}
}

func testFlow(t *testing.T, p *transporttest.Pair) {
	for _, from := range []string{"US", "JP"} {
		to := other(from)
		t.Run(from+"_to_"+to, func(t *testing.T) {
			js := jsOf(t, p.ConnectBorder(t, from))
			dst := jsOf(t, p.Connect(t, to))
			before := streamMsgs(t, dst, transport.StreamIn)
			for _, subj := range []string{
				transport.XMsgSubject(from, to, "labor_enforcement_notice"),
				transport.XRcptSubject(from, to),
			} {
				ack, err := js.Publish(testCtx(t), subj, []byte("sealed"),
					jetstream.WithMsgID(subj), jetstream.WithExpectStream(transport.StreamIn))
				if err != nil {
					t.Fatalf("publish %s: %v", subj, err)
				}
				if want := strings.ToLower(to); ack.Domain != want || ack.Stream != transport.StreamIn {
					t.Fatalf("PubAck = %+v, want stream %s in domain %q", ack, transport.StreamIn, want)
				}
				s, err := dst.Stream(testCtx(t), transport.StreamIn)
				if err != nil {
					t.Fatal(err)
				}
				got, err := s.GetMsg(testCtx(t), ack.Sequence)
				if err != nil || got.Subject != subj || string(got.Data) != "sealed" {
					t.Fatalf("stored message %d = %+v, %v; want %s", ack.Sequence, got, err, subj)
				}
			}
			if after := streamMsgs(t, dst, transport.StreamIn); after != before+2 {
				t.Fatalf("%s CMX_IN has %d messages, want %d", to, after, before+2)
			}
		})
	}
}

// recorder collects the subjects a catch-all subscription sees.
type recorder struct {
	mu    sync.Mutex
	subjs []string
}

func (r *recorder) add(m *nats.Msg) {
	r.mu.Lock()
	r.subjs = append(r.subjs, m.Subject)
	r.mu.Unlock()
}

func (r *recorder) seen(pred func(string) bool) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.subjs {
		if pred(s) {
			out = append(out, s)
		}
	}
	return out
}

// testNothingElseCrosses publishes, on the sending side, to every subject
// that must stay local while the receiving side listens on ">" and on a
// probe subject that may cross. The leaf connection is ordered, so once the
// probe sent after them has arrived, anything that could cross has crossed.
func testNothingElseCrosses(t *testing.T, p *transporttest.Pair) {
	for _, from := range []string{"US", "JP"} {
		to := other(from)
		t.Run(from+"_to_"+to, func(t *testing.T) {
			rx := p.Connect(t, to)
			var all recorder
			if _, err := rx.Subscribe(">", all.add); err != nil {
				t.Fatal(err)
			}
			probe := transport.XMsgSubject(from, to, "probe")
			probes, err := rx.SubscribeSync(probe)
			if err != nil {
				t.Fatal(err)
			}
			if err := rx.Flush(); err != nil {
				t.Fatal(err)
			}
			tx := p.Connect(t, from)
			waitProbe(t, tx, probes, probe) // interest has propagated
			outBefore := streamMsgs(t, jsOf(t, rx), transport.StreamOut)

			self, peer := strings.ToLower(from), strings.ToLower(to)
			local := []string{
				transport.OutMsgSubject(to, "labor_enforcement_notice"), // our own outbox
				"cmx.out." + self + ".msg.x",                            // the peer's outbox subject
				transport.XMsgSubject(to, from, "x"),                    // the peer's outbound subject, backwards
				"cmx.audit.leaf",
				"$KV." + transport.BucketStatus + ".k",
				"_CMX_INBOX.x.y",
				"$JS." + peer + ".API.INFO",
				"$SYS.REQ.SERVER.PING",
				"other.app",
			}
			for _, subj := range local {
				if err := tx.Publish(subj, []byte("must stay")); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := jsOf(t, tx).Publish(testCtx(t), local[0], []byte("outbox item")); err != nil {
				t.Fatalf("local outbox publish: %v", err)
			}
			waitProbe(t, tx, probes, probe)
			leaked := all.seen(func(s string) bool { return slices.Contains(local, s) })
			if len(leaked) > 0 {
				t.Fatalf("crossed the border %s→%s: %q", from, to, leaked)
			}
			if n := streamMsgs(t, jsOf(t, rx), transport.StreamOut); n != outBefore {
				t.Fatalf("%s CMX_OUT went from %d to %d messages", to, outBefore, n)
			}
			if !p.US.LeafConnected() || !p.JP.LeafConnected() {
				t.Fatal("leafnode dropped (permission violation?)")
			}
		})
	}
}

// waitProbe publishes on probe from tx until sub receives one, then drains sub.
func waitProbe(t *testing.T, tx *nats.Conn, sub *nats.Subscription, probe string) {
	t.Helper()
	transporttest.WaitFor(t, 5*time.Second, func() bool {
		if err := tx.Publish(probe, []byte("probe")); err != nil {
			t.Fatal(err)
		}
		_, err := sub.NextMsg(20 * time.Millisecond)
		return err == nil
	}, "probe "+probe+" crosses")
	for {
		if _, err := sub.NextMsg(50 * time.Millisecond); err != nil {
			return
		}
	}
}

func testPeerAPIUnreachable(t *testing.T, p *transporttest.Pair) {
	for _, from := range []string{"US", "JP"} {
		to := other(from)
		peer := strings.ToLower(to)
		t.Run("from_"+from, func(t *testing.T) {
			for _, conn := range []*nats.Conn{p.Connect(t, from), p.ConnectBorder(t, from)} {
				for _, api := range []string{
					"INFO",
					"STREAM.INFO." + transport.StreamIn,
					"STREAM.INFO." + transport.StreamOut,
					"STREAM.DELETE." + transport.StreamIn,
					"STREAM.PURGE." + transport.StreamIn,
					"STREAM.MSG.DELETE." + transport.StreamIn,
					"CONSUMER.CREATE." + transport.StreamOut,
					"DIRECT.GET." + transport.StreamOut,
					"STREAM.INFO.KV_" + transport.BucketSeen,
					"DIRECT.GET.KV_" + transport.BucketSeen,
				} {
					requestUnanswered(t, conn, "$JS."+peer+".API."+api)
				}
			}
			// The un-prefixed API is answered, by the local server only.
			s, err := jsOf(t, p.Connect(t, from)).Stream(testCtx(t), transport.StreamIn)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := s.CachedInfo().Config.Subjects, []string{"cmx.x." + peer + "." + strings.ToLower(from) + ".>"}; !slices.Equal(got, want) {
				t.Fatalf("$JS.API answered with subjects %q, want the local CMX_IN %q", got, want)
			}
			if _, err := jsOf(t, p.Connect(t, to)).Stream(testCtx(t), transport.StreamIn); err != nil {
				t.Fatalf("%s CMX_IN gone after the peer's API attempts: %v", to, err)
			}
		})
	}
}

func testLocalPublishToInbound(t *testing.T, p *transporttest.Pair) {
	// Our own gateway user has all permissions in XCHG: it can write into
	// CMX_IN as if it were the peer. The border restricts the peer only, so
	// the inbound stage must trust nothing but the opened envelope.
	js := jsOf(t, p.Connect(t, "JP"))
	ack, err := js.Publish(testCtx(t), transport.XMsgSubject("US", "JP", "forged"), []byte("not from US"))
	if err != nil {
		t.Fatalf("local publish to the inbound subject: %v", err)
	}
	if ack.Stream != transport.StreamIn || ack.Domain != "jp" {
		t.Fatalf("PubAck = %+v", ack)
	}
}

func testStreamSourceHeader(t *testing.T, p *transporttest.Pair) {
	const errSourceHdrNotAllowed = 10227 // JSMessageSourceHdrNotAllowedErr
	for _, c := range []struct {
		name string
		conn *nats.Conn
	}{
		{"from_peer", p.ConnectBorder(t, "US")},
		{"local", p.Connect(t, "JP")},
	} {
		t.Run(c.name, func(t *testing.T) {
			js := jsOf(t, c.conn)
			dst := jsOf(t, p.Connect(t, "JP"))
			before := streamMsgs(t, dst, transport.StreamIn)
			msg := nats.NewMsg(transport.XMsgSubject("US", "JP", "sourced"))
			msg.Header.Set("Nats-Stream-Source", "CMX_OUT:us 1 cmx.out.jp.msg.x")
			msg.Data = []byte("x")
			_, err := js.PublishMsg(testCtx(t), msg)
			var apiErr *jetstream.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode != errSourceHdrNotAllowed {
				t.Fatalf("publish with Nats-Stream-Source: err = %v, want API error %d", err, errSourceHdrNotAllowed)
			}
			if after := streamMsgs(t, dst, transport.StreamIn); after != before {
				t.Fatalf("CMX_IN grew from %d to %d", before, after)
			}
		})
	}
}
