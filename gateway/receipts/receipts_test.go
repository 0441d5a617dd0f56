package receipts_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/certs/certstest"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/receipts"
	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// now is the fixed clock of these tests, an hour after the fixtures' PKIs
// were issued.
var now = certstest.Now.Add(time.Hour)

func fixedNow() time.Time { return now }

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// side is one party's embedded server with the contract layout.
type side struct {
	js       jetstream.JetStream
	sent     *ledger.Store
	seen     *ledger.Store // the receiving side's claim records
	store    *ledger.Receipts
	receipts jetstream.KeyValue // cmx_receipts, read directly for quarantine
}

func startSide(t testing.TB, party string) *side {
	t.Helper()
	js := transporttest.StartSingle(t, party)
	ctx := testCtx(t)
	status, err := js.KeyValue(ctx, transport.BucketStatus)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := js.KeyValue(ctx, transport.BucketReceipts)
	if err != nil {
		t.Fatal(err)
	}
	seen, err := js.KeyValue(ctx, transport.BucketSeen)
	if err != nil {
		t.Fatal(err)
	}
	return &side{js: js, sent: ledger.Sent(status), seen: ledger.Seen(seen), store: ledger.NewReceipts(rk), receipts: rk}
}

// inRecord is the receiving side's receipts.Store: the receipt goes into the
// claim record of message id (created here when missing) with its event.
func inRecord(s *side, id string, st envelope.Status) receipts.Store {
	return func(ctx context.Context, token []byte) ([]byte, error) {
		key := ledger.SeenKey("US", id)
		if _, err := s.seen.Create(ctx, key, &ledger.Record{ID: id, Direction: api.Inbound, Timeline: []api.Event{}}); err != nil && !errors.Is(err, ledger.ErrExists) {
			return nil, err
		}
		_, stored, err := s.seen.AddReceipt(ctx, key, nil, string(st), token, ledger.Event(string(st), now, ""))
		return stored, err
	}
}

// recordReceipts returns the receipts the claim record of id holds.
func recordReceipts(t testing.TB, s *side, id string) map[string]string {
	t.Helper()
	rec, _, err := s.seen.Get(testCtx(t), ledger.SeenKey("US", id))
	if err != nil {
		t.Fatal(err)
	}
	return rec.Receipts
}

// seal returns a real envelope from US to JP, sealed at certstest.Now.
func seal(t testing.TB) *envelope.Sealed {
	t.Helper()
	typ := envelope.LaborEnforcementNotice
	c := &envelope.Claims{
		Issuer: "US", Audience: "JP", ID: envelope.NewID(),
		IssuedAt: certstest.Now.Unix(), Expiry: certstest.Now.Add(7 * 24 * time.Hour).Unix(),
		Type: typ, Schema: typ.Schema(), Sender: "US:DOL-ILAB", Recipient: "JP:MHLW",
		Body: envelope.Example(typ),
	}
	s, err := envelope.Seal(c, certstest.NewPKI(t, "US").Signing, certstest.NewPKI(t, "JP").Encryption.Cert)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return s
}

// outbox returns every message of CMX_OUT, in order.
func outbox(t testing.TB, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	return transporttest.StreamMessages(t, js, transport.StreamOut)
}

// outboxByID maps each outbox item's Nats-Msg-Id to its data, failing on
// an item that is not a receipt for US.
func outboxByID(t testing.TB, js jetstream.JetStream) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, m := range outbox(t, js) {
		if m.Subject != transport.OutRcptSubject("us") {
			t.Fatalf("outbox item on %q, want %q", m.Subject, transport.OutRcptSubject("us"))
		}
		id := m.Header.Get(jetstream.MsgIDHeader)
		if _, dup := out[id]; dup {
			t.Fatalf("outbox holds %s twice", id)
		}
		out[id] = m.Data
	}
	return out
}

func newIssuer(t testing.TB, s *side, clock func() time.Time) *receipts.Issuer {
	t.Helper()
	return receipts.NewIssuer(receipts.IssuerConfig{
		Party: "JP", Peer: "US", Signer: certstest.NewPKI(t, "JP").Signing, Now: clock,
	}, s.js, s.store)
}

// usVerifier verifies JP's receipts as US does.
func usVerifier(t testing.TB) *envelope.ReceiptVerifier {
	return &envelope.ReceiptVerifier{Self: "US", Peer: certstest.Bundle(t, "JP")}
}

