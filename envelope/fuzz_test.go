package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// maxSeedBytes keeps the huge catalogue inputs (a million dots, a token
// over the cap) out of the fuzz corpus; the table tests cover them.
const maxSeedBytes = 8 << 10

// FuzzOpen feeds arbitrary envelopes to the JP opener, seeded with every
// catalogue input of TestOpen. Property: no panic; every failure is an
// *Error with a reason; an accepted message names us as aud and its chain
// verifies to the peer's pinned roots.
func FuzzOpen(f *testing.F) {
	fx := newFixture(f)
	for _, tt := range append(append(openCases(), openCases2()...), openCases3()...) {
		if tt.opener != nil {
			continue
		}
		if env := tt.env(f, fx); len(env) <= maxSeedBytes {
			f.Add(env)
		}
	}
	f.Add([]byte(""))
	f.Add([]byte("...."))
	o := fx.jpOpener
	f.Fuzz(func(t *testing.T, env []byte) {
		op, err := o.Open(env, testNow)
		if err != nil {
			mustBeEnvelopeError(t, err)
			return
		}
		if op.Claims.Audience != o.Self || !chainOK(fx.usBundle, op.Chain, testNow) {
			t.Fatalf("accepted without aud = %s and a verified chain", o.Self)
		}
		if op.EnvSHA256 != Digest(env) {
			t.Fatal("EnvSHA256 is not the digest of the input")
		}
	})
}

// FuzzVerifyReceipt feeds arbitrary tokens to the US receipt verifier,
// seeded with the catalogue inputs of TestVerifyReceipt. Property: no panic;
// failures are *Error; an accepted receipt names us and its chain verifies.
func FuzzVerifyReceipt(f *testing.F) {
	fx := newFixture(f)
	for _, tt := range receiptCases() {
		if tt.verifier == nil {
			f.Add(tt.token(f, fx))
		}
	}
	f.Add([]byte(".."))
	v := fx.usReceipt
	f.Fuzz(func(t *testing.T, tok []byte) {
		vr, err := v.Verify(tok, testNow)
		if err != nil {
			mustBeEnvelopeError(t, err)
			return
		}
		if vr.Audience != v.Self || !chainOK(fx.jpBundle, vr.Chain, testNow) || vr.ID != ReceiptID(vr.Msg, vr.Status) {
			t.Fatal("accepted a receipt that is not for us, not chained, or with a foreign id")
		}
	})
}

// FuzzCheckJSON: the strict scanner accepts exactly what the reference
// implementation on encoding/json's tokenizer accepts, and whatever it
// accepts, encoding/json reads as one object.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":1}`, `{"a":1,"a":2}`, `{"a":{"b":[1,{"c":null}]}}`, `{"a":"\u0061","\u0061":1}`,
		`[1]`, `{"a":1} {}`, "{\"a\":\"\xff\"}", `{"a":[[[[[[[[[[]]]]]]]]]]}`, ` {"a" : true } `,
	} {
		f.Add([]byte(s))
	}
	for _, tt := range strictCases {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := checkJSON(data, 4, nil)
		if ref := refCheckJSON(data, 4, nil); (err == nil) != (ref == nil) {
			t.Fatalf("checkJSON = %v, reference = %v on %q", err, ref, data)
		}
		if err != nil {
			return
		}
		trimmed := bytes.TrimSpace(data)
		if !json.Valid(data) || len(trimmed) == 0 || trimmed[0] != '{' {
			t.Fatalf("checkJSON accepted %q, which is not one JSON object", data)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("accepted but not an object: %v", err)
		}
	})
}

func mustBeEnvelopeError(t *testing.T, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Reason == "" || !e.Reason.Valid() {
		t.Fatalf("failure %v is not an *Error with a known reason", err)
	}
}
