package outbound_test

import (
	"bytes"
	"context"
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
	ctx := testCtx(t)
	s, err := f.jp.Stream(ctx, transport.StreamIn)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("CMX_IN seq %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
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
		name: "delivered through the watch: never resent nor failed", expiry: 10 * time.Minute,
		steps: []step{
			{at: 30 * time.Second, add: "delivered", wantResends: 0, wantStatus: "delivered", wantAwaiting: 0},
			{at: 5 * time.Minute, wantResends: 0, wantStatus: "delivered", wantAwaiting: 0},
			{at: 2 * time.Hour, wantResends: 0, wantStatus: "delivered", wantAwaiting: 0},
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
			var failedRev uint64
			for _, st := range tc.steps {
				clk.Set(t0.Add(st.at))
				if st.add != "" {
					f.addEvent(t, it.id, st.add, t0.Add(st.at))
					waitAwaiting(t, rec, st.wantAwaiting, "the reconciler sees "+st.add)
				}
				rec.Sweep(testCtx(t))
				f.checkResends(t, it, st.wantResends)
				r, rev, err := f.sent.Get(testCtx(t), it.id)
				if err != nil {
					t.Fatal(err)
				}
				if r.Status() != st.wantStatus {
					t.Fatalf("at +%v: status %s, want %s", st.at, r.Status(), st.wantStatus)
				}
				if n, _ := rec.Awaiting(); n != st.wantAwaiting {
					t.Fatalf("at +%v: Awaiting = %d, want %d", st.at, n, st.wantAwaiting)
				}
				if r.Status() == api.StatusFailed {
					if failedRev != 0 && rev != failedRev {
						t.Fatalf("at +%v: a failed record written again (rev %d → %d)", st.at, failedRev, rev)
					}
					failedRev = rev
				}
			}
			if want := map[bool]int{true: 1, false: 0}[failedRev != 0]; f.events.count(it.id, api.StatusFailed) != want {
				t.Fatalf("failed event recorded %d times, want %d", f.events.count(it.id, api.StatusFailed), want)
			}
		})
	}
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
