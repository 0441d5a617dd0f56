package envelope

import (
	"errors"
	"testing"
)

// Every reason code cmx issues can be signed and verified; a verifier also
// accepts a well-formed code it does not know (a peer on a newer version),
// while an issuer refuses one.
func TestReceiptReasonCodes(t *testing.T) {
	f := newFixture(t)
	for _, reason := range []Reason{ReasonMalformed, ReasonDecryptFailed, ReasonSchemaInvalid, ReasonUnknownRecipient,
		ReasonDuplicateConflict, ReasonPolicyDenied, ReasonRoutingMismatch, ReasonDeliveryFailed} {
		r := testReceipt(StatusRejected)
		r.Reason = reason
		tok := f.issue(t, r)
		vr, err := f.usReceipt.Verify(tok, testNow)
		if err != nil || vr.Reason != reason {
			t.Errorf("%s: Verify = %v, %v", reason, vr, err)
		}
	}

	r := testReceipt(StatusRejected)
	r.Reason = "quota_exceeded"
	if _, err := IssueReceipt(r, f.jp.Signing); !errors.Is(err, ErrClaims) {
		t.Errorf("IssueReceipt with an unknown reason: err = %v, want ErrClaims", err)
	}
	tok, err := signCompact(mustJSON(t, r), TypReceipt, f.jp.Signing)
	if err != nil {
		t.Fatal(err)
	}
	if vr, err := f.usReceipt.Verify([]byte(tok), testNow); err != nil || vr.Reason != "quota_exceeded" {
		t.Errorf("Verify of a well-formed unknown reason: %v, %v", vr, err)
	}
	for _, bad := range []Reason{"Quota", "_x", "x-y", "a b"} {
		r.Reason = bad
		tok, err := signCompact(mustJSON(t, r), TypReceipt, f.jp.Signing)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.usReceipt.Verify([]byte(tok), testNow); !errors.Is(err, ErrClaims) {
			t.Errorf("Verify of reason %q: err = %v, want ErrClaims", bad, err)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := encodeJSON(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
