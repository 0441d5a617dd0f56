package outbound_test

import (
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/certs/certstest"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/outbound"
	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// TestSubmitRetryAfterCrashBeforeRecord: the gateway died between the
// outbox PubAck and the ledger record (catalogue F-01 b/c); the client's
// retry takes the same id over and seals again. The outbox keeps the first
// envelope (Nats-Msg-Id dedup), so the record must name that one, or the
// peer's receipts, which attest the first envelope, would never match.
func TestSubmitRetryAfterCrashBeforeRecord(t *testing.T) {
	ctx := testCtx(t)
	js := transporttest.StartSingle(t, "US")
	kv, err := js.KeyValue(ctx, transport.BucketStatus)
	if err != nil {
		t.Fatal(err)
	}
	sent := ledger.Sent(kv)
	s, err := outbound.NewSender(outbound.SenderConfig{Party: "US", Peer: "JP", Signer: certstest.NewPKI(t, "US").Signing,
		PeerEncryption: certstest.NewPKI(t, "JP").Encryption.Cert, Now: func() time.Time { return t0 }}, js, sent)
	if err != nil {
		t.Fatal(err)
	}
	typ := envelope.NonMarketPracticeReport
	req := &api.SubmitRequest{Type: string(typ), To: "JP", Body: envelope.Example(typ)}
	id := envelope.NewID()
	if _, err := s.Submit(ctx, "USTR", id, req); err != nil {
		t.Fatalf("first attempt: %v", err)
	}
	first, _, err := sent.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "out."+id); err != nil { // as if the first attempt had died before its record
		t.Fatal(err)
	}
	if _, err := s.Submit(ctx, "USTR", id, req); err != nil {
		t.Fatalf("retry: %v", err)
	}
	got, _, err := sent.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != first.Seq || got.EnvSHA256 != first.EnvSHA256 || got.MsgSHA256 != first.MsgSHA256 {
		t.Errorf("record after the retry: seq %d env %s msg %s; the outbox holds seq %d env %s msg %s",
			got.Seq, got.EnvSHA256, got.MsgSHA256, first.Seq, first.EnvSHA256, first.MsgSHA256)
	}
	info, err := js.Stream(ctx, transport.StreamOut)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("outbox holds %d items, want 1", n)
	}
}
