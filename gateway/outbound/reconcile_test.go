package outbound_test

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/cmx-exchange/cmx/certs/certstest"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/outbound"
	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// t0 is when the messages of these tests were accepted.
var t0 = certstest.Now

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// clock is a controllable clock, safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// fixture is a Pair with the layout on both sides, US's two connections
// (internal and border) and JP's internal one.
type fixture struct {
	pair   *transporttest.Pair
	us     jetstream.JetStream // US internal: CMX_OUT, buckets
	border jetstream.JetStream // US border: publishes to JP
	jp     jetstream.JetStream // JP internal: CMX_IN
	status jetstream.KeyValue  // US cmx_status
	sent   *ledger.Store
	events eventLog
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	p := transporttest.StartPair(t)
	p.EnsureLayout(t)
	f := &fixture{pair: p, us: jsOf(t, p.Connect(t, "US")), border: jsOf(t, p.ConnectBorder(t, "US")), jp: jsOf(t, p.Connect(t, "JP"))}
	var err error
	if f.status, err = f.us.KeyValue(testCtx(t), transport.BucketStatus); err != nil {
		t.Fatal(err)
	}
	f.sent = ledger.Sent(f.status)
	f.sent.OnEvent = f.events.hook
	return f
}

func jsOf(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// eventLog counts OnEvent calls per "<id>/<status>".
type eventLog struct {
	mu     sync.Mutex
	counts map[string]int
}

func (l *eventLog) hook(_ context.Context, r *ledger.Record, e api.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = map[string]int{}
	}
	l.counts[r.ID+"/"+e.Status]++
}

func (l *eventLog) count(id, status string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[id+"/"+status]
}

// item is a real sealed message as the Sender puts it in the outbox.
type item struct {
	id, typ  string
	envelope []byte // what crosses the border
	inner    []byte // evidence kept in the outbox only
}

func sealItem(t testing.TB) item {
	t.Helper()
	typ := envelope.NonMarketPracticeReport
	c := &envelope.Claims{
		Issuer: "US", Audience: "JP", ID: envelope.NewID(),
		IssuedAt: t0.Unix(), Expiry: t0.Add(time.Hour).Unix(),
		Type: typ, Schema: typ.Schema(), Sender: "US:USTR", Recipient: "JP:METI",
		Body: envelope.Example(typ),
	}
	s, err := envelope.Seal(c, certstest.NewPKI(t, "US").Signing, certstest.NewPKI(t, "JP").Encryption.Cert)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return item{id: c.ID, typ: string(typ), envelope: s.Envelope, inner: s.Inner}
}

// publish puts it into US's CMX_OUT as the Sender does and returns its sequence.
func (f *fixture) publish(t testing.TB, it item) uint64 {
	t.Helper()
	m := nats.NewMsg(transport.OutMsgSubject("jp", it.typ))
	m.Data = append(slices.Clip(it.envelope), it.inner...)
	m.Header.Set(transport.HeaderEnvelopeLength, strconv.Itoa(len(it.envelope)))
	ack, err := f.us.PublishMsg(testCtx(t), m, jetstream.WithMsgID(it.id), jetstream.WithExpectStream(transport.StreamOut))
	if err != nil {
		t.Fatalf("outbox publish: %v", err)
	}
	return ack.Sequence
}

// record creates it's ledger record: accepted at t0, expiring at exp.
func (f *fixture) record(t testing.TB, it item, seq uint64, exp time.Time) {
	t.Helper()
	_, err := f.sent.Create(testCtx(t), it.id, &ledger.Record{
		ID: it.id, Direction: api.Outbound, Type: it.typ, From: "US", To: "JP", Seq: seq,
		EnvSHA256: envelope.Digest(it.envelope), MsgSHA256: envelope.Digest(it.inner), Expiry: exp.Unix(),
		Timeline: []api.Event{ledger.Event(api.StatusAccepted, t0, "")},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// inbound returns JP's CMX_IN, in order.
func (f *fixture) inbound(t testing.TB) []*jetstream.RawStreamMsg {
	t.Helper()
	return transporttest.StreamMessages(t, f.jp, transport.StreamIn)
}

// runReconciler runs r until the test ends, and waits for it then.
func runReconciler(t *testing.T, r *outbound.Reconciler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Reconciler.Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Reconciler.Run did not return after its context ended")
		}
	})
}

