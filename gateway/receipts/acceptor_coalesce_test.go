package receipts_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/certs/certstest"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/receipts"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// heldRelayed is a receipts.RelayedEvents holding relayed events by id.
type heldRelayed struct {
	mu      sync.Mutex
	held    map[string]time.Time
	carried []string
}

func (h *heldRelayed) hold(id string, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held == nil {
		h.held = map[string]time.Time{}
	}
	h.held[id] = at
}

func (h *heldRelayed) Held(id string) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	at, ok := h.held[id]
	return at, ok
}

func (h *heldRelayed) Carried(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.held, id)
	h.carried = append(h.carried, id)
}

func (h *heldRelayed) carriedIDs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.carried)
}

// relayedAt is when the relayed events of these tests happened.
var relayedAt = certstest.Now.Add(time.Second)

// revision returns the KV revision of id's record and the record.
func revision(t testing.TB, s *side, id string) (*ledger.Record, uint64) {
	t.Helper()
	r, rev, err := s.sent.Get(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return r, rev
}

func timeline(r *ledger.Record) []string {
	out := make([]string, len(r.Timeline))
	for i, e := range r.Timeline {
		out[i] = e.Status
	}
	return out
}

// acceptAsync runs Accept in the background; the channel gets its error.
func acceptAsync(ctx context.Context, acc *receipts.Acceptor, token []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := acc.Accept(ctx, token)
		done <- err
	}()
	return done
}

func waitErr(t testing.TB, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Accept did not return")
		return nil
	}
}

// TestAcceptTogether: an accepted receipt waits (Hold) for the delivered
// one, and the two are written in one update of the record, which also
// carries the message's held relayed event; a delivered receipt that does
// not match ends the wait and is refused alone. Without coalescing, each
// receipt costs a write.
func TestAcceptTogether(t *testing.T) {
	s := startSide(t, "US")
	relayed := &heldRelayed{}
	acc := receipts.NewAcceptor(receipts.AcceptorConfig{Verifier: usVerifier(t), Now: fixedNow,
		Relayed: relayed, Hold: time.Minute}, s.sent, s.store)
	ctx := testCtx(t)
	jp := certstest.NewPKI(t, "JP")
	tests := []struct {
		name         string
		relayed      bool // a relayed event is held for the message
		mismatch     bool // the delivered receipt attests another envelope
		wantTimeline []string
	}{
		{name: "accepted and delivered", wantTimeline: []string{api.StatusAccepted, api.StatusReceived, api.StatusDelivered}},
		{name: "with the relayed event", relayed: true,
			wantTimeline: []string{api.StatusAccepted, api.StatusRelayed, api.StatusReceived, api.StatusDelivered}},
		{name: "delivered does not match", mismatch: true, wantTimeline: []string{api.StatusAccepted, api.StatusReceived}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, id := sentMessage(t, s)
			if tc.relayed {
				relayed.hold(id, relayedAt)
			}
			_, rev := revision(t, s, id)
			accepted := signReceipt(t, receiptFor(env, id, envelope.StatusAccepted), jp.Signing)
			d := receiptFor(env, id, envelope.StatusDelivered)
			if tc.mismatch {
				d.EnvSHA256 = seal(t).EnvSHA256
			}
			delivered := signReceipt(t, d, jp.Signing)
			first := acceptAsync(ctx, acc, accepted)
			transporttest.WaitFor(t, 5*time.Second, func() bool { return acc.Holding() == 1 }, "accepted receipt waits")
			_, err := acc.Accept(ctx, delivered)
			if wantErr := error(nil); tc.mismatch {
				wantErr = receipts.ErrMismatch
				if !errors.Is(err, wantErr) {
					t.Fatalf("Accept(delivered) = %v, want %v", err, wantErr)
				}
			} else if err != nil {
				t.Fatalf("Accept(delivered): %v", err)
			}
			if err := waitErr(t, first); err != nil {
				t.Fatalf("Accept(accepted): %v", err)
			}
			r, rev2 := revision(t, s, id)
			if rev2 != rev+1 {
				t.Errorf("record written %d times, want once", rev2-rev)
			}
			if got := timeline(r); !slices.Equal(got, tc.wantTimeline) {
				t.Errorf("timeline %v, want %v", got, tc.wantTimeline)
			}
			if r.Receipts["accepted"] != string(accepted) || (r.Receipts["delivered"] == string(delivered)) == tc.mismatch {
				t.Errorf("receipts stored: %d (accepted kept %v)", len(r.Receipts), r.Receipts["accepted"] == string(accepted))
			}
			if got := slices.Contains(relayed.carriedIDs(), id); got != tc.relayed {
				t.Errorf("relayed event carried: %v, want %v", got, tc.relayed)
			}
		})
	}
}

