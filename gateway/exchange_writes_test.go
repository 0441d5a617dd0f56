package gateway_test

import (
	"slices"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/pair"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// TestStatusWritesPerMessage counts the durable writes the sending gateway
// makes to cmx_status per message, once every message has its full
// timeline: the record's creation, then the peer's two receipts, the first
// of which carries the relayed event (the bucket's stream takes one fsynced
// write after another: the serial bottleneck of the exchange). Each write
// on its own would be four. A relayed event is written alone only when the
// peer's receipt came before its PubAck was seen, which is rare: a twentieth
// of a write per message is allowed for it.
func TestStatusWritesPerMessage(t *testing.T) {
	x := start(t, pair.Options{})
	const perType = 60
	sent := x.startSenders(perType).wait(t)
	want := []string{api.StatusAccepted, api.StatusRelayed, api.StatusReceived, api.StatusDelivered}
	for _, m := range sent {
		x.wait(m, api.StatusDelivered, 30*time.Second)
		var got []string
		transporttest.WaitFor(t, 30*time.Second, func() bool {
			msg, err := x.US.Client(m.Agency).Message(x.ctx, m.ID)
			if err != nil {
				return false
			}
			got = got[:0]
			for _, e := range msg.Timeline {
				got = append(got, e.Status)
			}
			return slices.Equal(got, want)
		}, "full timeline of "+m.ID)
	}
	_, js := x.connect(x.US)
	stream, err := js.Stream(x.ctx, "KV_cmx_status")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(x.ctx)
	if err != nil {
		t.Fatal(err)
	}
	n, writes := uint64(len(sent)), info.State.LastSeq
	t.Logf("%d messages, %d cmx_status writes: %.2f per message", n, writes, float64(writes)/float64(n))
	if limit := 3*n + n/20; writes > limit {
		t.Errorf("%d cmx_status writes for %d messages, want at most %d", writes, n, limit)
	}
}
