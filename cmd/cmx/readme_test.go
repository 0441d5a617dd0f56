package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/pair"
)

// TestReadmeSubmitExample runs the README's curl submission against a real
// pair of gateways, so the example a newcomer copies stays true.
func TestReadmeSubmitExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "-d @- <<'EOF'\n")
	body, _, ok2 := strings.Cut(rest, "\nEOF\n")
	if !ok || !ok2 {
		t.Fatal("README has no curl submission heredoc")
	}
	var req api.SubmitRequest
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatalf("README example is not JSON: %v", err)
	}
	ctx := context.Background()
	p, err := pair.Start(ctx, pair.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	c := p.US.Client(pair.AgencyFor("US", "labor_enforcement_notice"))
	resp, err := c.Submit(ctx, &req, "dol-2026-0142")
	if err != nil {
		t.Fatalf("README example refused: %v", err)
	}
	m := &pair.Sent{ID: resp.ID, From: "US", To: "JP", Agency: pair.AgencyFor("US", "labor_enforcement_notice"), Type: "labor_enforcement_notice"}
	got, err := p.WaitStatus(ctx, m, api.StatusDelivered, 20*time.Second)
	if err != nil || got.Status != api.StatusDelivered {
		t.Fatalf("README example not delivered: %v %+v", err, got)
	}
}
