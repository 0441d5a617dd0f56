package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// t0 is the fixed time of every event in these tests.
var t0 = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

// testCtx is a context bounded well below the package's time budget.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// buckets starts one embedded server with the contract layout and returns
// its cmx_status and cmx_receipts buckets.
func buckets(t testing.TB) (status, receipts jetstream.KeyValue) {
	t.Helper()
	js := transporttest.StartSingle(t, "US")
	ctx := testCtx(t)
	var err error
	if status, err = js.KeyValue(ctx, transport.BucketStatus); err != nil {
		t.Fatal(err)
	}
	if receipts, err = js.KeyValue(ctx, transport.BucketReceipts); err != nil {
		t.Fatal(err)
	}
	return status, receipts
}

// eventLog records OnEvent calls; safe for concurrent use.
type eventLog struct {
	mu     sync.Mutex
	counts map[string]int // "<id>/<status>" → calls
}

func (l *eventLog) hook(_ context.Context, r *ledger.Record, e api.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = map[string]int{}
	}
	l.counts[r.ID+"/"+e.Status]++
}

func (l *eventLog) snapshot() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.counts))
	for k, v := range l.counts {
		out[k] = v
	}
	return out
}

func record(id, env string, statuses ...string) *ledger.Record {
	r := &ledger.Record{ID: id, Direction: api.Outbound, Type: "labor_enforcement_notice", From: "US", To: "JP", EnvSHA256: env}
	for i, s := range statuses {
		r.Timeline = append(r.Timeline, ledger.Event(s, t0.Add(time.Duration(i)*time.Second), ""))
	}
	return r
}

func statusesOf(r *ledger.Record) []string {
	out := make([]string, len(r.Timeline))
	for i, e := range r.Timeline {
		out[i] = e.Status
	}
	return out
}

func TestCreate(t *testing.T) {
	status, _ := buckets(t)
	s := ledger.Sent(status)
	ctx := testCtx(t)
	if _, err := s.Create(ctx, "taken", record("taken", "first", api.StatusAccepted)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		id      string
		env     string
		wantErr error
		wantEnv string // EnvSHA256 of the returned record
	}{
		{name: "fresh id is stored", id: "fresh", env: "mine", wantEnv: "mine"},
		{name: "taken id returns the existing record", id: "taken", env: "other", wantErr: ledger.ErrExists, wantEnv: "first"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Create(ctx, tc.id, record(tc.id, tc.env, api.StatusAccepted))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Create err = %v, want %v", err, tc.wantErr)
			}
			if got == nil || got.EnvSHA256 != tc.wantEnv {
				t.Fatalf("Create returned %+v, want env %q", got, tc.wantEnv)
			}
			stored, _, err := s.Get(ctx, tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if stored.EnvSHA256 != tc.wantEnv {
				t.Fatalf("stored env = %q, want %q", stored.EnvSHA256, tc.wantEnv)
			}
		})
	}
}

// TestCreateIsAtomicClaim races two Creates of one id, many times: exactly
// one wins, the other gets ErrExists and the winner's record.
func TestCreateIsAtomicClaim(t *testing.T) {
	status, _ := buckets(t)
	s := ledger.Sent(status)
	ctx := testCtx(t)
	for round := range 20 {
		id := fmt.Sprintf("claim-%d", round)
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			got   [2]*ledger.Record
			errs  [2]error
		)
		for i := range 2 {
			wg.Go(func() {
				<-start
				got[i], errs[i] = s.Create(ctx, id, record(id, fmt.Sprintf("contender-%d", i), api.StatusAccepted))
			})
		}
		close(start)
		wg.Wait()
		winner, loser := 0, 1
		if errs[0] != nil {
			winner, loser = 1, 0
		}
		if errs[winner] != nil {
			t.Fatalf("round %d: no Create won: %v, %v", round, errs[0], errs[1])
		}
		if !errors.Is(errs[loser], ledger.ErrExists) {
			t.Fatalf("round %d: loser err = %v, want ErrExists", round, errs[loser])
		}
		want := fmt.Sprintf("contender-%d", winner)
		if got[loser] == nil || got[loser].EnvSHA256 != want || got[winner].EnvSHA256 != want {
			t.Fatalf("round %d: loser got %+v, want the winner's record (%s)", round, got[loser], want)
		}
		stored, _, err := s.Get(ctx, id)
		if err != nil || stored.EnvSHA256 != want {
			t.Fatalf("round %d: stored %+v, %v; want the winner's record", round, stored, err)
		}
	}
}