// TestReconcilerSweep drives the reconciler's clock through the life of one
// message (catalogue F-10, F-17; invariant 2): resend without an accepted
// receipt after ResendAfter, doubling, at most MaxResends times; failed once
// after exp + leeway; nothing more for a message that a receipt moved on.
func TestReconcilerSweep(t *testing.T) {
	const (
		resendAfter = time.Minute
		leeway      = time.Minute
	)
	type step struct {
		at           time.Duration // clock, after acceptance
		add          string        // status recorded in the ledger first, seen through the watch
		wantResends  int           // resends JP's CMX_IN holds so far
		wantStatus   string
		wantAwaiting int
	}
	tests := []struct {
		name   string
		expiry time.Duration // after acceptance
		steps  []step
	}{{
		name: "no receipt: resent after ResendAfter, doubling, at most MaxResends", expiry: time.Hour,
		steps: []step{
			{at: 30 * time.Second, wantResends: 0, wantStatus: "accepted", wantAwaiting: 1},
			{at: resendAfter, wantResends: 0, wantStatus: "accepted", wantAwaiting: 1},
			{at: resendAfter + time.Second, wantResends: 1, wantStatus: "accepted", wantAwaiting: 1},
			{at: resendAfter + time.Second + 2*resendAfter, wantResends: 1, wantStatus: "accepted", wantAwaiting: 1},
			{at: resendAfter + 2*time.Second + 2*resendAfter, wantResends: 2, wantStatus: "accepted", wantAwaiting: 1},
			{at: 50 * time.Minute, wantResends: 2, wantStatus: "accepted", wantAwaiting: 1},
		},
	}, {
		name: "expired: failed once, before any due resend", expiry: 5 * time.Minute,
		steps: []step{
			{at: 5*time.Minute + leeway, wantResends: 1, wantStatus: "accepted", wantAwaiting: 1},
			{at: 8*time.Minute + time.Second, wantResends: 1, wantStatus: "failed", wantAwaiting: 0},
			{at: 20 * time.Minute, wantResends: 1, wantStatus: "failed", wantAwaiting: 0},
		},
	}, {
		name: "delivered through the watch: no more resends, never failed", expiry: 10 * time.Minute,
		steps: []step{
			{at: 2 * time.Minute, wantResends: 1, wantStatus: "accepted", wantAwaiting: 1},
			{at: 3 * time.Minute, add: "delivered", wantResends: 1, wantStatus: "delivered", wantAwaiting: 0},
			{at: 9 * time.Minute, wantResends: 1, wantStatus: "delivered", wantAwaiting: 0},
			{at: 2 * time.Hour, wantResends: 1, wantStatus: "delivered", wantAwaiting: 0},
		},
	}, {
		name: "received after a resend: no more resends, failed without a terminal receipt", expiry: 10 * time.Minute,
		steps: []step{
			{at: 2 * time.Minute, wantResends: 1, wantStatus: "accepted", wantAwaiting: 1},
			{at: 3 * time.Minute, add: "received", wantResends: 1, wantStatus: "received", wantAwaiting: 0},
			{at: 9 * time.Minute, wantResends: 1, wantStatus: "received", wantAwaiting: 0},
			{at: 11*time.Minute + time.Second, wantResends: 1, wantStatus: "failed", wantAwaiting: 0},
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			it := sealItem(t)
			f.record(t, it, f.publish(t, it), t0.Add(tc.expiry))
			clk := &clock{t: t0}
			fwd := outbound.NewForwarder(outbound.ForwarderConfig{Party: "US", Peer: "JP"}, f.us, f.border, f.sent)
			rec := outbound.NewReconciler(outbound.ReconcilerConfig{
				Interval: time.Hour, ResendAfter: resendAfter, MaxResends: 2, Leeway: leeway, Now: clk.Now,
			}, f.status, f.sent, fwd)
			runReconciler(t, rec)
			waitAwaiting(t, rec, 1, "the reconciler sees the message")
			var failedRev uint64 // revision of the record when it was first seen failed
			for _, st := range tc.steps {
				clk.Set(t0.Add(st.at))
				if st.add != "" {
					f.addEvent(t, it.id, st.add, t0.Add(st.at))
					waitAwaiting(t, rec, st.wantAwaiting, "the reconciler sees "+st.add)
				}
				rec.Sweep(testCtx(t))
				f.checkResends(t, it, st.wantResends)
				status, rev := f.statusOf(t, it.id)
				if status != st.wantStatus {
					t.Fatalf("at +%v: status %s, want %s", st.at, status, st.wantStatus)
				}
				if n, _ := rec.Awaiting(); n != st.wantAwaiting {
					t.Fatalf("at +%v: Awaiting = %d, want %d", st.at, n, st.wantAwaiting)
				}
				if status == api.StatusFailed && failedRev == 0 {
					failedRev = rev
				} else if failedRev != 0 && rev != failedRev {
					t.Fatalf("at +%v: a failed record written again (rev %d → %d)", st.at, failedRev, rev)
				}
			}
			want := 0
			if failedRev != 0 {
				want = 1
			}
			if n := f.events.count(it.id, api.StatusFailed); n != want {
				t.Fatalf("failed event recorded %d times, want %d", n, want)
			}
		})
	}
}

