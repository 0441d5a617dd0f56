package inbound

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/receipts"
)

// flakyIssuer stores every receipt it issues but fails to send the first
// one, like an outbox that is down for a moment after the claim is written.
type flakyIssuer struct {
	recordingIssuer
	mu     sync.Mutex
	issues int
	sent   map[string]string // status → bytes sent again by Send
}

func (i *flakyIssuer) Issue(ctx context.Context, r *envelope.Receipt, hdr nats.Header, store receipts.Store) ([]byte, error) {
	token := []byte(string(r.Status) + "-signed-" + time.Now().Format(time.RFC3339Nano)) // a re-signature differs
	stored, err := store(ctx, token)
	if err != nil {
		return nil, err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.issues++; i.issues == 1 {
		return nil, errors.New("outbox unavailable")
	}
	return stored, nil
}

func (i *flakyIssuer) Send(_ context.Context, _, status string, token []byte) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.sent[status] = string(token)
	return nil
}

// TestClaimStoredSendFailed: the claim record holds the accepted receipt,
// but sending it failed. The redelivery sends the stored bytes (not a new
// signature), delivers once and records delivered.
func TestClaimStoredSendFailed(t *testing.T) {
	f := newFixture(t)
	ctx, id, seen := f.ctx, f.id, f.seen
	iss, dlv := &flakyIssuer{sent: map[string]string{}}, &okDeliverer{}
	backoff := func(uint64, time.Duration) time.Duration { return 10 * time.Millisecond }
	p := New(Config{Party: "JP", Peer: "US", Backoff: backoff}, f.js, seen, f.opener(time.Now().Add(time.Hour)), iss, nil, dlv, oneAgency{})

	p.handleMsg(ctx, f.next(t)) // claimed with its accepted receipt; the send fails
	if dlv.calls != 0 {
		t.Fatalf("agency called %d times before the accepted receipt went out", dlv.calls)
	}
	rec, _, err := seen.Get(ctx, ledger.SeenKey("US", id))
	if err != nil || !rec.Has(api.StatusAccepted) || rec.Receipts["accepted"] == "" {
		t.Fatalf("claim record %+v (%v): want accepted with its receipt", rec, err)
	}
	stored := rec.Receipts["accepted"]

	p.handleMsg(ctx, f.next(t)) // the redelivery
	if iss.sent["accepted"] != stored {
		t.Fatalf("sent again %q, want the stored accepted receipt %q", iss.sent["accepted"], stored)
	}
	if dlv.calls != 1 {
		t.Fatalf("agency called %d times, want 1", dlv.calls)
	}
	rec, _, err = seen.Get(ctx, ledger.SeenKey("US", id))
	if err != nil || rec.Status() != api.StatusDelivered || rec.Receipts["accepted"] != stored || rec.Receipts["delivered"] == "" {
		t.Fatalf("record %+v (%v): want delivered, the first accepted receipt kept", rec, err)
	}
}
