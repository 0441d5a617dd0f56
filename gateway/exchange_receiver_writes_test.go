package gateway_test

import (
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/pair"
)

// TestReceiverWritesPerMessage counts the durable writes the receiving
// gateway makes to its ledger for each message delivered by webhook: the
// claim, which holds the accepted decision and its receipt, and the
// delivered event with its receipt. Nothing goes to cmx_receipts, which
// keeps only receipts that must never answer for a message.
func TestReceiverWritesPerMessage(t *testing.T) {
	x := start(t, pair.Options{})
	_, js := x.connect(x.JP)
	const perType = 20
	sent := x.startSenders(perType).wait(t)
	for _, m := range sent {
		x.wait(m, api.StatusDelivered, 30*time.Second)
	}
	writes := func(stream string) uint64 {
		s, err := js.Stream(x.ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(x.ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	seen, rcpts := writes("KV_cmx_seen"), writes("KV_cmx_receipts")
	t.Logf("%d messages: %d cmx_seen writes, %d cmx_receipts writes", len(sent), seen, rcpts)
	if want := uint64(2 * len(sent)); seen != want {
		t.Errorf("%d cmx_seen writes for %d messages, want %d (claim with accepted, delivered)", seen, len(sent), want)
	}
	if rcpts != 0 {
		t.Errorf("%d cmx_receipts writes, want none", rcpts)
	}
}