// TestUpdateUnderContention has 8 writers add distinct events to one record
// at once: compare-and-swap loses none, and OnEvent hears each exactly once.
func TestUpdateUnderContention(t *testing.T) {
	status, _ := buckets(t)
	var log eventLog
	s := ledger.Sent(status)
	s.OnEvent = log.hook
	ctx := testCtx(t)
	const id, writers = "contended", 8
	if _, err := s.Create(ctx, id, record(id, "env", api.StatusAccepted)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			<-start
			_, errs[i] = s.Update(ctx, id, func(r *ledger.Record) bool {
				return r.AddEvent(ledger.Event(fmt.Sprintf("probe-%d", i), t0, ""))
			})
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("Update: %v", err)
	}
	r, _, err := s.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{id + "/" + api.StatusAccepted: 1}
	for i := range writers {
		st := fmt.Sprintf("probe-%d", i)
		if !r.Has(st) {
			t.Errorf("event %s lost; timeline %v", st, statusesOf(r))
		}
		want[id+"/"+st] = 1
	}
	if len(r.Timeline) != writers+1 {
		t.Errorf("timeline has %d events, want %d: %v", len(r.Timeline), writers+1, statusesOf(r))
	}
	if got := log.snapshot(); !maps.Equal(got, want) {
		t.Errorf("OnEvent calls = %v, want %v", got, want)
	}
}

// TestUpdateFrom starts from cached records of every kind; a stale one must
// fall back to a fresh read and lose nothing written in between.
func TestUpdateFrom(t *testing.T) {
	status, _ := buckets(t)
	var log eventLog
	s := ledger.Sent(status)
	s.OnEvent = log.hook
	ctx := testCtx(t)
	tests := []struct {
		name string
		// cached returns the record to start from, after preparing the store.
		cached func(t *testing.T, id string) *ledger.Record
		want   []string // final timeline
	}{{
		name: "fresh cached record",
		cached: func(t *testing.T, id string) *ledger.Record {
			return mustCreate(t, s, id, api.StatusAccepted)
		},
		want: []string{api.StatusAccepted, api.StatusReceived},
	}, {
		name: "stale cached record",
		cached: func(t *testing.T, id string) *ledger.Record {
			r := mustCreate(t, s, id, api.StatusAccepted)
			if _, err := s.Update(ctx, id, func(r *ledger.Record) bool {
				return r.AddEvent(ledger.Event(api.StatusRelayed, t0, ""))
			}); err != nil {
				t.Fatal(err)
			}
			return r
		},
		want: []string{api.StatusAccepted, api.StatusRelayed, api.StatusReceived},
	}, {
		name: "nil cached record",
		cached: func(t *testing.T, id string) *ledger.Record {
			mustCreate(t, s, id, api.StatusAccepted, api.StatusRelayed)
			return nil
		},
		want: []string{api.StatusAccepted, api.StatusRelayed, api.StatusReceived},
	}, {
		name: "cached record without a revision",
		cached: func(t *testing.T, id string) *ledger.Record {
			mustCreate(t, s, id, api.StatusAccepted, api.StatusRelayed)
			return record(id, "env", api.StatusAccepted) // built here, never read
		},
		want: []string{api.StatusAccepted, api.StatusRelayed, api.StatusReceived},
	}}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("from-%d", i)
			cached := tc.cached(t, id)
			var before []string
			if cached != nil {
				before = statusesOf(cached)
			}
			got, err := s.UpdateFrom(ctx, id, cached, func(r *ledger.Record) bool {
				return r.AddEvent(ledger.Event(api.StatusReceived, t0.Add(time.Minute), ""))
			})
			if err != nil {
				t.Fatalf("UpdateFrom: %v", err)
			}
			stored, _, err := s.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(statusesOf(got), tc.want) || !slices.Equal(statusesOf(stored), tc.want) {
				t.Fatalf("timeline returned %v, stored %v, want %v", statusesOf(got), statusesOf(stored), tc.want)
			}
			if cached != nil && !slices.Equal(statusesOf(cached), before) {
				t.Errorf("cached record modified: %v, was %v", statusesOf(cached), before)
			}
			// The result carries its revision: chaining from it writes.
			if _, err := s.UpdateFrom(ctx, id, got, func(r *ledger.Record) bool {
				return r.AddEvent(ledger.Event(api.StatusDelivered, t0.Add(2*time.Minute), ""))
			}); err != nil {
				t.Fatalf("chained UpdateFrom: %v", err)
			}
			if stored, _, err = s.Get(ctx, id); err != nil || !stored.Has(api.StatusDelivered) || len(stored.Timeline) != len(tc.want)+1 {
				t.Fatalf("after chained UpdateFrom: %v, %v", stored, err)
			}
			if n := log.snapshot()[id+"/"+api.StatusReceived]; n != 1 {
				t.Errorf("OnEvent(received) called %d times, want 1", n)
			}
		})
	}
}

