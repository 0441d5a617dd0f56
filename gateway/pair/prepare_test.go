package pair_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/pair"
)

// TestPrepareThenStart checks that Prepare starts nothing yet writes
// configs that run as they are: here both sides start in this process from
// their files and exchange a message.
func TestPrepareThenStart(t *testing.T) {
	ctx := context.Background()
	p, err := pair.Prepare(pair.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	for _, s := range []*pair.Side{p.US, p.JP} {
		if s.Node != nil || s.URL == "" {
			t.Fatalf("%s: Node %v, URL %q: want no node yet and a pinned URL", s.Party, s.Node, s.URL)
		}
		if _, err := os.Stat(s.ConfigPath); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{"US": p.US.URL, "JP": p.JP.URL}
	for _, s := range []*pair.Side{p.JP, p.US} { // JP accepts the leafnode
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if s.URL != want[s.Party] {
			t.Errorf("%s listens on %s, not on the prepared %s", s.Party, s.URL, want[s.Party])
		}
	}
	if err := p.WaitLinked(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	m, err := p.Send(ctx, "US", envelope.LaborEnforcementNotice, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.WaitStatus(ctx, m, api.StatusDelivered, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != api.StatusDelivered {
		t.Fatalf("status %s, timeline %+v", got.Status, got.Timeline)
	}
}

func TestPrepareRefusesProxy(t *testing.T) {
	if _, err := pair.Prepare(pair.Options{Dir: t.TempDir(), Proxy: true}); err == nil {
		t.Fatal("Prepare with Proxy: no error")
	}
}