func receiptFor(s *envelope.Sealed, id string, st envelope.Status) *envelope.Receipt {
	r := &envelope.Receipt{Msg: id, Status: st, EnvSHA256: s.EnvSHA256, MsgSHA256: s.MsgSHA256}
	switch st {
	case envelope.StatusDelivered:
		r.Recipient, r.DeliveredAt = "JP:MHLW", now.Add(-time.Minute).Unix()
	case envelope.StatusRejected:
		r.Reason = envelope.ReasonPolicyDenied
	}
	return r
}

// TestIssueTwice issues each status twice, the second time later: the
// stored and published bytes are the first receipt's, byte for byte, under
// Nats-Msg-Id = receipt id (invariant 4).
func TestIssueTwice(t *testing.T) {
	tests := []struct {
		name   string
		status envelope.Status
	}{
		{name: "accepted", status: envelope.StatusAccepted},
		{name: "delivered", status: envelope.StatusDelivered},
		{name: "rejected", status: envelope.StatusRejected},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startSide(t, "JP")
			clock := now
			iss := newIssuer(t, s, func() time.Time { return clock })
			env := seal(t)
			id := envelope.NewID()
			ctx := testCtx(t)
			first, err := iss.Issue(ctx, receiptFor(env, id, tc.status), nil, inRecord(s, id, tc.status))
			if err != nil {
				t.Fatalf("first Issue: %v", err)
			}
			clock = now.Add(time.Minute) // a later iat: a fresh signature would differ
			second, err := iss.Issue(ctx, receiptFor(env, id, tc.status), nil, inRecord(s, id, tc.status))
			if err != nil {
				t.Fatalf("second Issue: %v", err)
			}
			if !bytes.Equal(first, second) {
				t.Fatal("second Issue returned other bytes than the first")
			}
			vr, err := usVerifier(t).Verify(first, now)
			if err != nil {
				t.Fatalf("issued receipt does not verify: %v", err)
			}
			if vr.Issuer != "JP" || vr.Audience != "US" || vr.IssuedAt != now.Unix() || vr.Msg != id || vr.Status != tc.status {
				t.Fatalf("issued receipt claims %+v", vr.Receipt)
			}
			if stored := recordReceipts(t, s, id)[string(tc.status)]; stored != string(first) {
				t.Fatal("the record holds other bytes than the issued receipt")
			}
			got := outboxByID(t, s.js)
			rid := envelope.ReceiptID(id, tc.status)
			if len(got) != 1 || !bytes.Equal(got[rid], first) {
				t.Fatalf("outbox holds %d items, want the stored receipt once under %s", len(got), rid)
			}
		})
	}
}

// TestResend publishes the stored receipts again, byte for byte, once per
// trigger (catalogue F-10: a duplicate envelope gets the original receipts).
func TestResend(t *testing.T) {
	s := startSide(t, "JP")
	iss := newIssuer(t, s, fixedNow)
	env := seal(t)
	id := envelope.NewID()
	ctx := testCtx(t)
	issued := map[envelope.Status][]byte{}
	for _, st := range []envelope.Status{envelope.StatusAccepted, envelope.StatusDelivered} {
		b, err := iss.Issue(ctx, receiptFor(env, id, st), nil, inRecord(s, id, st))
		if err != nil {
			t.Fatal(err)
		}
		issued[st] = b
	}
	stored := recordReceipts(t, s, id)
	tests := []struct {
		name    string
		msg     string
		stored  map[string]string
		trigger string
		wantN   int
		wantIDs []string // new outbox items
	}{
		{name: "first duplicate", msg: id, stored: stored, trigger: "17", wantN: 2,
			wantIDs: []string{id + ".accepted.resend.17", id + ".delivered.resend.17"}},
		{name: "redelivery of the same duplicate", msg: id, stored: stored, trigger: "17", wantN: 2},
		{name: "another duplicate", msg: id, stored: stored, trigger: "23", wantN: 2,
			wantIDs: []string{id + ".accepted.resend.23", id + ".delivered.resend.23"}},
		{name: "nothing issued", msg: envelope.NewID(), trigger: "24", wantN: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := outboxByID(t, s.js)
			n, err := iss.Resend(ctx, tc.msg, tc.trigger, tc.stored, nil)
			if err != nil || n != tc.wantN {
				t.Fatalf("Resend = %d, %v; want %d", n, err, tc.wantN)
			}
			after := outboxByID(t, s.js)
			var added []string
			for k := range after {
				if _, ok := before[k]; !ok {
					added = append(added, k)
				}
			}
			slices.Sort(added)
			if !slices.Equal(added, tc.wantIDs) {
				t.Fatalf("new outbox items %q, want %q", added, tc.wantIDs)
			}
			for _, k := range added {
				st := envelope.StatusAccepted
				if bytes.Contains([]byte(k), []byte(".delivered.")) {
					st = envelope.StatusDelivered
				}
				if !bytes.Equal(after[k], issued[st]) {
					t.Errorf("%s is not the stored %s receipt", k, st)
				}
			}
		})
	}
}

