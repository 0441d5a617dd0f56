package inbound

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/receipts"
)

// expiringOpener opens any envelope as long as it is asked at or before
// deadline, like a message whose exp passes while delivery is retried.
type expiringOpener struct {
	deadline time.Time
	claims   envelope.Claims
}

func (o *expiringOpener) Open(env []byte, now time.Time) (*envelope.Opened, error) {
	if now.After(o.deadline) {
		return nil, &envelope.Error{Reason: envelope.ReasonExpired, Err: envelope.ErrExpired}
	}
	return &envelope.Opened{Claims: o.claims, Inner: []byte("jws"), EnvSHA256: envelope.Digest(env), MsgSHA256: envelope.Digest([]byte("jws"))}, nil
}

type recordingIssuer struct {
	mu     sync.Mutex
	issued []envelope.Receipt
}

func (i *recordingIssuer) record(r *envelope.Receipt) ([]byte, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.issued = append(i.issued, *r)
	return []byte("token"), nil
}

// Issue records the receipts the store took (not those of a lost claim).
func (i *recordingIssuer) Issue(ctx context.Context, r *envelope.Receipt, _ nats.Header, store receipts.Store) ([]byte, error) {
	stored, err := store(ctx, []byte("token"))
	if err != nil {
		return nil, err
	}
	_, _ = i.record(r)
	return stored, nil
}
func (i *recordingIssuer) Send(context.Context, string, string, []byte) error { return nil }
func (i *recordingIssuer) IssueConflict(_ context.Context, r *envelope.Receipt, _ nats.Header) ([]byte, error) {
	return i.record(r)
}
func (i *recordingIssuer) IssueUnopened(_ context.Context, r *envelope.Receipt, _ nats.Header) ([]byte, error) {
	return i.record(r)
}
func (i *recordingIssuer) Resend(context.Context, string, string, map[string]string, nats.Header) (int, error) {
	return 0, nil
}

type okDeliverer struct{ calls int }

func (d *okDeliverer) Deliver(context.Context, string, *api.Delivery, nats.Header) Outcome {
	d.calls++
	return Outcome{}
}

type oneAgency struct{}

func (oneAgency) Resolve(envelope.Type, string) (string, bool) { return "MHLW", true }
func (oneAgency) MarkingAllowed(string) bool                   { return true }

// TestReopenAfterAcceptance: a message we accepted whose exp passes while
// its delivery is retried is delivered when it comes back, and gets a
// delivered receipt, never a rejection after its acceptance.
func TestReopenAfterAcceptance(t *testing.T) {
	f := newFixture(t)
	ctx, id, seen := f.ctx, f.id, f.seen
	accepted := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	if _, err := seen.Create(ctx, ledger.SeenKey("US", id), &ledger.Record{
		ID: id, Direction: api.Inbound, Type: string(envelope.LaborEnforcementNotice), From: "US", To: "JP",
		Seq: f.seq, EnvSHA256: envelope.Digest(f.env), Timeline: []api.Event{ledger.Event(api.StatusAccepted, accepted, "")},
	}); err != nil {
		t.Fatal(err)
	}

	iss, dlv := &recordingIssuer{}, &okDeliverer{}
	now := accepted.Add(48 * time.Hour) // long past exp
	p := New(Config{Party: "JP", Peer: "US", Now: func() time.Time { return now }}, f.js, seen, f.opener(accepted.Add(time.Hour)), iss, nil, dlv, oneAgency{})
	p.handleMsg(ctx, f.next(t))

	if dlv.calls != 1 {
		t.Errorf("agency called %d times, want 1", dlv.calls)
	}
	if len(iss.issued) != 1 || iss.issued[0].Status != envelope.StatusDelivered {
		t.Fatalf("receipts issued %+v, want one delivered", iss.issued)
	}
	rec, _, err := seen.Get(ctx, ledger.SeenKey("US", id))
	if err != nil || rec.Status() != api.StatusDelivered {
		t.Errorf("record status %v (%v), want delivered", rec, err)
	}
}
