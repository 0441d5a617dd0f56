package inbound

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// fixture is JP's embedded server holding one labor enforcement notice from
// US in CMX_IN, with a consumer to take it (and its redeliveries) by hand.
type fixture struct {
	ctx  context.Context
	js   jetstream.JetStream
	seen *ledger.Store
	id   string
	env  []byte // the envelope's bytes (opened by an expiringOpener)
	seq  uint64 // its CMX_IN sequence
	cons jetstream.Consumer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	js := transporttest.StartSingle(t, "JP")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	kv, err := js.KeyValue(ctx, transport.BucketSeen)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{ctx: ctx, js: js, seen: ledger.Seen(kv), id: envelope.NewID(), env: []byte("an envelope")}
	m := nats.NewMsg(transport.XMsgSubject("us", "jp", string(envelope.LaborEnforcementNotice)))
	m.Data = f.env
	m.Header.Set(jetstream.MsgIDHeader, f.id)
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	f.seq = ack.Sequence
	if f.cons, err = js.CreateOrUpdateConsumer(ctx, transport.StreamIn, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	return f
}

// opener opens the fixture's message until deadline.
func (f *fixture) opener(deadline time.Time) *expiringOpener {
	return &expiringOpener{deadline: deadline, claims: envelope.Claims{
		Issuer: "US", Audience: "JP", ID: f.id, Type: envelope.LaborEnforcementNotice, Sender: "US:DOL-ILAB"}}
}

// next takes the next delivery of the message.
func (f *fixture) next(t *testing.T) jetstream.Msg {
	t.Helper()
	msg, err := f.cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return msg
}
