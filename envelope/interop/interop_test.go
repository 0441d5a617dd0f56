package interop

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/certs/certstest"
	"github.com/cmx-exchange/cmx/envelope"
)

// opened is the answer of jose.mjs open.
type opened struct {
	JWEHeader header          `json:"jwe_header"`
	JWSHeader header          `json:"jws_header"`
	Claims    json.RawMessage `json:"claims"`
	Message   string          `json:"message"`
}

// TestJoseOpensCmxEnvelope: an envelope sealed by cmx decrypts and verifies
// in panva/jose with the profile's algorithms only, carries exactly the
// contract's header members, and yields the claims cmx sealed.
func TestJoseOpensCmxEnvelope(t *testing.T) {
	toolDir(t)
	us, jp := certstest.NewPKI(t, "US"), certstest.NewPKI(t, "JP")
	for _, typ := range envelope.Types {
		t.Run(string(typ), func(t *testing.T) {
			c := messageClaims(typ)
			sealed, err := envelope.Seal(c, us.Signing, jp.Encryption.Cert)
			if err != nil {
				t.Fatal(err)
			}
			var got opened
			mustJose(t, map[string]any{
				"op":          "open",
				"jwe":         string(sealed.Envelope),
				"key":         pemKey(t, jp.Encryption.Key),
				"signer_cert": pemCert(us.Signing.Cert),
			}, &got)
			checkHeader(t, "JWE", got.JWEHeader, map[string]any{
				"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "cty": "JWT",
				"kid": certs.KID(jp.Encryption.Cert), "epk": nil,
			})
			checkEPK(t, got.JWEHeader["epk"])
			checkHeader(t, "JWS", got.JWSHeader, map[string]any{
				"alg": "ES256", "typ": envelope.TypMessage, "kid": us.Signing.KID, "x5c": x5c(us.Signing),
			})
			if got.Message != string(sealed.Inner) {
				t.Errorf("jose decrypted an inner JWS other than the one cmx sealed")
			}
			if d := envelope.Digest([]byte(got.Message)); d != sealed.MsgSHA256 {
				t.Errorf("msg_sha256 of the decrypted JWS = %s, cmx says %s", d, sealed.MsgSHA256)
			}
			var claims envelope.Claims
			if err := json.Unmarshal(got.Claims, &claims); err != nil {
				t.Fatal(err)
			}
			sameClaims(t, &claims, c)
		})
	}
}

// TestCmxOpensJoseEnvelope: an envelope built by panva/jose from the same
// keys opens in cmx (decryption, chain, signature, claims, schema).
func TestCmxOpensJoseEnvelope(t *testing.T) {
	toolDir(t)
	us, jp := certstest.NewPKI(t, "US"), certstest.NewPKI(t, "JP")
	op := openerJP(t)
	for _, typ := range envelope.Types {
		t.Run(string(typ), func(t *testing.T) {
			c := messageClaims(typ)
			var sealed struct{ JWE, JWS string }
			mustJose(t, map[string]any{
				"op":             "seal",
				"claims":         c,
				"key":            pemKey(t, us.Signing.Key),
				"chain":          pemChain(us.Signing),
				"recipient_cert": pemCert(jp.Encryption.Cert),
			}, &sealed)
			got, err := op.Open([]byte(sealed.JWE), now)
			if err != nil {
				t.Fatalf("Open(jose envelope) = %v", err)
			}
			sameClaims(t, &got.Claims, c)
			if string(got.Inner) != sealed.JWS {
				t.Errorf("Opened.Inner is not the JWS jose signed")
			}
			if got.EnvSHA256 != envelope.Digest([]byte(sealed.JWE)) || got.MsgSHA256 != envelope.Digest([]byte(sealed.JWS)) {
				t.Errorf("digests do not cover the exact jose bytes")
			}
			if !got.Chain[0].Equal(us.Signing.Cert) {
				t.Errorf("verified signer is %q, want the US signing certificate", got.Chain[0].Subject)
			}
		})
	}
}