// TestAcceptHoldMax: past HoldMax waiting receipts, an accepted receipt is
// written at once, so the callers waiting never starve the delivered
// receipts they wait for.
func TestAcceptHoldMax(t *testing.T) {
	s := startSide(t, "US")
	acc := receipts.NewAcceptor(receipts.AcceptorConfig{Verifier: usVerifier(t), Now: fixedNow,
		Hold: time.Minute, HoldMax: 1}, s.sent, s.store)
	ctx := testCtx(t)
	jp := certstest.NewPKI(t, "JP")
	envA, a := sentMessage(t, s)
	envB, b := sentMessage(t, s)
	waiting := acceptAsync(ctx, acc, signReceipt(t, receiptFor(envA, a, envelope.StatusAccepted), jp.Signing))
	transporttest.WaitFor(t, 5*time.Second, func() bool { return acc.Holding() == 1 }, "first accepted receipt waits")
	if err := waitErr(t, acceptAsync(ctx, acc, signReceipt(t, receiptFor(envB, b, envelope.StatusAccepted), jp.Signing))); err != nil {
		t.Fatalf("Accept past HoldMax: %v", err)
	}
	if r, _ := revision(t, s, b); r.Status() != api.StatusReceived {
		t.Fatalf("message past HoldMax is %s, want received", r.Status())
	}
	if _, err := acc.Accept(ctx, signReceipt(t, receiptFor(envA, a, envelope.StatusDelivered), jp.Signing)); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, waiting); err != nil {
		t.Fatal(err)
	}
}

// TestAcceptCarriesRelayed: the first receipt write of a message carries
// its held relayed event (one write for both), a receipt that changes
// nothing writes nothing and carries nothing, and a message with no held
// event gets none.
func TestAcceptCarriesRelayed(t *testing.T) {
	s := startSide(t, "US")
	relayed := &heldRelayed{}
	acc := receipts.NewAcceptor(receipts.AcceptorConfig{Verifier: usVerifier(t), Now: fixedNow, Relayed: relayed}, s.sent, s.store)
	ctx := testCtx(t)
	jp := certstest.NewPKI(t, "JP")
	env, id := sentMessage(t, s)
	relayed.hold(id, relayedAt)
	_, rev := revision(t, s, id)
	accepted := signReceipt(t, receiptFor(env, id, envelope.StatusAccepted), jp.Signing)
	steps := []struct {
		name         string
		token        []byte
		hold         bool // a relayed event is held again before the step
		wantWrites   uint64
		wantTimeline []string
		wantCarried  int
	}{
		{name: "accepted carries relayed", token: accepted, wantWrites: 1, wantCarried: 1,
			wantTimeline: []string{api.StatusAccepted, api.StatusRelayed, api.StatusReceived}},
		{name: "the same receipt again writes nothing", token: accepted, hold: true, wantCarried: 1,
			wantTimeline: []string{api.StatusAccepted, api.StatusRelayed, api.StatusReceived}},
	}
	for _, st := range steps {
		if st.hold {
			relayed.hold(id, relayedAt.Add(time.Hour))
		}
		if _, err := acc.Accept(ctx, st.token); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		r, rev2 := revision(t, s, id)
		if rev2-rev != st.wantWrites || !slices.Equal(timeline(r), st.wantTimeline) || len(relayed.carriedIDs()) != st.wantCarried {
			t.Fatalf("%s: %d writes, timeline %v, carried %v; want %d, %v, %d", st.name, rev2-rev, timeline(r),
				relayed.carriedIDs(), st.wantWrites, st.wantTimeline, st.wantCarried)
		}
		if r.Timeline[1].Status == api.StatusRelayed && !r.Timeline[1].At.Equal(relayedAt) {
			t.Fatalf("%s: relayed at %v, want %v", st.name, r.Timeline[1].At, relayedAt)
		}
		rev = rev2
	}
	env2, other := sentMessage(t, s)
	if _, err := acc.Accept(ctx, signReceipt(t, receiptFor(env2, other, envelope.StatusAccepted), jp.Signing)); err != nil {
		t.Fatal(err)
	}
	if r, _ := revision(t, s, other); r.Has(api.StatusRelayed) {
		t.Fatalf("relayed event made up: %v", timeline(r))
	}
}

