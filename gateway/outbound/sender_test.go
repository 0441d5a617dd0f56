package outbound_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// TestSubmitRetryPastDuplicateWindow: a client retries with its
// Idempotency-Key after the outbox's duplicate window has passed (catalogue
// F-01: the ingress keeps the id, but Nats-Msg-Id no longer deduplicates).
// The retry must not store a second, different envelope under the same id —
// the peer would see an equivocation — and the record must name the one
// envelope the outbox holds, which the peer's receipts attest.
func TestSubmitRetryPastDuplicateWindow(t *testing.T) {
	tests := []struct {
		name      string
		published bool // the earlier attempt stored its envelope
		recorded  bool // and its ledger record
	}{
		{name: "earlier attempt died between PubAck and record", published: true},
		{name: "earlier attempt died after its record", published: true, recorded: true},
		{name: "earlier attempt published nothing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			js := transporttest.StartSingle(t, "US")
			shortenDuplicateWindow(t, js)
			kv, err := js.KeyValue(ctx, transport.BucketStatus)
			if err != nil {
				t.Fatal(err)
			}
			sent := ledger.Sent(kv)
			id := envelope.NewID()
			clk := &clock{t: time.Now()}
			s, err := outbound.NewSender(outbound.SenderConfig{Party: "US", Peer: "JP", Signer: certstest.NewPKI(t, "US").Signing,
				PeerEncryption: certstest.NewPKI(t, "JP").Encryption.Cert, Now: clk.Now}, js, sent)
			if err != nil {
				t.Fatal(err)
			}
			typ := envelope.NonMarketPracticeReport
			req := &api.SubmitRequest{Type: string(typ), To: "JP", Body: envelope.Example(typ)}
			if tc.published {
				if _, err := s.Submit(ctx, "USTR", id, req); err != nil {
					t.Fatalf("first attempt: %v", err)
				}
				if !tc.recorded {
					if err := kv.Purge(ctx, "out."+id); err != nil {
						t.Fatal(err)
					}
				}
				waitDuplicateWindow(t, js)
			}
			clk.Set(clk.Now().Add(20 * time.Minute)) // the client comes back
			if _, err := s.Submit(ctx, "USTR", id, req); err != nil {
				t.Fatalf("retry: %v", err)
			}
			var items []*jetstream.RawStreamMsg
			for _, m := range transporttest.StreamMessages(t, js, transport.StreamOut) {
				if m.Subject == transport.OutMsgSubject("jp", string(typ)) {
					items = append(items, m)
				}
			}
			if len(items) != 1 {
				t.Fatalf("outbox holds %d items for the message, want 1", len(items))
			}
			env, inner, err := transport.SplitOutboxItem(items[0].Header, items[0].Data)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := sent.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if got.Seq != items[0].Sequence || got.EnvSHA256 != envelope.Digest(env) || got.MsgSHA256 != envelope.Digest(inner) {
				t.Errorf("record: seq %d env %s msg %s; the outbox holds seq %d env %s msg %s", got.Seq, got.EnvSHA256, got.MsgSHA256,
					items[0].Sequence, envelope.Digest(env), envelope.Digest(inner))
			}
		})
	}
}

// shortenDuplicateWindow sets CMX_OUT's duplicate window to 100 ms.
func shortenDuplicateWindow(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	ctx := testCtx(t)
	st, err := js.Stream(ctx, transport.StreamOut)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Duplicates = 100 * time.Millisecond
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// waitDuplicateWindow publishes a probe (on the receipt subject, apart from
// messages), then waits until publishing it again is no longer
// deduplicated: the window of everything stored before the probe has passed.
func waitDuplicateWindow(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	ctx := testCtx(t)
	probe := func() bool {
		ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: transport.OutRcptSubject("jp"), Data: []byte("probe")}, jetstream.WithMsgID("probe"))
		if err != nil {
			t.Fatal(err)
		}
		return !ack.Duplicate
	}
	if !probe() {
		t.Fatal("first probe deduplicated")
	}
	transporttest.WaitFor(t, 10*time.Second, probe, "the outbox's duplicate window passed")
}