// receiptFor is a valid receipt from JP to US about a message, for status.
func receiptFor(status envelope.Status) *envelope.Receipt {
	msg := envelope.NewID()
	r := &envelope.Receipt{
		Issuer: "JP", Audience: "US", IssuedAt: now.Unix(), Msg: msg, Status: status,
		EnvSHA256: envelope.Digest([]byte("envelope " + msg)),
		MsgSHA256: envelope.Digest([]byte("message " + msg)),
	}
	switch status {
	case envelope.StatusDelivered:
		r.Recipient, r.DeliveredAt = "JP:MHLW", now.Unix()
	case envelope.StatusRejected:
		r.Reason = envelope.ReasonSchemaInvalid
	}
	r.ID = envelope.ReceiptID(r.Msg, r.Status)
	return r
}

var statuses = []envelope.Status{envelope.StatusAccepted, envelope.StatusDelivered, envelope.StatusRejected}

// TestJoseVerifiesCmxReceipt: a receipt issued by cmx verifies in
// panva/jose (ES256 only) and carries exactly the contract's header.
func TestJoseVerifiesCmxReceipt(t *testing.T) {
	toolDir(t)
	jp := certstest.NewPKI(t, "JP")
	for _, status := range statuses {
		t.Run(string(status), func(t *testing.T) {
			want := receiptFor(status)
			tok, err := envelope.IssueReceipt(want, jp.Signing)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Header header          `json:"header"`
				Claims json.RawMessage `json:"claims"`
			}
			mustJose(t, map[string]any{"op": "verify-receipt", "jws": string(tok), "signer_cert": pemCert(jp.Signing.Cert)}, &got)
			checkHeader(t, "receipt", got.Header, map[string]any{
				"alg": "ES256", "typ": envelope.TypReceipt, "kid": jp.Signing.KID, "x5c": x5c(jp.Signing),
			})
			var r envelope.Receipt
			if err := json.Unmarshal(got.Claims, &r); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&r, want) {
				t.Errorf("receipt claims:\n got %+v\nwant %+v", r, *want)
			}
		})
	}
}

// TestCmxVerifiesJoseReceipt: receipts signed by panva/jose verify in cmx;
// the same tool's receipts with the wrong typ or the wrong issuer key
// do not.
func TestCmxVerifiesJoseReceipt(t *testing.T) {
	toolDir(t)
	us, jp := certstest.NewPKI(t, "US"), certstest.NewPKI(t, "JP")
	v := &envelope.ReceiptVerifier{Self: "US", Peer: certstest.Bundle(t, "JP")}
	for _, status := range statuses {
		t.Run(string(status), func(t *testing.T) {
			want := receiptFor(status)
			var signed struct{ JWS string }
			mustJose(t, map[string]any{"op": "sign-receipt", "claims": want, "key": pemKey(t, jp.Signing.Key), "chain": pemChain(jp.Signing)}, &signed)
			got, err := v.Verify([]byte(signed.JWS), now)
			if err != nil {
				t.Fatalf("Verify(jose receipt) = %v", err)
			}
			if !reflect.DeepEqual(&got.Receipt, want) {
				t.Errorf("receipt:\n got %+v\nwant %+v", got.Receipt, *want)
			}
		})
	}
	tests := []struct {
		name   string
		signer *certs.Identity
		header map[string]any
		want   error
		reason envelope.Reason
	}{
		{name: "R-04_message_typ", signer: jp.Signing, header: map[string]any{"typ": envelope.TypMessage}, want: envelope.ErrMalformed, reason: envelope.ReasonMalformed},
		{name: "R-04_no_typ", signer: jp.Signing, header: map[string]any{"typ": nil}, want: envelope.ErrMalformed, reason: envelope.ReasonMalformed},
		{name: "R-03_signed_by_sender", signer: us.Signing, want: envelope.ErrUntrustedSigner, reason: envelope.ReasonUntrustedSigner},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var signed struct{ JWS string }
			mustJose(t, map[string]any{
				"op": "sign-receipt", "claims": receiptFor(envelope.StatusAccepted),
				"key": pemKey(t, tt.signer.Key), "chain": pemChain(tt.signer), "jws_header": tt.header,
			}, &signed)
			_, err := v.Verify([]byte(signed.JWS), now)
			if !errors.Is(err, tt.want) || envelope.ReasonOf(err) != tt.reason {
				t.Fatalf("Verify = %v, want %v with reason %s", err, tt.want, tt.reason)
			}
		})
	}
}

