package deploy_test

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// borderRig is both parties' NATS servers started from the committed
// configs, each with the cmx layout, and a gateway-user client on each.
type borderRig struct {
	root      string
	pki       map[string]*certs.PKI
	nats      map[string]*natsServer
	nc        map[string]*nats.Conn // user gw in XCHG; default _INBOX prefix, so replies could cross if allowed
	passwords map[string]string
	from      []string          // the sides whose probes must fail
	blocked   func(string) bool // whether a forbidden subject is one this scenario must stop
}

// TestBorder proves DESIGN §5 from the peer's side of the leafnode, on the
// servers started from deploy/us and deploy/jp. The border has two layers:
// JP's permissions for the US leafnode user (allow lists, both directions)
// and US's deny_imports/deny_exports. Neither side can trust the other's
// configuration, so each layer is also run alone: a careless or hostile
// US without deny lists must still reach nothing at JP, and a careless or
// hostile JP without permissions must still reach no JetStream, KV, system,
// outbox, audit or private-inbox subject at US.
func TestBorder(t *testing.T) {
	stripUSDeny := func(o *server.Options) {
		for _, r := range o.LeafNode.Remotes {
			r.DenyImports, r.DenyExports = nil, nil
		}
	}
	stripJPPerms := func(o *server.Options) {
		for _, u := range o.Users {
			if _, leaf := u.AllowedConnectionTypes["LEAFNODE"]; leaf {
				u.Permissions = nil
			}
		}
	}
	deny := transport.DenyImports("US", "JP")
	for _, sc := range []struct {
		name    string
		mutate  map[string]func(*server.Options)
		from    []string
		blocked func(string) bool
	}{
		{"as_committed", nil, []string{"US", "JP"}, func(string) bool { return true }},
		{"JP_permissions_alone", map[string]func(*server.Options){"US": stripUSDeny}, []string{"US", "JP"}, func(string) bool { return true }},
		{"US_deny_lists_alone", map[string]func(*server.Options){"JP": stripJPPerms}, []string{"JP"},
			func(subj string) bool {
				return slices.ContainsFunc(deny, func(f string) bool { return subjectMatches(f, subj) })
			}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			r := newBorderRig(t, sc.mutate)
			r.from, r.blocked = sc.from, sc.blocked
			t.Run("leafnode_bound_to_XCHG", r.testBoundToXCHG)
			t.Run("inbound_subjects_cross", r.testFlow)
			t.Run("N-06_peer_jetstream_api_unreachable", r.testPeerAPI)
			t.Run("N-12_nothing_but_inbound_subjects_crosses", r.testNothingElseCrosses)
			if sc.mutate == nil {
				t.Run("N-05_leafnode_refused", r.testLeafRefused)
				t.Run("border_identity_is_leafnode_only", r.testMappedUserNotClient)
			}
		})
	}
}

func newBorderRig(t *testing.T, mutate map[string]func(*server.Options)) *borderRig {
	t.Helper()
	r := &borderRig{root: copyDeploy(t), pki: map[string]*certs.PKI{}, nc: map[string]*nats.Conn{},
		passwords: map[string]string{"US": rand.Text(), "JP": rand.Text()}}
	r.pki["US"] = writePKI(t, filepath.Join(r.root, dirUS, "pki"), "US")
	r.pki["JP"] = writePKI(t, filepath.Join(r.root, dirJP, "pki"), "JP")
	exchangePublicFiles(t, r.root)
	us, jp := bootNATS(t, r.root, r.passwords, mutate)
	r.nats = map[string]*natsServer{"US": us, "JP": jp}
	for party, n := range r.nats {
		r.nc[party] = connectGW(t, n, r.passwords[party])
		err := transport.EnsureLayout(testCtx(t), jsOf(t, r.nc[party]), transport.LayoutConfig{Party: party, Peer: peerOf(party)})
		if err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// subjectMatches reports whether subj matches the filter (with * and >).
func subjectMatches(filter, subj string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subj, ".")
	for i, tok := range f {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s) || (tok != "*" && tok != s[i]):
			return false
		}
	}
	return len(f) == len(s)
}