// TestIssueApart checks that the receipts for an equivocating or unopenable
// envelope are kept apart from the message's own receipts, and that the
// message's own receipts go out after them.
func TestIssueApart(t *testing.T) {
	type issueFunc func(*receipts.Issuer, context.Context, *envelope.Receipt, nats.Header) ([]byte, error)
	tests := []struct {
		name   string
		issue  issueFunc
		reason envelope.Reason
		infix  string // between "<id>.rejected" and the digest in the Nats-Msg-Id
	}{
		{name: "conflict", issue: (*receipts.Issuer).IssueConflict, reason: envelope.ReasonDuplicateConflict, infix: ".conflict."},
		{name: "unopened", issue: (*receipts.Issuer).IssueUnopened, reason: envelope.ReasonDecryptFailed, infix: ".unopened."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startSide(t, "JP")
			iss := newIssuer(t, s, fixedNow)
			ctx := testCtx(t)
			genuine, other := seal(t), seal(t)
			id := envelope.NewID()
			accepted, err := iss.Issue(ctx, receiptFor(genuine, id, envelope.StatusAccepted), nil, inRecord(s, id, envelope.StatusAccepted))
			if err != nil {
				t.Fatal(err)
			}
			r := &envelope.Receipt{Msg: id, Status: envelope.StatusRejected, Reason: tc.reason, EnvSHA256: other.EnvSHA256}
			apart, err := tc.issue(iss, ctx, r, nil)
			if err != nil {
				t.Fatalf("issue apart: %v", err)
			}
			again, err := tc.issue(iss, ctx, &envelope.Receipt{Msg: id, Status: envelope.StatusRejected, Reason: tc.reason, EnvSHA256: other.EnvSHA256}, nil)
			if err != nil || !bytes.Equal(again, apart) {
				t.Fatalf("second issue apart: other bytes (%v)", err)
			}
			if own := recordReceipts(t, s, id); len(own) != 1 || own["accepted"] != string(accepted) {
				t.Fatalf("the message's own receipts changed: %v", own)
			}
			// The genuine rejected receipt is still free, and goes out.
			own, err := iss.Issue(ctx, receiptFor(genuine, id, envelope.StatusRejected), nil, inRecord(s, id, envelope.StatusRejected))
			if err != nil || bytes.Equal(own, apart) {
				t.Fatalf("the genuine rejected receipt is blocked by the one kept apart (%v)", err)
			}
			got := outboxByID(t, s.js)
			want := map[string][]byte{
				id + ".accepted": accepted,
				id + ".rejected" + tc.infix + other.EnvSHA256: apart,
				id + ".rejected": own,
			}
			if len(got) != len(want) {
				t.Fatalf("outbox holds %d items, want %d", len(got), len(want))
			}
			for k, v := range want {
				if !bytes.Equal(got[k], v) {
					t.Errorf("outbox item %s missing or other bytes", k)
				}
			}
		})
	}
}