// TestOpen holds the catalogue items that an independent implementation
// can build for real: well-formed, correctly encrypted envelopes that are
// outside the cmx profile. cmx must refuse each with a clear error.
func TestOpen(t *testing.T) {
	toolDir(t)
	us, jp := certstest.NewPKI(t, "US"), certstest.NewPKI(t, "JP")
	op := openerJP(t)
	tests := []struct {
		name      string
		jweHeader map[string]any
		jwsHeader map[string]any
		want      error
		reason    envelope.Reason
		detail    string // a fragment the error must name
	}{
		{name: "J-12_direct_ECDH-ES", jweHeader: map[string]any{"alg": "ECDH-ES"}, want: envelope.ErrMalformed, reason: envelope.ReasonMalformed, detail: "empty or non-canonical segment"}, // direct agreement has no encrypted_key
		{name: "J-19_enc_A128GCM", jweHeader: map[string]any{"enc": "A128GCM"}, want: envelope.ErrMalformed, reason: envelope.ReasonMalformed, detail: "outside the profile"},
		{name: "J-19_enc_A256CBC-HS512", jweHeader: map[string]any{"enc": "A256CBC-HS512"}, want: envelope.ErrMalformed, reason: envelope.ReasonMalformed, detail: "outside the profile"},
		{name: "J-14_zip_DEF", jweHeader: map[string]any{"zip": "DEF"}, want: envelope.ErrMalformed, reason: envelope.ReasonMalformed, detail: "unknown member"},
		{name: "J-05_jku_in_JWE", jweHeader: map[string]any{"jku": "http://169.254.169.254/keys"}, want: envelope.ErrMalformed, reason: envelope.ReasonMalformed, detail: "unknown member"},
		{name: "J-11_cty_missing", jweHeader: map[string]any{"cty": nil}, want: envelope.ErrMalformed, reason: envelope.ReasonMalformed, detail: "missing member"},
		{name: "J-21_receipt_typ_inside", jwsHeader: map[string]any{"typ": envelope.TypReceipt}, want: envelope.ErrMalformed, reason: envelope.ReasonMalformed, detail: "typ"},
		{name: "J-05_x5u_in_JWS", jwsHeader: map[string]any{"x5u": "http://169.254.169.254/chain.pem"}, want: envelope.ErrMalformed, reason: envelope.ReasonMalformed, detail: "unknown member"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sealed struct{ JWE string }
			mustJose(t, map[string]any{
				"op": "seal", "claims": messageClaims(envelope.LaborEnforcementNotice),
				"key": pemKey(t, us.Signing.Key), "chain": pemChain(us.Signing),
				"recipient_cert": pemCert(jp.Encryption.Cert),
				"jwe_header":     tt.jweHeader, "jws_header": tt.jwsHeader,
			}, &sealed)
			_, err := op.Open([]byte(sealed.JWE), now)
			if !errors.Is(err, tt.want) || envelope.ReasonOf(err) != tt.reason {
				t.Fatalf("Open = %v, want %v with reason %s", err, tt.want, tt.reason)
			}
			if !strings.Contains(err.Error(), tt.detail) {
				t.Errorf("Open = %q, want an error naming %s", err, tt.detail)
			}
		})
	}
}

// TestLockPinsJose: package.json and package-lock.json pin exactly the
// version the tests expect, with an integrity hash, so npm ci installs
// the same bytes everywhere.
func TestLockPinsJose(t *testing.T) {
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	var lock struct {
		Packages map[string]struct {
			Version   string `json:"version"`
			Integrity string `json:"integrity"`
		} `json:"packages"`
	}
	for name, v := range map[string]any{"package.json": &pkg, "package-lock.json": &lock} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if got := pkg.Dependencies["jose"]; got != joseVersion {
		t.Errorf("package.json pins jose %q, want exactly %q", got, joseVersion)
	}
	locked := lock.Packages["node_modules/jose"]
	if locked.Version != joseVersion || !strings.HasPrefix(locked.Integrity, "sha512-") {
		t.Errorf("package-lock.json has jose %q (integrity %q), want %q with a sha512 integrity", locked.Version, locked.Integrity, joseVersion)
	}
}