// statusOf is the ledger status of id and the record's revision.
func (f *fixture) statusOf(t testing.TB, id string) (string, uint64) {
	t.Helper()
	r, rev, err := f.sent.Get(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return r.Status(), rev
}

func waitAwaiting(t *testing.T, r *outbound.Reconciler, want int, what string) {
	t.Helper()
	transporttest.WaitFor(t, 5*time.Second, func() bool { n, _ := r.Awaiting(); return n == want }, what)
}

func (f *fixture) addEvent(t testing.TB, id, status string, at time.Time) {
	t.Helper()
	if _, err := f.sent.Update(testCtx(t), id, func(r *ledger.Record) bool {
		return r.AddEvent(ledger.Event(status, at, ""))
	}); err != nil {
		t.Fatal(err)
	}
}

// checkResends checks that JP's CMX_IN holds exactly n resends of it: its
// envelope, byte for byte, under "<id>.resend.1" … "<id>.resend.<n>".
func (f *fixture) checkResends(t testing.TB, it item, n int) {
	t.Helper()
	got := f.inbound(t)
	if len(got) != n {
		t.Fatalf("JP's CMX_IN holds %d messages, want %d resends", len(got), n)
	}
	for i, m := range got {
		want := it.id + ".resend." + strconv.Itoa(i+1)
		if id := m.Header.Get(jetstream.MsgIDHeader); id != want {
			t.Errorf("resend %d has Nats-Msg-Id %q, want %q", i+1, id, want)
		}
		if !bytes.Equal(m.Data, it.envelope) {
			t.Errorf("resend %d carries other bytes than the envelope (%d bytes, want %d)", i+1, len(m.Data), len(it.envelope))
		}
		if subj := transport.XMsgSubject("us", "jp", it.typ); m.Subject != subj {
			t.Errorf("resend %d on %q, want %q", i+1, m.Subject, subj)
		}
		for k := range m.Header {
			if strings.HasPrefix(k, "Cmx-") {
				t.Errorf("resend %d carries outbox header %s across the border", i+1, k)
			}
		}
	}
}

// relayLog counts OnRelayed calls per message id.
type relayLog struct {
	mu     sync.Mutex
	counts map[string]int
}

func (l *relayLog) hook(_ context.Context, id string, _ nats.Header) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = map[string]int{}
	}
	l.counts[id]++
}

func (l *relayLog) snapshot() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.counts))
	for k, v := range l.counts {
		out[k] = v
	}
	return out
}

// runForwarder runs fwd until the test ends, and waits for it then.
func runForwarder(t *testing.T, fwd *outbound.Forwarder) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fwd.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Forwarder.Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Forwarder.Run did not return after its context ended")
		}
	})
}

// publishReceipt puts a receipt-like item for JP into US's CMX_OUT.
func (f *fixture) publishReceipt(t testing.TB, id string, token []byte) {
	t.Helper()
	m := nats.NewMsg(transport.OutRcptSubject("jp"))
	m.Data = token
	if _, err := f.us.PublishMsg(testCtx(t), m, jetstream.WithMsgID(id), jetstream.WithExpectStream(transport.StreamOut)); err != nil {
		t.Fatalf("outbox publish: %v", err)
	}
}

