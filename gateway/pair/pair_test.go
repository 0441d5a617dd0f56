package pair_test

import (
	"context"
	"encoding/json"
	"strings"
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

// A large message (an 80 KB description: its inner JWS alone is over
// JetStream's 64 KiB header cap) is stored, forwarded, delivered and its
// evidence returned whole.
func TestPairLargeMessage(t *testing.T) {
	ctx := context.Background()
	p, err := pair.Start(ctx, pair.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	var body map[string]any
	if err := json.Unmarshal(envelope.Example(envelope.NonMarketPracticeReport), &body); err != nil {
		t.Fatal(err)
	}
	body["description"] = strings.Repeat("\U00020BB7", 20000)
	raw, _ := json.Marshal(body)
	agency := pair.AgencyFor("US", envelope.NonMarketPracticeReport)
	resp, err := p.US.Client(agency).Submit(ctx, &api.SubmitRequest{Type: string(envelope.NonMarketPracticeReport), To: "JP", Body: raw}, "")
	if err != nil {
		t.Fatal(err)
	}
	m := &pair.Sent{ID: resp.ID, From: "US", To: "JP", Agency: agency, Type: envelope.NonMarketPracticeReport}
	if got, err := p.WaitStatus(ctx, m, api.StatusDelivered, 20*time.Second); err != nil || got.Status != api.StatusDelivered {
		t.Fatalf("large message: %v %+v", err, got)
	}
	ev, err := p.US.Client(agency).Evidence(ctx, resp.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Message) < 100_000 || len(ev.Envelope) < 100_000 || len(ev.Receipts) != 2 {
		t.Errorf("evidence: message %d bytes, envelope %d bytes, %d receipts", len(ev.Message), len(ev.Envelope), len(ev.Receipts))
	}
}
