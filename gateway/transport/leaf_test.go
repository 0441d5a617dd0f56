package transport_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// TestLeafCutAndRestore: while the border is cut, cross-border publishes
// fail fast (the outcome is known: nothing stored); after the link comes
// back, the leafnode reconnects by itself and a retry with the same
// Nats-Msg-Id lands exactly once (N-10).
func TestLeafCutAndRestore(t *testing.T) {
	p := transporttest.StartPair(t)
	p.EnsureLayout(t)
	js := jsOf(t, p.ConnectBorder(t, "US"))
	jp := jsOf(t, p.Connect(t, "JP"))
	subj := transport.XMsgSubject("US", "JP", "non_market_practice_report")
	if _, err := js.Publish(testCtx(t), subj, []byte("before"), jetstream.WithMsgID("before")); err != nil {
		t.Fatal(err)
	}

	p.Proxy.Cut()
	transporttest.WaitFor(t, 5*time.Second, func() bool {
		return !p.US.LeafConnected() && !p.JP.LeafConnected()
	}, "leafnode down on both sides")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := js.Publish(ctx, subj, []byte("during"), jetstream.WithMsgID("during"), jetstream.WithRetryAttempts(0))
	if !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish during the cut: err = %v, want no responders or timeout", err)
	}
	if n := streamMsgs(t, jp, transport.StreamIn); n != 1 {
		t.Fatalf("JP CMX_IN has %d messages during the cut, want 1", n)
	}

	p.Proxy.Restore()
	p.WaitLeaf(t)
	var ack *jetstream.PubAck
	transporttest.WaitFor(t, 5*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		ack, err = js.Publish(ctx, subj, []byte("during"), jetstream.WithMsgID("during"), jetstream.WithRetryAttempts(0))
		return err == nil
	}, "publish after restore")
	if ack.Domain != "jp" || ack.Stream != transport.StreamIn {
		t.Fatalf("PubAck = %+v", ack)
	}
	if n := streamMsgs(t, jp, transport.StreamIn); n != 2 {
		t.Fatalf("JP CMX_IN has %d messages after the retry, want 2", n)
	}
}

// TestPairRestart: a restarted peer keeps its inbound stream, takes the
// leafnode back on the same port, and the link carries traffic again.
func TestPairRestart(t *testing.T) {
	p := transporttest.StartPair(t)
	p.EnsureLayout(t)
	subj := transport.XRcptSubject("US", "JP")
	publish := func(id string) *jetstream.PubAck {
		t.Helper()
		var ack *jetstream.PubAck
		var err error
		js := jsOf(t, p.ConnectBorder(t, "US"))
		transporttest.WaitFor(t, 5*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			ack, err = js.Publish(ctx, subj, []byte(id), jetstream.WithMsgID(id), jetstream.WithRetryAttempts(0))
			return err == nil
		}, "publish "+id)
		return ack
	}
	first := publish("r-1")
	for _, restart := range []func(testing.TB){p.RestartJP, p.RestartUS} {
		restart(t)
		p.WaitLeaf(t)
		s, err := jsOf(t, p.Connect(t, "JP")).Stream(testCtx(t), transport.StreamIn)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetMsg(testCtx(t), first.Sequence); err != nil || string(got.Data) != "r-1" {
			t.Fatalf("message after restart: %+v, %v", got, err)
		}
	}
	if ack := publish("r-2"); ack.Sequence != first.Sequence+1 {
		t.Fatalf("PubAck after restarts = %+v, want sequence %d", ack, first.Sequence+1)
	}
}
