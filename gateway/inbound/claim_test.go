package inbound

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/receipts"
	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
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
	js := transporttest.StartSingle(t, "JP")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, transport.BucketSeen)
	if err != nil {
		t.Fatal(err)
	}
	id := envelope.NewID()
	op := &expiringOpener{deadline: time.Now().Add(time.Hour), claims: envelope.Claims{
		Issuer: "US", Audience: "JP", ID: id, Type: envelope.LaborEnforcementNotice, Sender: "US:DOL-ILAB"}}
	m := nats.NewMsg(transport.XMsgSubject("us", "jp", string(envelope.LaborEnforcementNotice)))
	m.Data = []byte("an envelope")
	m.Header.Set(jetstream.MsgIDHeader, id)
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	seen := ledger.Seen(kv)
	iss, dlv := &flakyIssuer{sent: map[string]string{}}, &okDeliverer{}
	backoff := func(uint64, time.Duration) time.Duration { return 10 * time.Millisecond }
	p := New(Config{Party: "JP", Peer: "US", Backoff: backoff}, js, seen, op, iss, nil, dlv, oneAgency{})
	cons, err := js.CreateOrUpdateConsumer(ctx, transport.StreamIn, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	next := func() jetstream.Msg {
		t.Helper()
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}

	p.handleMsg(ctx, next()) // claimed with its accepted receipt; the send fails
	if dlv.calls != 0 {
		t.Fatalf("agency called %d times before the accepted receipt went out", dlv.calls)
	}
	rec, _, err := seen.Get(ctx, ledger.SeenKey("US", id))
	if err != nil || !rec.Has(api.StatusAccepted) || rec.Receipts["accepted"] == "" {
		t.Fatalf("claim record %+v (%v): want accepted with its receipt", rec, err)
	}
	stored := rec.Receipts["accepted"]

	p.handleMsg(ctx, next()) // the redelivery
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