func mustCreate(t *testing.T, s *ledger.Store, id string, statuses ...string) *ledger.Record {
	t.Helper()
	r, err := s.Create(testCtx(t), id, record(id, "env", statuses...))
	if err != nil {
		t.Fatalf("Create %s: %v", id, err)
	}
	return r
}

func TestUpdateMissing(t *testing.T) {
	status, _ := buckets(t)
	s := ledger.Sent(status)
	called := false
	_, err := s.Update(testCtx(t), "nobody", func(*ledger.Record) bool { called = true; return true })
	if !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Update of a missing record: err = %v, want ErrNotFound", err)
	}
	if called {
		t.Fatal("fn called for a missing record")
	}
}

// TestOnEvent checks that OnEvent hears each new event once, and nothing on
// writes that add no event.
func TestOnEvent(t *testing.T) {
	status, _ := buckets(t)
	var log eventLog
	s := ledger.Sent(status)
	s.OnEvent = log.hook
	ctx := testCtx(t)
	const id = "hooked"
	addEvent := func(st string) func(*ledger.Record) bool {
		return func(r *ledger.Record) bool { return r.AddEvent(ledger.Event(st, t0, "")) }
	}
	var cached *ledger.Record
	steps := []struct {
		name  string
		write func() error
		want  map[string]int // cumulative OnEvent calls
	}{{
		name:  "create with accepted",
		write: func() (err error) { cached, err = s.Create(ctx, id, record(id, "env", api.StatusAccepted)); return err },
		want:  map[string]int{"accepted": 1},
	}, {
		name: "create again loses",
		write: func() error {
			_, err := s.Create(ctx, id, record(id, "x", api.StatusAccepted))
			return ignore(err, ledger.ErrExists)
		},
		want: map[string]int{"accepted": 1},
	}, {
		name:  "relayed added",
		write: func() error { _, err := s.Update(ctx, id, addEvent(api.StatusRelayed)); return err },
		want:  map[string]int{"accepted": 1, "relayed": 1},
	}, {
		name:  "relayed again is a no-op",
		write: func() error { _, err := s.Update(ctx, id, addEvent(api.StatusRelayed)); return err },
		want:  map[string]int{"accepted": 1, "relayed": 1},
	}, {
		name: "a write that adds no event",
		write: func() error {
			_, err := s.Update(ctx, id, func(r *ledger.Record) bool { r.Seq = 42; return true })
			return err
		},
		want: map[string]int{"accepted": 1, "relayed": 1},
	}, {
		name:  "received from a stale cache",
		write: func() error { _, err := s.UpdateFrom(ctx, id, cached, addEvent(api.StatusReceived)); return err },
		want:  map[string]int{"accepted": 1, "relayed": 1, "received": 1},
	}, {
		name:  "received again from the stale cache",
		write: func() error { _, err := s.UpdateFrom(ctx, id, cached, addEvent(api.StatusReceived)); return err },
		want:  map[string]int{"accepted": 1, "relayed": 1, "received": 1},
	}}
	for _, st := range steps {
		if err := st.write(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		want := map[string]int{}
		for k, v := range st.want {
			want[id+"/"+k] = v
		}
		if got := log.snapshot(); !maps.Equal(got, want) {
			t.Fatalf("%s: OnEvent calls = %v, want %v", st.name, got, want)
		}
	}
	r, _, err := s.Get(ctx, id)
	if err != nil || r.Seq != 42 || !slices.Equal(statusesOf(r), []string{"accepted", "relayed", "received"}) {
		t.Fatalf("final record %+v, %v", r, err)
	}
}

func ignore(err, target error) error {
	if errors.Is(err, target) {
		return nil
	}
	if err == nil {
		return errors.New("expected " + target.Error())
	}
	return err
}

func TestRecordStatus(t *testing.T) {
	ev := func(st string) api.Event { return ledger.Event(st, t0, "") }
	tests := []struct {
		name         string
		timeline     []api.Event
		wantStatus   string
		wantTerminal bool
	}{
		{name: "empty", wantStatus: ""},
		{name: "accepted", timeline: []api.Event{ev("accepted")}, wantStatus: "accepted"},
		{name: "relayed after accepted", timeline: []api.Event{ev("accepted"), ev("relayed")}, wantStatus: "relayed"},
		{name: "delivered before received", timeline: []api.Event{ev("accepted"), ev("delivered"), ev("received")}, wantStatus: "delivered", wantTerminal: true},
		{name: "received before relayed", timeline: []api.Event{ev("accepted"), ev("received"), ev("relayed")}, wantStatus: "received"},
		{name: "rejected beats delivered", timeline: []api.Event{ev("rejected"), ev("delivered")}, wantStatus: "rejected", wantTerminal: true},
		{name: "delivered then rejected", timeline: []api.Event{ev("delivered"), ev("rejected")}, wantStatus: "rejected", wantTerminal: true},
		{name: "a late delivered receipt beats failed", timeline: []api.Event{ev("failed"), ev("accepted"), ev("delivered")}, wantStatus: "delivered", wantTerminal: true},
		{name: "failed beats received", timeline: []api.Event{ev("accepted"), ev("received"), ev("failed")}, wantStatus: "failed", wantTerminal: true},
		{name: "unknown status ranks below all", timeline: []api.Event{ev("accepted"), ev("mystery")}, wantStatus: "accepted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &ledger.Record{Timeline: tc.timeline}
			if got := r.Status(); got != tc.wantStatus {
				t.Errorf("Status() = %q, want %q", got, tc.wantStatus)
			}
			if got := r.Terminal(); got != tc.wantTerminal {
				t.Errorf("Terminal() = %v, want %v", got, tc.wantTerminal)
			}
		})
	}
}