func connectGW(t *testing.T, n *natsServer, password string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.clientURL(), nats.UserInfo("gw", password), nats.Name("deploy-test"))
	if err != nil {
		t.Fatalf("%s: connect as gw: %v", n.name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func jsOf(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func (r *borderRig) testBoundToXCHG(t *testing.T) {
	for party, n := range r.nats {
		lz, err := n.srv.Leafz(nil)
		if err != nil || len(lz.Leafs) != 1 {
			t.Fatalf("%s leafz: %+v, %v", party, lz, err)
		}
		if got := lz.Leafs[0].Account; got != transport.AccountExchange {
			t.Fatalf("%s: leafnode bound to account %q, want %s", party, got, transport.AccountExchange)
		}
	}
}

// testFlow is the positive control: a JetStream publish on the peer's
// inbound subject is stored by the peer's CMX_IN and its PubAck comes back.
func (r *borderRig) testFlow(t *testing.T) {
	for _, from := range []string{"US", "JP"} {
		to := peerOf(from)
		ack, err := jsOf(t, r.nc[from]).Publish(testCtx(t), transport.XMsgSubject(from, to, "labor_enforcement_notice"),
			[]byte("sealed"), jetstream.WithExpectStream(transport.StreamIn))
		if err != nil {
			t.Fatalf("%s→%s publish: %v", from, to, err)
		}
		if ack.Domain != strings.ToLower(to) || ack.Stream != transport.StreamIn {
			t.Fatalf("%s→%s PubAck %+v, want %s in domain %q", from, to, ack, transport.StreamIn, strings.ToLower(to))
		}
	}
}

// testPeerAPI: N-06. Every JetStream API request on the peer's domain goes
// unanswered: no stream info, no reads, no consumers, no delete or purge.
func (r *borderRig) testPeerAPI(t *testing.T) {
	apis := []string{
		"INFO", "STREAM.LIST", "STREAM.NAMES",
		"STREAM.INFO.CMX_IN", "STREAM.INFO.CMX_OUT", "STREAM.INFO.CMX_AUDIT", "STREAM.INFO.KV_cmx_seen",
		"STREAM.MSG.GET.CMX_IN", "DIRECT.GET.CMX_IN", "DIRECT.GET.KV_cmx_status",
		"CONSUMER.CREATE.CMX_IN", "CONSUMER.CREATE.CMX_IN.spy", "CONSUMER.CREATE.CMX_IN.spy.cmx.x.>",
		"CONSUMER.DURABLE.CREATE.CMX_IN.spy", "CONSUMER.DELETE.CMX_IN.spy",
		"STREAM.DELETE.CMX_IN", "STREAM.PURGE.CMX_IN", "STREAM.MSG.DELETE.CMX_IN", "STREAM.UPDATE.CMX_IN",
		"STREAM.CREATE.SPY",
	}
	for _, from := range r.from {
		peer := strings.ToLower(peerOf(from))
		t.Run("from_"+from, func(t *testing.T) {
			before := streamMsgs(t, r.nc[peerOf(from)])
			for _, api := range apis {
				requestUnanswered(t, r.nc[from], "$JS."+peer+".API."+api)
			}
			js, err := jetstream.NewWithDomain(r.nc[from], peer)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.Stream(shortCtx(t), transport.StreamIn); err == nil {
				t.Fatalf("read the peer's %s through domain %q", transport.StreamIn, peer)
			}
			if _, err := js.CreateConsumer(shortCtx(t), transport.StreamIn, jetstream.ConsumerConfig{Durable: "spy"}); err == nil {
				t.Fatal("created a consumer on the peer's stream")
			}
			after := streamMsgs(t, r.nc[peerOf(from)])
			if !equalCounts(before, after) {
				t.Fatalf("the peer's streams changed: %v → %v", before, after)
			}
			checkNoConsumers(t, r.nc[peerOf(from)])
		})
	}
}

// shortCtx bounds a request that is expected to go unanswered.
func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	t.Cleanup(cancel)
	return ctx
}

// requestUnanswered asserts that a request gets no answer at all.
func requestUnanswered(t *testing.T, nc *nats.Conn, subj string) {
	t.Helper()
	msg, err := nc.Request(subj, []byte(`{"seq":1}`), 300*time.Millisecond)
	if err == nil {
		t.Fatalf("%s answered: %s", subj, msg.Data)
	}
	if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("%s: %v, want no responders or a timeout", subj, err)
	}
}

// streamMsgs counts the messages of every stream of nc's account.
func streamMsgs(t *testing.T, nc *nats.Conn) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	l := jsOf(t, nc).ListStreams(testCtx(t))
	for info := range l.Info() {
		out[info.Config.Name] = info.State.Msgs
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func equalCounts(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func checkNoConsumers(t *testing.T, nc *nats.Conn) {
	t.Helper()
	l := jsOf(t, nc).ListStreams(testCtx(t))
	for info := range l.Info() {
		if info.State.Consumers != 0 {
			t.Fatalf("stream %s has %d consumers", info.Config.Name, info.State.Consumers)
		}
	}
}

// testNothingElseCrosses: N-12. From each side, everything but the peer's
// inbound subjects is published; the receiving side listens on ">" and
// stores nothing of it. A JetStream publish on the inbound subject, acked
// by the peer, comes last: the leafnode is ordered, so anything that could
// have crossed has crossed by then.
func (r *borderRig) testNothingElseCrosses(t *testing.T) {
	for _, from := range r.from {
		to := peerOf(from)
		t.Run(from+"_to_"+to, func(t *testing.T) {
			self, peer := strings.ToLower(from), strings.ToLower(to)
			forbidden := []string{
				transport.XMsgSubject(to, from, "labor_enforcement_notice"), // the peer's outbound direction
				"cmx.out." + self + ".msg.labor_enforcement_notice",         // the peer's outbox
				"cmx.out." + peer + ".msg.labor_enforcement_notice",         // our own outbox
				transport.OutRcptSubject(self),
				"cmx.audit.leaf",
				"$KV." + transport.BucketStatus + ".forged",
				"$KV." + transport.BucketSeen + ".forged",
				"$JS." + peer + ".API.STREAM.PURGE." + transport.StreamIn,
				"$JS.EVENT.ADVISORY.FORGED",
				"_CMX_INBOX.x.y",
				"$SYS.REQ.SERVER.PING",
				"other.app",
			}
			var seen recorder
			rx := r.nc[to]
			if _, err := rx.Subscribe(">", seen.add); err != nil {
				t.Fatal(err)
			}
			// Replies cross and no stream stores them: the probe for interest.
			probe := "_INBOX.deploy-test.probe"
			transporttest.WaitFor(t, 10*time.Second, func() bool {
				_ = r.nc[from].Publish(probe, nil)
				return seen.has(probe)
			}, "interest of the receiving side has crossed")
			before := streamMsgs(t, rx)
			for _, subj := range forbidden {
				if err := r.nc[from].Publish(subj, []byte("must not cross")); err != nil {
					t.Fatal(err)
				}
			}
			last := transport.XMsgSubject(from, to, "probe")
			if _, err := jsOf(t, r.nc[from]).Publish(testCtx(t), last, []byte("last")); err != nil {
				t.Fatalf("inbound publish after the forbidden ones: %v", err)
			}
			forbidden = slices.DeleteFunc(forbidden, func(s string) bool { return !r.blocked(s) })
			if leaked := seen.any(forbidden); len(leaked) > 0 {
				t.Fatalf("crossed %s→%s: %q", from, to, leaked)
			}
			after := streamMsgs(t, rx)
			before[transport.StreamIn]++ // the final probe, and nothing else
			if !equalCounts(before, after) {
				t.Fatalf("%s's streams went from %v to %v", to, before, after)
			}
		})
	}
}

// recorder keeps the subjects a subscription saw.
type recorder struct {
	mu    sync.Mutex
	subjs []string
}

func (r *recorder) add(m *nats.Msg) {
	r.mu.Lock()
	r.subjs = append(r.subjs, m.Subject)
	r.mu.Unlock()
}

func (r *recorder) has(subj string) bool { return len(r.any([]string{subj})) > 0 }

func (r *recorder) any(subjs []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.subjs {
		if slices.Contains(subjs, s) {
			out = append(out, s)
		}
	}
	return out
}

// testMappedUserNotClient: the border user has no password, because its
// certificate is the credential; it must not be usable as a client.
func (r *borderRig) testMappedUserNotClient(t *testing.T) {
	for _, pass := range []string{"", "guess"} {
		nc, err := nats.Connect(r.nats["JP"].clientURL(), nats.UserInfo("urn:cmx:party:US:gateway", pass), nats.NoReconnect())
		if err == nil {
			nc.Close()
			t.Fatalf("connected as the border user with password %q", pass)
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("err = %v, want an authorization violation", err)
		}
	}
}
