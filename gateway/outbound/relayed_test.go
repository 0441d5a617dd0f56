package outbound_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/outbound"
	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// sentStore starts one server with the contract layout and returns US's
// outbound ledger.
func sentStore(t *testing.T) *ledger.Store {
	t.Helper()
	js := transporttest.StartSingle(t, "US")
	kv, err := js.KeyValue(testCtx(t), transport.BucketStatus)
	if err != nil {
		t.Fatal(err)
	}
	return ledger.Sent(kv)
}

// createSent records message id, accepted at t0, with further statuses a
// second apart.
func createSent(t *testing.T, sent *ledger.Store, id string, more ...string) {
	t.Helper()
	r := &ledger.Record{ID: id, Direction: api.Outbound, From: "US", To: "JP", EnvSHA256: "env",
		Timeline: []api.Event{ledger.Event(api.StatusAccepted, t0, "")}}
	for i, st := range more {
		r.AddEvent(ledger.Event(st, t0.Add(time.Duration(i+1)*time.Second), ""))
	}
	if _, err := sent.Create(testCtx(t), id, r); err != nil {
		t.Fatal(err)
	}
}

// timelineOf returns the statuses of id's record, its relayed time (zero
// if none) and its revision.
func timelineOf(t *testing.T, sent *ledger.Store, id string) ([]string, time.Time, uint64) {
	t.Helper()
	r, rev, err := sent.Get(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var relayed time.Time
	for _, e := range r.Timeline {
		out = append(out, e.Status)
		if e.Status == api.StatusRelayed {
			relayed = e.At
		}
	}
	return out, relayed, rev
}

// runRelayed runs r until stop is called or the test ends; stop waits for
// Run to return.
func runRelayed(t *testing.T, r *outbound.Relayed) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Relayed.Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Relayed.Run did not return after its context ended")
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestRelayedWrittenAloneAfterHold: an event no receipt write carried is
// written alone once the hold passes, at the time noted, also when a
// receipt was written before the PubAck was seen (the timeline stays in
// order); a message without a record is left alone.
func TestRelayedWrittenAloneAfterHold(t *testing.T) {
	sent := sentStore(t)
	r := outbound.NewRelayed(outbound.RelayedConfig{Hold: 50 * time.Millisecond}, sent)
	runRelayed(t, r)
	ctx := testCtx(t)
	tests := []struct {
		name string
		have []string // statuses after accepted when the PubAck is seen
		want []string
	}{
		{name: "no receipt yet", want: []string{api.StatusAccepted, api.StatusRelayed}},
		{name: "receipt before the PubAck", have: []string{api.StatusReceived},
			want: []string{api.StatusAccepted, api.StatusRelayed, api.StatusReceived}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("alone-%d", i)
			createSent(t, sent, id, tc.have...)
			at := t0.Add(time.Minute)
			r.Note(ctx, id, at)
			r.Note(ctx, id, at.Add(time.Second)) // the forwarder sent it again: the first time stays
			var got []string
			var relayed time.Time
			transporttest.WaitFor(t, 5*time.Second, func() bool {
				got, relayed, _ = timelineOf(t, sent, id)
				return !relayed.IsZero()
			}, "relayed written alone")
			if !slices.Equal(got, tc.want) || !relayed.Equal(at) {
				t.Fatalf("timeline %v, relayed at %v; want %v at %v", got, relayed, tc.want, at)
			}
		})
	}
	r.Note(ctx, "no-record", t0)
	transporttest.WaitFor(t, 5*time.Second, func() bool { return r.Len() == 0 }, "event for a message without a record taken")
	if _, _, err := sent.Get(ctx, "no-record"); err == nil {
		t.Fatal("a record was made up for a message without one")
	}
}

// TestRelayedCarried: an event a receipt write carried is not written
// again. One writer writes in hold order, so once the event noted after it
// is written, the carried one would have been.
func TestRelayedCarried(t *testing.T) {
	sent := sentStore(t)
	r := outbound.NewRelayed(outbound.RelayedConfig{Hold: 100 * time.Millisecond, Workers: 1}, sent)
	runRelayed(t, r)
	ctx := testCtx(t)
	createSent(t, sent, "carried")
	createSent(t, sent, "later")
	_, _, rev := timelineOf(t, sent, "carried")
	at := t0.Add(time.Minute)
	r.Note(ctx, "carried", at)
	if got, ok := r.Held("carried"); !ok || !got.Equal(at) {
		t.Fatalf("Held = %v, %v; want %v", got, ok, at)
	}
	r.Carried("carried")
	if _, ok := r.Held("carried"); ok {
		t.Fatal("a carried event is still held")
	}
	r.Note(ctx, "later", at)
	transporttest.WaitFor(t, 5*time.Second, func() bool {
		_, relayed, _ := timelineOf(t, sent, "later")
		return !relayed.IsZero()
	}, "the later event written alone")
	if got, _, rev2 := timelineOf(t, sent, "carried"); rev2 != rev {
		t.Fatalf("carried event written again: %v, revision %d → %d", got, rev, rev2)
	}
}

// TestRelayedBounded: a burst while no receipt comes holds at most Max
// events; the others are written at once. Stopping writes what is held, and
// an event noted after the stop is written by Note itself: none is lost.
func TestRelayedBounded(t *testing.T) {
	sent := sentStore(t)
	const held, burst = 8, 60
	r := outbound.NewRelayed(outbound.RelayedConfig{Hold: time.Hour, Max: held, Workers: 2}, sent)
	stop := runRelayed(t, r)
	ctx := testCtx(t)
	ids := make([]string, burst+1)
	for i := range ids {
		ids[i] = fmt.Sprintf("burst-%d", i)
		createSent(t, sent, ids[i])
	}
	for i, id := range ids[:burst] {
		r.Note(ctx, id, t0.Add(time.Duration(i)*time.Millisecond))
		if n := r.Len(); n > held {
			t.Fatalf("%d events held after %d noted, want at most %d", n, i+1, held)
		}
	}
	relayedCount := func() int {
		n := 0
		for _, id := range ids {
			if _, relayed, _ := timelineOf(t, sent, id); !relayed.IsZero() {
				n++
			}
		}
		return n
	}
	transporttest.WaitFor(t, 10*time.Second, func() bool { return relayedCount() == burst-held }, "the events past Max written at once")
	if r.Len() != held {
		t.Fatalf("%d events held, want %d", r.Len(), held)
	}
	stop()
	if n := relayedCount(); n != burst {
		t.Fatalf("%d of %d events written after the stop, want all", n, burst)
	}
	r.Note(ctx, ids[burst], t0)
	if _, relayed, _ := timelineOf(t, sent, ids[burst]); !relayed.Equal(t0) {
		t.Fatalf("event noted after the stop: relayed at %v, want %v", relayed, t0)
	}
}
