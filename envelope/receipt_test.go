package envelope

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testReceipt is a JP → US receipt for testMsgID at testNow.
func testReceipt(s Status) *Receipt {
	r := &Receipt{
		Issuer:    "JP",
		Audience:  "US",
		IssuedAt:  testNow.Unix(),
		Msg:       testMsgID,
		Status:    s,
		EnvSHA256: Digest([]byte("envelope")),
		MsgSHA256: Digest([]byte("inner")),
	}
	switch s {
	case StatusRejected:
		r.Reason = ReasonSchemaInvalid
	case StatusDelivered:
		r.Recipient, r.DeliveredAt = "JP:MHLW", testNow.Unix()-1
	}
	return r
}

func (f *fixture) issue(t testing.TB, r *Receipt) []byte {
	t.Helper()
	tok, err := IssueReceipt(r, f.jp.Signing)
	if err != nil {
		t.Fatalf("IssueReceipt: %v", err)
	}
	return tok
}

func TestReceiptRoundTrip(t *testing.T) {
	f := newFixture(t)
	for _, s := range []Status{StatusAccepted, StatusDelivered, StatusRejected} {
		t.Run(string(s), func(t *testing.T) {
			r := testReceipt(s)
			tok := f.issue(t, r)
			if r.ID != testMsgID+"."+string(s) {
				t.Errorf("ID = %q, want <msg>.<status>", r.ID)
			}
			if got := headerMembers(t, tok); strings.Join(got, ",") != "alg,kid,typ,x5c" {
				t.Errorf("header members = %v", got)
			}
			vr, err := f.usReceipt.Verify(tok, testNow)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !reflect.DeepEqual(vr.Receipt, *r) || !bytes.Equal(vr.Token, tok) || !vr.Chain[0].Equal(f.jp.Signing.Cert) {
				t.Errorf("verified receipt = %+v, want %+v", vr.Receipt, *r)
			}
			auditor := &ReceiptVerifier{Peer: f.jpBundle}
			if _, err := auditor.Verify(tok, testNow); err != nil {
				t.Errorf("auditor (any aud) Verify: %v", err)
			}
		})
	}
}

