package pair_test

import (
	"context"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/pair"
)

func TestPairExchangesAllTypesBothWays(t *testing.T) {
	ctx := context.Background()
	p, err := pair.Start(ctx, pair.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	var sent []*pair.Sent
	for _, from := range []string{"US", "JP"} {
		for _, typ := range envelope.Types {
			m, err := p.Send(ctx, from, typ, "")
			if err != nil {
				t.Fatal(err)
			}
			sent = append(sent, m)
		}
	}
	for _, m := range sent {
		got, err := p.WaitStatus(ctx, m, api.StatusDelivered, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != api.StatusDelivered {
			t.Fatalf("%s %s: status %s, timeline %+v", m.From, m.Type, got.Status, got.Timeline)
		}
	}
}