func TestRecordAddEvent(t *testing.T) {
	tests := []struct {
		name         string
		add          []string
		wantChanged  []bool
		wantTimeline []string
	}{{
		name:         "out of order receipts are kept in rank order",
		add:          []string{"accepted", "delivered", "received"},
		wantChanged:  []bool{true, true, true},
		wantTimeline: []string{"accepted", "received", "delivered"},
	}, {
		name:         "a status already there is not added again",
		add:          []string{"accepted", "relayed", "relayed", "accepted"},
		wantChanged:  []bool{true, true, false, false},
		wantTimeline: []string{"accepted", "relayed"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r ledger.Record
			for i, st := range tc.add {
				if got := r.AddEvent(ledger.Event(st, t0.Add(time.Duration(i)*time.Second), "")); got != tc.wantChanged[i] {
					t.Errorf("AddEvent(%s) #%d = %v, want %v", st, i, got, tc.wantChanged[i])
				}
			}
			if got := statusesOf(&r); !slices.Equal(got, tc.wantTimeline) {
				t.Errorf("timeline = %v, want %v", got, tc.wantTimeline)
			}
		})
	}
}

func TestReceiptsPut(t *testing.T) {
	_, kv := buckets(t)
	rc := ledger.NewReceipts(kv)
	ctx := testCtx(t)
	if _, _, err := rc.Put(ctx, "recv", "m1", "accepted", []byte("first")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		role      string
		msg       string
		status    string
		token     string
		wantBytes string
		wantFresh bool
	}{
		{name: "second put keeps the first bytes", role: "recv", msg: "m1", status: "accepted", token: "second", wantBytes: "first"},
		{name: "same bytes again", role: "recv", msg: "m1", status: "accepted", token: "first", wantBytes: "first"},
		{name: "other status is its own receipt", role: "recv", msg: "m1", status: "delivered", token: "d", wantBytes: "d", wantFresh: true},
		{name: "other role is its own receipt", role: "conflict", msg: "m1", status: "accepted", token: "mine", wantBytes: "mine", wantFresh: true},
		{name: "other message is its own receipt", role: "recv", msg: "m2", status: "accepted", token: "m2", wantBytes: "m2", wantFresh: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, fresh, err := rc.Put(ctx, tc.role, tc.msg, tc.status, []byte(tc.token))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.wantBytes || fresh != tc.wantFresh {
				t.Fatalf("Put = %q, fresh %v; want %q, fresh %v", got, fresh, tc.wantBytes, tc.wantFresh)
			}
			stored, err := rc.Get(ctx, tc.role, tc.msg, tc.status)
			if err != nil || string(stored) != tc.wantBytes {
				t.Fatalf("Get = %q, %v; want %q", stored, err, tc.wantBytes)
			}
		})
	}
	if _, err := rc.Get(ctx, "recv", "m1", "rejected"); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Get of a missing receipt: err = %v, want ErrNotFound", err)
	}
}