func TestIssueReceiptRefuses(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		mutate func(*Receipt)
		want   string
	}{
		{name: "id_not_msg_status", mutate: func(r *Receipt) { r.ID = testMsgID + ".delivered" }, want: "jti"},
		{name: "unknown_status", mutate: func(r *Receipt) { r.Status = "received" }, want: "status"},
		{name: "rejected_without_reason", mutate: func(r *Receipt) { r.Status = StatusRejected }, want: "reason"},
		{name: "accepted_with_reason", mutate: func(r *Receipt) { r.Reason = ReasonExpired }, want: "reason"},
		{name: "unknown_reason", mutate: func(r *Receipt) { r.Status, r.Reason = StatusRejected, "because" }, want: "unknown reason"},
		{name: "delivered_without_recipient", mutate: func(r *Receipt) { r.Status, r.DeliveredAt = StatusDelivered, 1 }, want: "recipient"},
		{name: "delivered_without_time", mutate: func(r *Receipt) { r.Status, r.Recipient = StatusDelivered, "JP:MHLW" }, want: "delivered_at"},
		{name: "recipient_when_accepted", mutate: func(r *Receipt) { r.Recipient = "JP:MHLW" }, want: "recipient"},
		{name: "recipient_other_party", mutate: func(r *Receipt) {
			r.Status, r.Recipient, r.DeliveredAt = StatusDelivered, "US:DOL", 1
		}, want: "recipient"},
		{name: "env_digest_hex", mutate: func(r *Receipt) { r.EnvSHA256 = strings.Repeat("ab", 32) }, want: "env_sha256"},
		{name: "env_digest_padded", mutate: func(r *Receipt) {
			r.EnvSHA256 = base64.URLEncoding.EncodeToString(make([]byte, 32))
		}, want: "env_sha256"},
		{name: "env_digest_missing", mutate: func(r *Receipt) { r.EnvSHA256 = "" }, want: "env_sha256"},
		{name: "msg_digest_bad", mutate: func(r *Receipt) { r.MsgSHA256 = "x" }, want: "msg_sha256"},
		{name: "msg_not_uuid", mutate: func(r *Receipt) { r.Msg = "not-a-uuid" }, want: "msg"},
		{name: "iss_not_signer_party", mutate: func(r *Receipt) { r.Issuer, r.Audience = "US", "JP" }, want: "signer"},
		{name: "iss_equals_aud", mutate: func(r *Receipt) { r.Audience = "JP" }, want: "iss equals aud"},
		{name: "iat_zero", mutate: func(r *Receipt) { r.IssuedAt = 0 }, want: "iat"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testReceipt(StatusAccepted)
			tt.mutate(r)
			_, err := IssueReceipt(r, f.jp.Signing)
			checkErr(t, err, ErrClaims, ReasonClaimsInvalid, false)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
	if _, err := IssueReceipt(testReceipt(StatusAccepted), nil); !errors.Is(err, errSeal) {
		t.Errorf("nil signer: %v", err)
	}
}

// receiptCase is one input to ReceiptVerifier.Verify.
type receiptCase struct {
	name      string
	token     func(t testing.TB, f *fixture) []byte
	verifier  func(v *ReceiptVerifier)
	want      error
	reason    Reason
	transient bool
}

// rawReceipt signs a receipt payload by hand with JP's signing identity.
func rawReceipt(edit func(payload string) string) func(testing.TB, *fixture) []byte {
	return func(t testing.TB, f *fixture) []byte {
		r := testReceipt(StatusAccepted)
		r.ID = ReceiptID(r.Msg, r.Status)
		p := edit(string(payloadOf(t, r)))
		return []byte(signRaw(t, f.jp.Signing.Key, jwsHeaderJSON(f.jp.Signing, TypReceipt), []byte(p)))
	}
}

func issued(mutate func(*Receipt)) func(testing.TB, *fixture) []byte {
	return func(t testing.TB, f *fixture) []byte {
		r := testReceipt(StatusAccepted)
		if mutate != nil {
			mutate(r)
		}
		return f.issue(t, r)
	}
}

func receiptEdited(edit func(t testing.TB, tok []byte) []byte) func(testing.TB, *fixture) []byte {
	return func(t testing.TB, f *fixture) []byte { return edit(t, f.issue(t, testReceipt(StatusAccepted))) }
}

func receiptCases() []receiptCase {
	return []receiptCase{
		{name: "valid", token: issued(nil)},
		{name: "R-02_env_digest_not_sha256_form", want: ErrClaims, reason: ReasonClaimsInvalid,
			token: rawReceipt(func(p string) string {
				return strings.Replace(p, Digest([]byte("envelope")), strings.Repeat("0", 64), 1)
			})},
		{name: "R-03_signed_by_our_own_key", want: ErrUntrustedSigner, reason: ReasonUntrustedSigner,
			token: func(t testing.TB, f *fixture) []byte {
				r := testReceipt(StatusAccepted)
				r.Issuer, r.Audience = "US", "JP"
				tok, err := IssueReceipt(r, f.us.Signing)
				if err != nil {
					t.Fatal(err)
				}
				return tok
			}},
		{name: "R-03_iss_not_peer", want: ErrClaims, reason: ReasonClaimsInvalid,
			token: rawReceipt(func(p string) string { return strings.Replace(p, `"iss":"JP"`, `"iss":"KR"`, 1) })},
		{name: "R-04_message_as_receipt", want: ErrMalformed, reason: ReasonMalformed,
			token: func(t testing.TB, f *fixture) []byte {
				c := testClaims()
				c.Issuer, c.Audience, c.Sender, c.Recipient = "JP", "US", "JP:MHLW", ""
				s, err := Seal(c, f.jp.Signing, f.us.Encryption.Cert)
				if err != nil {
					t.Fatal(err)
				}
				return s.Inner
			}},
		{name: "R-04_receipt_without_typ", want: ErrMalformed, reason: ReasonMalformed,
			token: func(t testing.TB, f *fixture) []byte {
				h := strings.Replace(jwsHeaderJSON(f.jp.Signing, TypReceipt), `"typ":"cmx-rcpt+jwt",`, "", 1)
				r := testReceipt(StatusAccepted)
				r.ID = ReceiptID(r.Msg, r.Status)
				return []byte(signRaw(t, f.jp.Signing.Key, h, payloadOf(t, r)))
			}},
		{name: "R-06_jti_other_status", want: ErrClaims, reason: ReasonClaimsInvalid,
			token: rawReceipt(func(p string) string { return strings.Replace(p, ".accepted", ".rejected", 1) })},
		{name: "R-07_iat_future", want: ErrNotYetValid, reason: ReasonNotYetValid, transient: true,
			token: issued(func(r *Receipt) { r.IssuedAt = at(10 * time.Minute) })},
		{name: "R-07_iat_within_leeway", token: issued(func(r *Receipt) { r.IssuedAt = at(time.Minute) })},
		{name: "R-10_pretty_printed", want: ErrCrypto, reason: ReasonSignatureInvalid,
			token: receiptEdited(func(t testing.TB, tok []byte) []byte {
				return editSeg(t, tok, 1, func(p []byte) []byte {
					var out bytes.Buffer
					_ = json.Indent(&out, p, "", "  ")
					return out.Bytes()
				})
			})},
		{name: "R-10_claim_altered", want: ErrCrypto, reason: ReasonSignatureInvalid,
			token: receiptEdited(func(t testing.TB, tok []byte) []byte {
				return editSeg(t, tok, 1, func(p []byte) []byte { return bytes.Replace(p, []byte("accepted"), []byte("rejected"), 1) })
			})},
		{name: "R-10_header_reencoded", want: ErrCrypto, reason: ReasonSignatureInvalid,
			token: receiptEdited(func(t testing.TB, tok []byte) []byte {
				return editSeg(t, tok, 0, func(h []byte) []byte {
					var m map[string]json.RawMessage
					_ = json.Unmarshal(h, &m)
					out, _ := json.Marshal(m) // sorted keys, same members
					return append(out[:len(out)-1:len(out)-1], " }"...)
				})
			})},
		{name: "R-10_truncated_signature", want: ErrCrypto, reason: ReasonSignatureInvalid,
			token: receiptEdited(func(_ testing.TB, tok []byte) []byte { return tok[:len(tok)-10] })},
		{name: "R-10_truncated_to_two_segments", want: ErrMalformed, reason: ReasonMalformed,
			token: receiptEdited(func(_ testing.TB, tok []byte) []byte { return tok[:bytes.LastIndexByte(tok, '.')] })},
		{name: "R-10_base64_padding", want: ErrMalformed, reason: ReasonMalformed,
			token: receiptEdited(func(_ testing.TB, tok []byte) []byte { return append(tok, "=="...) })},
		{name: "R-11_rejected_bad_signature", want: ErrCrypto, reason: ReasonSignatureInvalid,
			token: func(t testing.TB, f *fixture) []byte {
				tok := f.issue(t, testReceipt(StatusRejected))
				return editSeg(t, tok, 2, func(s []byte) []byte { s[5] ^= 1; return s })
			}},
		{name: "aud_not_us", want: ErrClaims, reason: ReasonClaimsInvalid,
			token: issued(nil), verifier: func(v *ReceiptVerifier) { v.Self = "KR" }},
		{name: "duplicate_claim", want: ErrClaims, reason: ReasonClaimsInvalid,
			token: rawReceipt(func(p string) string { return strings.Replace(p, `"status"`, `"status":"rejected","status"`, 1) })},
		{name: "unknown_claim", want: ErrClaims, reason: ReasonClaimsInvalid,
			token: rawReceipt(func(p string) string { return strings.Replace(p, `{`, `{"rcpt":"x",`, 1) })},
		{name: "nested_claim", want: ErrClaims, reason: ReasonClaimsInvalid,
			token: rawReceipt(func(p string) string { return strings.Replace(p, `"JP"`, `["JP"]`, 1) })},
		{name: "jwk_header", want: ErrMalformed, reason: ReasonMalformed,
			token: func(t testing.TB, f *fixture) []byte {
				h := strings.TrimSuffix(jwsHeaderJSON(f.jp.Signing, TypReceipt), "}") + `,"jwk":{}}`
				return []byte(signRaw(t, f.jp.Signing.Key, h, payloadOf(t, testReceipt(StatusAccepted))))
			}},
		{name: "over_size_cap", want: ErrTooLarge, reason: ReasonTooLarge,
			token: issued(nil), verifier: func(v *ReceiptVerifier) { v.MaxBytes = 100 }},
		{name: "jwe_instead_of_jws", want: ErrMalformed, reason: ReasonMalformed,
			token: func(t testing.TB, f *fixture) []byte { return f.seal(t, testClaims()).Envelope }},
	}
}

func TestVerifyReceipt(t *testing.T) {
	f := newFixture(t)
	for _, tt := range receiptCases() {
		t.Run(tt.name, func(t *testing.T) {
			v := *f.usReceipt
			if tt.verifier != nil {
				tt.verifier(&v)
			}
			vr, err := v.Verify(tt.token(t, f), testNow)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if vr.Audience != "US" || !chainOK(f.jpBundle, vr.Chain, testNow) {
					t.Fatal("accepted without aud = US and a verified chain")
				}
				return
			}
			checkErr(t, err, tt.want, tt.reason, tt.transient)
		})
	}
}

