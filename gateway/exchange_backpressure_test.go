package gateway_test

import (
	"errors"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/client"
	"github.com/cmx-exchange/cmx/gateway/pair"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// TestOutboxFullIsBackpressure (H-16, N-08, F-06): with the link cut the
// outbox fills up; a full outbox (Discard New) answers 503 outbox-full with
// Retry-After and stores nothing, never dropping what it holds. Once the
// link is back every accepted message is delivered exactly once.
func TestOutboxFullIsBackpressure(t *testing.T) {
	x := start(t, pair.Options{Proxy: true, Tune: func(c *gateway.Config) {
		if c.Party == "US" {
			c.Limits.MaxOutBytes = 96 << 10
		}
	}})
	x.Proxy.Cut()
	transporttest.WaitFor(t, 10*time.Second, func() bool { return !x.US.Node.LeafConnected() }, "leafnode down")

	var accepted []*pair.Sent
	var full *client.Problem
	for len(accepted) < 200 && full == nil {
		m, err := x.Send(x.ctx, "US", envelope.LaborEnforcementNotice, "")
		switch {
		case err == nil:
			accepted = append(accepted, m)
		case errors.As(err, &full):
		default:
			t.Fatalf("submission %d: %v", len(accepted), err)
		}
	}
	if full == nil {
		t.Fatalf("%d messages accepted into a 96 KiB outbox and no 503", len(accepted))
	}
	if full.Status != 503 || full.RetryAfter <= 0 || full.Type != api.ProblemTypePrefix+"outbox-full" {
		t.Errorf("full outbox answered %d %s with Retry-After %v, want 503 outbox-full with Retry-After", full.Status, full.Type, full.RetryAfter)
	}
	if len(accepted) == 0 {
		t.Fatal("nothing accepted before the outbox was full")
	}
	t.Logf("outbox full after %d messages", len(accepted))

	x.Proxy.Restore()
	for _, m := range accepted {
		x.wait(m, api.StatusDelivered, 60*time.Second)
	}
	for _, m := range accepted {
		if n := x.jp[m.Type].Effects(m.ID); n != 1 {
			t.Errorf("%s delivered %d times, want 1", m.ID, n)
		}
	}
	// The outbox keeps every sent envelope for the outage budget as
	// evidence, so draining the backlog frees no space: it stays full until
	// its oldest items age out (README: size limits.max_out_bytes for a
	// budget's worth of traffic).
	if _, err := x.Send(x.ctx, "US", envelope.LaborEnforcementNotice, ""); !errors.As(err, &full) || full.Status != 503 {
		t.Errorf("submission after the drain: %v, want 503 outbox-full", err)
	}
}