// sentMessage records, on the US side, a message sent at certstest.Now.
func sentMessage(t testing.TB, s *side) (*envelope.Sealed, string) {
	t.Helper()
	env := seal(t)
	id := envelope.NewID()
	_, err := s.sent.Create(testCtx(t), id, &ledger.Record{
		ID: id, Direction: api.Outbound, Type: string(envelope.LaborEnforcementNotice), From: "US", To: "JP",
		EnvSHA256: env.EnvSHA256, MsgSHA256: env.MsgSHA256, Expiry: certstest.Now.Add(7 * 24 * time.Hour).Unix(),
		Timeline: []api.Event{ledger.Event(api.StatusAccepted, certstest.Now, "")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return env, id
}

// signReceipt signs r as signer, filling iss, aud and iat (now-10min) when empty.
func signReceipt(t testing.TB, r *envelope.Receipt, signer *certs.Identity) []byte {
	t.Helper()
	if r.Issuer == "" {
		r.Issuer = "JP"
	}
	if r.Audience == "" {
		r.Audience = "US"
	}
	if r.IssuedAt == 0 {
		r.IssuedAt = now.Add(-10 * time.Minute).Unix()
	}
	b, err := envelope.IssueReceipt(r, signer)
	if err != nil {
		t.Fatalf("IssueReceipt: %v", err)
	}
	return b
}

func newAcceptor(t testing.TB, s *side) *receipts.Acceptor {
	t.Helper()
	return receipts.NewAcceptor(receipts.AcceptorConfig{Verifier: usVerifier(t), Now: fixedNow}, s.sent, s.store)
}

// TestAcceptRefused feeds receipts that must never count (catalogue R-01 to
// each fails with its sentinel, stores nothing as received and
// leaves the message's record as it was.
func TestAcceptRefused(t *testing.T) {
	s := startSide(t, "US")
	acc := newAcceptor(t, s)
	ctx := testCtx(t)
	jp := certstest.NewPKI(t, "JP")
	usKeyAsJP := *certstest.NewPKI(t, "US").Signing
	usKeyAsJP.Party = "" // lets IssueReceipt sign iss=JP with US's key
	tests := []struct {
		name            string
		token           func(env *envelope.Sealed, id string) []byte
		wantErr         error
		wantTransient   bool
		wantQuarantined bool
	}{{
		name: "R-01_unknown_message",
		token: func(env *envelope.Sealed, _ string) []byte {
			return signReceipt(t, receiptFor(env, envelope.NewID(), envelope.StatusAccepted), jp.Signing)
		},
		wantErr: receipts.ErrUnknownMessage,
	}, {
		name: "R-02_other_env_sha256",
		token: func(env *envelope.Sealed, id string) []byte {
			r := receiptFor(env, id, envelope.StatusAccepted)
			r.EnvSHA256 = seal(t).EnvSHA256
			return signReceipt(t, r, jp.Signing)
		},
		wantErr: receipts.ErrMismatch, wantQuarantined: true,
	}, {
		name: "R-02_other_msg_sha256",
		token: func(env *envelope.Sealed, id string) []byte {
			r := receiptFor(env, id, envelope.StatusDelivered)
			r.MsgSHA256 = seal(t).MsgSHA256
			return signReceipt(t, r, jp.Signing)
		},
		wantErr: receipts.ErrMismatch, wantQuarantined: true,
	}, {
		name: "R-03_signed_by_our_own_party",
		token: func(env *envelope.Sealed, id string) []byte {
			r := receiptFor(env, id, envelope.StatusAccepted)
			r.Issuer, r.Audience = "US", "JP"
			return signReceipt(t, r, certstest.NewPKI(t, "US").Signing)
		},
		wantErr: receipts.ErrInvalid,
	}, {
		name: "R-03_our_key_claiming_the_peer",
		token: func(env *envelope.Sealed, id string) []byte {
			return signReceipt(t, receiptFor(env, id, envelope.StatusAccepted), &usKeyAsJP)
		},
		wantErr: receipts.ErrInvalid,
	}, {
		name: "R-03_key_outside_the_peer_trust_set",
		token: func(env *envelope.Sealed, id string) []byte {
			return signReceipt(t, receiptFor(env, id, envelope.StatusAccepted), certstest.FreshPKI(t, "JP").Signing)
		},
		wantErr: receipts.ErrInvalid,
	}, {
		name:    "R-04_message_jws_as_receipt",
		token:   func(env *envelope.Sealed, _ string) []byte { return env.Inner },
		wantErr: receipts.ErrInvalid,
	}, {
		name: "R-07_iat_beyond_leeway_in_the_future",
		token: func(env *envelope.Sealed, id string) []byte {
			r := receiptFor(env, id, envelope.StatusAccepted)
			r.IssuedAt = now.Add(envelope.DefaultLeeway + time.Minute).Unix()
			return signReceipt(t, r, jp.Signing)
		},
		wantErr: receipts.ErrInvalid, wantTransient: true,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, id := sentMessage(t, s)
			before, rev, err := s.sent.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			token := tc.token(env, id)
			_, err = acc.Accept(ctx, token)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Accept err = %v, want %v", err, tc.wantErr)
			}
			if got := envelope.IsTransient(err); got != tc.wantTransient {
				t.Errorf("IsTransient = %v, want %v", got, tc.wantTransient)
			}
			after, rev2, err := s.sent.Get(ctx, id)
			if err != nil || rev2 != rev || after.Status() != before.Status() {
				t.Errorf("record moved: %s (rev %d) → %s (rev %d), %v", before.Status(), rev, after.Status(), rev2, err)
			}
			if after != nil && len(after.Receipts) != 0 {
				t.Errorf("refused receipt stored in the record: %v", after.Receipts)
			}
			q, err := s.receipts.Get(ctx, "quarantine."+envelope.Digest(token))
			switch {
			case tc.wantQuarantined && (err != nil || !bytes.Equal(q.Value(), token)):
				t.Errorf("receipt not quarantined: %v", err)
			case !tc.wantQuarantined && !errors.Is(err, jetstream.ErrKeyNotFound):
				t.Errorf("receipt quarantined unexpectedly (%v)", err)
			}
		})
	}
}

// TestAcceptMovesTimeline accepts receipts in sequences: the record moves to
// the statuses they attest, at the peer's times, never backwards, and a
// second receipt for a status moves nothing.
func TestAcceptMovesTimeline(t *testing.T) {
	s := startSide(t, "US")
	acc := newAcceptor(t, s)
	ctx := testCtx(t)
	jp := certstest.NewPKI(t, "JP")
	iatAccepted := now.Add(-30 * time.Minute)
	deliveredAt := now.Add(-20 * time.Minute)
	iatDelivered := now.Add(-19 * time.Minute)
	sign := func(env *envelope.Sealed, id string, st envelope.Status) []byte {
		r := receiptFor(env, id, st)
		r.IssuedAt = iatAccepted.Unix()
		if st == envelope.StatusDelivered {
			r.IssuedAt, r.DeliveredAt = iatDelivered.Unix(), deliveredAt.Unix()
		}
		return signReceipt(t, r, jp.Signing)
	}
	type step struct {
		status     envelope.Status
		wantStatus string
	}
	tests := []struct {
		name         string
		steps        []step
		wantTimeline []api.Event
	}{{
		name: "accepted then delivered",
		steps: []step{
			{status: envelope.StatusAccepted, wantStatus: api.StatusReceived},
			{status: envelope.StatusDelivered, wantStatus: api.StatusDelivered},
		},
		wantTimeline: []api.Event{
			ledger.Event(api.StatusAccepted, certstest.Now, ""),
			ledger.Event(api.StatusReceived, iatAccepted, ""),
			ledger.Event(api.StatusDelivered, deliveredAt, ""),
		},
	}, {
		name: "delivered overtakes accepted",
		steps: []step{
			{status: envelope.StatusDelivered, wantStatus: api.StatusDelivered},
			{status: envelope.StatusAccepted, wantStatus: api.StatusDelivered},
		},
		wantTimeline: []api.Event{
			ledger.Event(api.StatusAccepted, certstest.Now, ""),
			ledger.Event(api.StatusReceived, iatAccepted, ""),
			ledger.Event(api.StatusDelivered, deliveredAt, ""),
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, id := sentMessage(t, s)
			for _, st := range tc.steps {
				token := sign(env, id, st.status)
				vr, err := acc.Accept(ctx, token)
				if err != nil {
					t.Fatalf("Accept(%s): %v", st.status, err)
				}
				if vr.Msg != id || vr.Status != st.status || !bytes.Equal(vr.Token, token) {
					t.Fatalf("Accept(%s) returned %+v", st.status, vr.Receipt)
				}
				r, _, err := s.sent.Get(ctx, id)
				if err != nil || r.Status() != st.wantStatus {
					t.Fatalf("after %s: status %v, %v; want %s", st.status, r.Status(), err, st.wantStatus)
				}
				if stored := r.Receipts[string(st.status)]; stored != string(token) {
					t.Fatalf("%s receipt not stored in the record", st.status)
				}
			}
			r, _, err := s.sent.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(r.Timeline, tc.wantTimeline, func(a, b api.Event) bool {
				return a.Status == b.Status && a.At.Equal(b.At) && a.Reason == b.Reason
			}) {
				t.Fatalf("timeline %v, want %v", r.Timeline, tc.wantTimeline)
			}
		})
	}
}

// TestAcceptSecondReceipt is catalogue R-05: the same receipt again, with
// other signature bytes and even another iat, keeps the first stored bytes
// and does not write the record again.
func TestAcceptSecondReceipt(t *testing.T) {
	s := startSide(t, "US")
	acc := newAcceptor(t, s)
	ctx := testCtx(t)
	jp := certstest.NewPKI(t, "JP")
	tests := []struct {
		name   string
		status envelope.Status
		second func(r *envelope.Receipt) // changes the second receipt's claims
	}{
		{name: "accepted re-signed", status: envelope.StatusAccepted, second: func(*envelope.Receipt) {}},
		{name: "accepted with a later iat", status: envelope.StatusAccepted, second: func(r *envelope.Receipt) { r.IssuedAt += 60 }},
		{name: "delivered with another delivery time", status: envelope.StatusDelivered, second: func(r *envelope.Receipt) { r.DeliveredAt += 60 }},
		{name: "rejected with another reason", status: envelope.StatusRejected, second: func(r *envelope.Receipt) { r.Reason = envelope.ReasonUnknownRecipient }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, id := sentMessage(t, s)
			first := signReceipt(t, receiptFor(env, id, tc.status), jp.Signing)
			if _, err := acc.Accept(ctx, first); err != nil {
				t.Fatalf("first Accept: %v", err)
			}
			before, rev, err := s.sent.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			r := receiptFor(env, id, tc.status)
			r.IssuedAt = now.Add(-10 * time.Minute).Unix()
			tc.second(r)
			second := signReceipt(t, r, jp.Signing)
			if bytes.Equal(first, second) {
				t.Fatal("test setup: the second receipt has the first one's bytes")
			}
			if _, err := acc.Accept(ctx, second); err != nil {
				t.Fatalf("second Accept: %v", err)
			}
			after, rev2, err := s.sent.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if after.Receipts[string(tc.status)] != string(first) {
				t.Fatal("stored receipt is not the first one")
			}
			if rev2 != rev || !slices.Equal(after.Timeline, before.Timeline) {
				t.Fatalf("timeline moved: %v (rev %d) → %v (rev %d)", before.Timeline, rev, after.Timeline, rev2)
			}
		})
	}
}