// TestReceiptR05 checks that issuing the same receipt twice gives two byte
// forms (ECDSA is randomised) of one verified content: the caller keeps the
// first, so the id and digests must agree.
func TestReceiptR05(t *testing.T) {
	f := newFixture(t)
	a, b := f.issue(t, testReceipt(StatusAccepted)), f.issue(t, testReceipt(StatusAccepted))
	if bytes.Equal(a, b) {
		t.Fatal("two signatures are byte-identical; ECDSA should be randomised")
	}
	va, errA := f.usReceipt.Verify(a, testNow)
	vb, errB := f.usReceipt.Verify(b, testNow)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if va.Receipt != vb.Receipt || va.ID != ReceiptID(testMsgID, StatusAccepted) {
		t.Errorf("same receipt verified to different content: %+v vs %+v", va.Receipt, vb.Receipt)
	}
}

// TestReceiptR02Binding: a receipt for a sealed message carries the digests
// the sender compares with what it sent.
func TestReceiptR02Binding(t *testing.T) {
	f := newFixture(t)
	s := f.seal(t, testClaims())
	op, err := f.jpOpener.Open(s.Envelope, testNow)
	if err != nil {
		t.Fatal(err)
	}
	r := &Receipt{Issuer: "JP", Audience: op.Claims.Issuer, IssuedAt: testNow.Unix(), Msg: op.Claims.ID,
		Status: StatusAccepted, EnvSHA256: op.EnvSHA256, MsgSHA256: op.MsgSHA256}
	vr, err := f.usReceipt.Verify(f.issue(t, r), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if vr.EnvSHA256 != s.EnvSHA256 || vr.MsgSHA256 != s.MsgSHA256 {
		t.Error("receipt digests do not match the sealed envelope")
	}
	if vr.EnvSHA256 == Digest(append(s.Envelope, 'x')) {
		t.Error("digest does not depend on the exact bytes")
	}
}

func TestMisconfigured(t *testing.T) {
	f := newFixture(t)
	env := f.seal(t, testClaims()).Envelope
	for name, o := range map[string]*Opener{
		"zero":    {},
		"no_keys": {Self: "JP", Peer: f.usBundle},
		"no_peer": {Self: "JP", Keys: f.jpKeys},
	} {
		if _, err := o.Open(env, testNow); !errors.Is(err, errOpener) {
			t.Errorf("%s: Open error = %v, want errOpener", name, err)
		}
	}
	if _, err := (&ReceiptVerifier{}).Verify([]byte("x"), testNow); !errors.Is(err, errVerifier) {
		t.Errorf("ReceiptVerifier without Peer: %v", err)
	}
}