func TestReceiptsQuarantine(t *testing.T) {
	_, kv := buckets(t)
	rc := ledger.NewReceipts(kv)
	ctx := testCtx(t)
	for _, token := range []string{"first", "second"} {
		if err := rc.Quarantine(ctx, "digest-1", []byte(token)); err != nil {
			t.Fatalf("Quarantine(%s): %v", token, err)
		}
	}
	e, err := kv.Get(ctx, "quarantine.digest-1")
	if err != nil || string(e.Value()) != "first" {
		t.Fatalf("quarantined %v, %v; want the first bytes", e, err)
	}
	for _, st := range []string{"accepted", "delivered", "rejected"} {
		if _, err := rc.Get(ctx, "recv", "digest-1", st); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("a quarantined receipt answers as a %s receipt: %v", st, err)
		}
	}
}

// TestAddReceipt: a receipt and the event it attests go into the record in
// one write; the first stored bytes win and a repeat writes nothing.
func TestAddReceipt(t *testing.T) {
	kv, _ := buckets(t)
	st := ledger.Seen(kv)
	ctx := testCtx(t)
	created, err := st.Create(ctx, "US.m1", &ledger.Record{ID: "m1", Direction: api.Inbound, Timeline: []api.Event{}})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		cached    *ledger.Record
		status    string
		token     string
		wantBytes string
		wantRevs  uint64 // writes this step adds
	}{
		{name: "first receipt, from the cached record", cached: created, status: "accepted", token: "a1", wantBytes: "a1", wantRevs: 1},
		{name: "re-signed repeat keeps the first bytes", status: "accepted", token: "a2", wantBytes: "a1"},
		{name: "stale cached record falls back to a read", cached: created, status: "delivered", token: "d1", wantBytes: "d1", wantRevs: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, before, err := st.Get(ctx, "US.m1")
			if err != nil {
				t.Fatal(err)
			}
			rec, stored, err := st.AddReceipt(ctx, "US.m1", tc.cached, tc.status, []byte(tc.token), ledger.Event(tc.status, at, ""))
			if err != nil {
				t.Fatal(err)
			}
			if string(stored) != tc.wantBytes || rec.Receipts[tc.status] != tc.wantBytes || !rec.Has(tc.status) {
				t.Fatalf("AddReceipt = %q, record %v; want %q with its event", stored, rec.Receipts, tc.wantBytes)
			}
			_, after, err := st.Get(ctx, "US.m1")
			if err != nil {
				t.Fatal(err)
			}
			if after-before != tc.wantRevs {
				t.Fatalf("%d writes, want %d", after-before, tc.wantRevs)
			}
		})
	}
}