// TestAcceptFromRecent: a receipt write starts from the record kept in
// Recent and keeps its result there; a stale copy (another writer wrote
// since) loses nothing.
func TestAcceptFromRecent(t *testing.T) {
	s := startSide(t, "US")
	recent := ledger.NewRecent(16)
	acc := receipts.NewAcceptor(receipts.AcceptorConfig{Verifier: usVerifier(t), Now: fixedNow, Recent: recent}, s.sent, s.store)
	ctx := testCtx(t)
	jp := certstest.NewPKI(t, "JP")
	tests := []struct {
		name         string
		stale        bool // another writer adds relayed after the copy was kept
		wantTimeline []string
	}{
		{name: "fresh copy", wantTimeline: []string{api.StatusAccepted, api.StatusReceived}},
		{name: "stale copy", stale: true, wantTimeline: []string{api.StatusAccepted, api.StatusRelayed, api.StatusReceived}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, id := sentMessage(t, s)
			r, _ := revision(t, s, id)
			recent.Put(r)
			if tc.stale {
				if _, err := s.sent.Update(ctx, id, func(r *ledger.Record) bool {
					return r.AddEvent(ledger.Event(api.StatusRelayed, relayedAt, ""))
				}); err != nil {
					t.Fatal(err)
				}
			}
			token := signReceipt(t, receiptFor(env, id, envelope.StatusAccepted), jp.Signing)
			if _, err := acc.Accept(ctx, token); err != nil {
				t.Fatal(err)
			}
			stored, rev := revision(t, s, id)
			if !slices.Equal(timeline(stored), tc.wantTimeline) || stored.Receipts["accepted"] != string(token) {
				t.Fatalf("timeline %v, receipt stored %v; want %v", timeline(stored), stored.Receipts["accepted"] == string(token), tc.wantTimeline)
			}
			kept := recent.Get(id)
			if kept == nil || !slices.Equal(timeline(kept), tc.wantTimeline) {
				t.Fatalf("Recent keeps %v, want the record written", kept)
			}
			// The kept copy is current: the next update starts from it and writes once.
			if _, err := s.sent.UpdateFrom(ctx, id, kept, func(r *ledger.Record) bool {
				return r.AddEvent(ledger.Event(api.StatusFailed, now, ""))
			}); err != nil {
				t.Fatal(err)
			}
			if _, rev2 := revision(t, s, id); rev2 != rev+1 {
				t.Fatalf("update from the kept copy: revision %d → %d, want one write", rev, rev2)
			}
		})
	}
}

// TestAcceptConcurrent accepts both receipts of many messages from many
// goroutines at once, each twice (re-signed): every receipt is stored with
// its event, one of the two copies, and no message is written more than
// once per receipt status.
func TestAcceptConcurrent(t *testing.T) {
	s := startSide(t, "US")
	acc := receipts.NewAcceptor(receipts.AcceptorConfig{Verifier: usVerifier(t), Now: fixedNow,
		Recent: ledger.NewRecent(64), Hold: 5 * time.Millisecond, HoldMax: 4}, s.sent, s.store)
	ctx := testCtx(t)
	jp := certstest.NewPKI(t, "JP")
	const msgs = 12
	type sentMsg struct {
		id     string
		tokens [][]byte // accepted, delivered, each twice (re-signed)
	}
	var all []sentMsg
	for range msgs {
		env, id := sentMessage(t, s)
		m := sentMsg{id: id}
		for _, st := range []envelope.Status{envelope.StatusAccepted, envelope.StatusDelivered} {
			for range 2 {
				m.tokens = append(m.tokens, signReceipt(t, receiptFor(env, id, st), jp.Signing))
			}
		}
		all = append(all, m)
	}
	before := lastRevision(t, s)
	var wg sync.WaitGroup
	errs := make(chan error, msgs*4)
	for _, m := range all {
		for _, tok := range m.tokens {
			wg.Go(func() {
				if _, err := acc.Accept(ctx, tok); err != nil {
					errs <- fmt.Errorf("%s: %w", m.id, err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, m := range all {
		r, _ := revision(t, s, m.id)
		if !slices.Equal(timeline(r), []string{api.StatusAccepted, api.StatusReceived, api.StatusDelivered}) {
			t.Errorf("%s: timeline %v", m.id, timeline(r))
		}
		if a, d := r.Receipts["accepted"], r.Receipts["delivered"]; (a != string(m.tokens[0]) && a != string(m.tokens[1])) ||
			(d != string(m.tokens[2]) && d != string(m.tokens[3])) {
			t.Errorf("%s: stored receipts are not ones accepted", m.id)
		}
	}
	// Revisions are the bucket's sequence: count the writes made.
	if got, want := lastRevision(t, s)-before, uint64(2*msgs); got > want {
		t.Errorf("%d writes for %d messages, want at most one per receipt status: %d", got, msgs, want)
	}
}

// lastRevision is the last revision written to cmx_status.
func lastRevision(t testing.TB, s *side) uint64 {
	t.Helper()
	st, err := s.js.Stream(testCtx(t), "KV_cmx_status")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}