// TestIssuerHealth: receipts that cannot be stored for longer than the
// grace period make Healthy fail (invariant 6), and one stored receipt
// makes it pass again.
func TestIssuerHealth(t *testing.T) {
	s := startSide(t, "JP")
	clock := now
	iss := newIssuer(t, s, func() time.Time { return clock })
	ctx := testCtx(t)
	env := seal(t)
	const grace = time.Minute
	id := envelope.NewID()
	if _, err := iss.Issue(ctx, receiptFor(env, id, envelope.StatusAccepted), nil, inRecord(s, id, envelope.StatusAccepted)); err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if err := iss.Healthy(clock, grace); err != nil {
		t.Fatalf("Healthy after a stored receipt: %v", err)
	}
	if err := s.js.DeleteKeyValue(ctx, transport.BucketSeen); err != nil {
		t.Fatal(err)
	}
	id = envelope.NewID()
	if _, err := iss.Issue(ctx, receiptFor(env, id, envelope.StatusAccepted), nil, inRecord(s, id, envelope.StatusAccepted)); err == nil {
		t.Fatal("Issue without its bucket succeeded")
	}
	if got := outboxByID(t, s.js); len(got) != 1 {
		t.Fatalf("outbox holds %d receipts, want 1: a receipt that was not stored went out", len(got))
	}
	if err := iss.Healthy(clock.Add(grace), grace); err != nil {
		t.Errorf("Healthy within the grace period: %v", err)
	}
	if err := iss.Healthy(clock.Add(grace+time.Second), grace); !errors.Is(err, receipts.ErrEvidenceUnavailable) {
		t.Errorf("Healthy past the grace period = %v, want ErrEvidenceUnavailable", err)
	}
	if err := transport.EnsureLayout(ctx, s.js, transporttest.Layout("JP")); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(2 * grace)
	if _, err := iss.Issue(ctx, receiptFor(env, id, envelope.StatusAccepted), nil, inRecord(s, id, envelope.StatusAccepted)); err != nil {
		t.Fatalf("Issue after the bucket is back: %v", err)
	}
	if err := iss.Healthy(clock, grace); err != nil {
		t.Errorf("Healthy after recovery: %v", err)
	}
}