// settled reports whether the forwarder's consumer has nothing pending.
func (f *fixture) settled(t testing.TB) bool {
	t.Helper()
	c, err := f.us.Consumer(testCtx(t), transport.StreamOut, "forward")
	if err != nil {
		return false
	}
	info, err := c.Info(testCtx(t))
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

// ackFloor is the outbox sequence up to which the forwarder acked everything.
func (f *fixture) ackFloor(t testing.TB) uint64 {
	t.Helper()
	c, err := f.us.Consumer(testCtx(t), transport.StreamOut, "forward")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return info.AckFloor.Stream
}

// TestForwarder moves outbox items to the peer with their Nats-Msg-Id and
// only their envelope; across a cut of the link nothing is lost and, after
// Restore, everything arrives exactly once (DESIGN §3 step 2, invariant 2).
func TestForwarder(t *testing.T) {
	f := newFixture(t)
	var relayed relayLog
	fwd := outbound.NewForwarder(outbound.ForwarderConfig{
		Party: "US", Peer: "JP", Batch: 4, PubTimeout: time.Second, OnRelayed: relayed.hook,
	}, f.us, f.border, f.sent)
	runForwarder(t, fwd)

	want := map[string][]byte{} // Nats-Msg-Id → data JP must hold
	wantSubj := map[string]string{}
	wantRelayed := map[string]int{}
	phase := func(name string) {
		for range 5 {
			it := sealItem(t)
			f.publish(t, it)
			want[it.id], wantSubj[it.id], wantRelayed[it.id] = it.envelope, transport.XMsgSubject("us", "jp", it.typ), 1
		}
		rid := envelope.NewID() + ".accepted"
		token := []byte("receipt " + name)
		f.publishReceipt(t, rid, token)
		want[rid], wantSubj[rid] = token, transport.XRcptSubject("us", "jp")
	}

	phase("link up")
	transporttest.WaitFor(t, 10*time.Second, func() bool { return len(f.inbound(t)) == len(want) && f.settled(t) },
		"the first items reach JP's CMX_IN")
	if !fwd.LinkUp() {
		t.Fatal("LinkUp is false after the peer acknowledged")
	}

	f.pair.Proxy.Cut()
	transporttest.WaitFor(t, 5*time.Second, func() bool { return !f.pair.US.LeafConnected() && !f.pair.JP.LeafConnected() },
		"the leafnode is down")
	phase("link cut")
	transporttest.WaitFor(t, 10*time.Second, func() bool { return !fwd.LinkUp() }, "a forward fails while the link is cut")
	if n := len(f.inbound(t)); n != 6 {
		t.Fatalf("JP's CMX_IN holds %d messages during the cut, want 6", n)
	}
	if floor := f.ackFloor(t); floor != 6 {
		t.Fatalf("outbox acked up to seq %d during the cut, want 6: items acked without the peer's PubAck", floor)
	}

	f.pair.Proxy.Restore()
	f.pair.WaitLeaf(t)
	transporttest.WaitFor(t, 15*time.Second, func() bool { return len(f.inbound(t)) >= len(want) && f.settled(t) },
		"every item reaches JP's CMX_IN after Restore")

	f.checkArrived(t, want, wantSubj)
	if got := relayed.snapshot(); !maps.Equal(got, wantRelayed) {
		t.Errorf("OnRelayed calls %v, want each message once and no receipt: %v", got, wantRelayed)
	}
	if n := fwd.Forwarded(); n != 12 {
		t.Errorf("Forwarded = %d, want 12", n)
	}
}

// checkArrived checks that JP's CMX_IN holds each item of want exactly
// once: its Nats-Msg-Id, its bytes, its subject, no outbox header.
func (f *fixture) checkArrived(t *testing.T, want map[string][]byte, wantSubj map[string]string) {
	t.Helper()
	got := f.inbound(t)
	if len(got) != len(want) {
		t.Fatalf("JP's CMX_IN holds %d messages, want %d, each once", len(got), len(want))
	}
	for _, m := range got {
		id := m.Header.Get(jetstream.MsgIDHeader)
		data, ok := want[id]
		switch {
		case !ok:
			t.Errorf("unexpected or repeated Nats-Msg-Id %q in JP's CMX_IN", id)
		case !bytes.Equal(m.Data, data):
			t.Errorf("%s: other bytes than the envelope (%d bytes, want %d)", id, len(m.Data), len(data))
		case m.Subject != wantSubj[id]:
			t.Errorf("%s on %q, want %q", id, m.Subject, wantSubj[id])
		}
		delete(want, id) // a second copy is reported as unexpected
		for k := range m.Header {
			if strings.HasPrefix(k, "Cmx-") {
				t.Errorf("%s carries outbox header %s across the border", id, k)
			}
		}
	}
}

// TestForwarderConsumerGone: when its outbox consumer disappears under it
// (an operator deletes it), Run returns an error, so the node stops loudly
// and a restart recreates the consumer; it must neither panic nor idle.
func TestForwarderConsumerGone(t *testing.T) {
	f := newFixture(t)
	fwd := outbound.NewForwarder(outbound.ForwarderConfig{Party: "US", Peer: "JP"}, f.us, f.border, f.sent)
	done := make(chan error, 1)
	go func() { done <- fwd.Run(testCtx(t)) }()
	transporttest.WaitFor(t, 5*time.Second, func() bool {
		c, err := f.us.Consumer(testCtx(t), transport.StreamOut, "forward")
		return err == nil && c.CachedInfo().NumWaiting > 0
	}, "the forwarder pulls from its consumer")
	if err := f.us.DeleteConsumer(testCtx(t), transport.StreamOut, "forward"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("Forwarder.Run returned nil after its consumer was deleted")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Forwarder.Run still runs after its consumer was deleted")
	}
}
