package inbound_test

import (
	"context"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/gateway/inbound"
	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// TestRunConsumerGone: when one of its consumers disappears under it (an
// operator deletes it), Run returns an error, so the node stops loudly and a
// restart recreates the consumer, instead of running on without it.
func TestRunConsumerGone(t *testing.T) {
	for _, name := range []string{"inbound-msg", "inbound-rcpt"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			js := transporttest.StartSingle(t, "JP")
			p := inbound.New(inbound.Config{Party: "JP", Peer: "US", Workers: 1}, js, nil, nil, nil, nil, nil, nil)
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			transporttest.WaitFor(t, 5*time.Second, func() bool {
				c, err := js.Consumer(ctx, transport.StreamIn, name)
				return err == nil && c.CachedInfo().NumWaiting > 0
			}, "the processor pulls from "+name)
			if err := js.DeleteConsumer(ctx, transport.StreamIn, name); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err == nil {
					t.Error("Run returned nil after its consumer was deleted")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run still runs after its consumer was deleted")
			}
		})
	}
}
