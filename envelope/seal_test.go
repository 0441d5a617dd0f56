package envelope

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cmx-exchange/cmx/certs"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// headerMembers returns the sorted member names of a compact token's
// protected header.
func headerMembers(t testing.TB, tok []byte) []string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(segments(tok)[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

func TestSealOpen(t *testing.T) {
	f := newFixture(t)
	c := testClaims()
	s := f.seal(t, c)

	if got, want := headerMembers(t, s.Envelope), []string{"alg", "cty", "enc", "epk", "kid"}; !slices.Equal(got, want) {
		t.Errorf("outer header members = %v, want %v", got, want)
	}
	if got, want := headerMembers(t, s.Inner), []string{"alg", "kid", "typ", "x5c"}; !slices.Equal(got, want) {
		t.Errorf("inner header members = %v, want %v", got, want)
	}
	if s.EnvSHA256 != Digest(s.Envelope) || s.MsgSHA256 != Digest(s.Inner) {
		t.Error("Sealed digests are not the digests of its bytes")
	}

	op, err := f.jpOpener.Open(s.Envelope, testNow)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !reflect.DeepEqual(&op.Claims, c) {
		t.Errorf("claims = %+v, want %+v", op.Claims, *c)
	}
	if !bytes.Equal(op.Inner, s.Inner) || op.EnvSHA256 != s.EnvSHA256 || op.MsgSHA256 != s.MsgSHA256 {
		t.Error("Opened inner or digests differ from Sealed")
	}
	if len(op.Chain) != 2 || !op.Chain[0].Equal(f.us.Signing.Cert) {
		t.Errorf("chain leaf is not the US signing certificate")
	}

	in, err := f.jpOpener.OpenInner(s.Inner, testNow)
	if err != nil {
		t.Fatalf("OpenInner: %v", err)
	}
	if in.EnvSHA256 != "" || in.MsgSHA256 != s.MsgSHA256 || !reflect.DeepEqual(in.Claims, op.Claims) {
		t.Error("OpenInner result differs from Open")
	}
}

// TestSealGolden pins the decrypted claims of a sealed message byte for byte:
// the claims are encoded once, in field order, without HTML escaping.
func TestSealGolden(t *testing.T) {
	f := newFixture(t)
	s := f.seal(t, testClaims())
	op, err := f.jpOpener.Open(s.Envelope, testNow)
	if err != nil {
		t.Fatal(err)
	}
	segs := segments(op.Inner)
	payload, err := base64.RawURLEncoding.DecodeString(segs[1])
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "sealed_claims.golden.json")
	if *update {
		if err := os.WriteFile(golden, append(payload, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(append(payload, '\n'), want) {
		t.Errorf("decrypted claims differ from %s:\n got %s\nwant %s", golden, payload, want)
	}
}

func TestSealRefuses(t *testing.T) {
	f := newFixture(t)
	badKID := *f.us.Signing
	badKID.KID = f.jp.Signing.KID
	otherKey := *f.us.Signing
	otherKey.Key = f.jp.Signing.Key
	tests := []struct {
		name      string
		claims    *Claims
		signer    *certs.Identity
		recipient *x509.Certificate
		want      error
	}{
		{name: "invalid_claims", claims: &Claims{}, signer: f.us.Signing, want: ErrClaims},
		{name: "nil_signer", claims: testClaims(), signer: nil, want: errSeal},
		{name: "kid_not_leaf", claims: testClaims(), signer: &badKID, want: errSeal},
		{name: "key_not_leaf", claims: testClaims(), signer: &otherKey, want: errSeal},
		{name: "recipient_signing_cert", claims: testClaims(), signer: f.us.Signing,
			recipient: f.jp.Signing.Cert, want: errSeal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rcpt := f.jp.Encryption.Cert
			if tt.recipient != nil {
				rcpt = tt.recipient
			}
			_, err := Seal(tt.claims, tt.signer, rcpt)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Seal error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestValidateClaims(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Claims)
		want   string // substring of the error; "" = valid
	}{
		{name: "valid", mutate: func(*Claims) {}},
		{name: "minimal", mutate: func(c *Claims) { c.Recipient, c.CorrelationID, c.Marking = "", "", "" }},
		{name: "iss_lowercase", mutate: func(c *Claims) { c.Issuer, c.Sender = "us", "us:DOL" }, want: "iss is not"},
		{name: "aud_three_letters", mutate: func(c *Claims) { c.Audience, c.Recipient = "JPN", "" }, want: "aud is not"},
		{name: "iss_equals_aud", mutate: func(c *Claims) { c.Audience, c.Recipient = "US", "" }, want: "iss equals aud"},
		{name: "jti_uppercase", mutate: func(c *Claims) { c.ID = strings.ToUpper(c.ID) }, want: "jti"},
		{name: "jti_v4", mutate: func(c *Claims) { c.ID = "01959f5e-7a00-4abc-8def-0123456789ab" }, want: "jti"},
		{name: "iat_zero", mutate: func(c *Claims) { c.IssuedAt = 0 }, want: "iat"},
		{name: "exp_equals_iat", mutate: func(c *Claims) { c.Expiry = c.IssuedAt }, want: "exp"},
		{name: "unknown_type", mutate: func(c *Claims) { c.Type = "gossip" }, want: "unknown type"},
		{name: "schema_other_type", mutate: func(c *Claims) { c.Schema = NonMarketPracticeReport.Schema() }, want: "schema"},
		{name: "sender_other_party", mutate: func(c *Claims) { c.Sender = "JP:MHLW" }, want: "sender"},
		{name: "sender_no_agency", mutate: func(c *Claims) { c.Sender = "US:" }, want: "sender"},
		{name: "sender_leading_dash", mutate: func(c *Claims) { c.Sender = "US:-DOL" }, want: "sender"},
		{name: "sender_agency_33", mutate: func(c *Claims) { c.Sender = "US:" + strings.Repeat("A", 33) }, want: "sender"},
		{name: "sender_agency_32", mutate: func(c *Claims) { c.Sender = "US:" + strings.Repeat("A", 32) }},
		{name: "recipient_our_party", mutate: func(c *Claims) { c.Recipient = "US:DOL" }, want: "recipient"},
		{name: "correlation_129", mutate: func(c *Claims) { c.CorrelationID = strings.Repeat("x", 129) }, want: "correlation_id"},
		{name: "correlation_newline", mutate: func(c *Claims) { c.CorrelationID = "a\nb" }, want: "correlation_id"},
		{name: "marking_lowercase", mutate: func(c *Claims) { c.Marking = "tlp:amber" }, want: "marking"},
		{name: "marking_65", mutate: func(c *Claims) { c.Marking = strings.Repeat("A", 65) }, want: "marking"},
		{name: "body_array", mutate: func(c *Claims) { c.Body = json.RawMessage(`[1]`) }, want: "body"},
		{name: "body_empty", mutate: func(c *Claims) { c.Body = nil }, want: "body"},
		{name: "body_duplicate_key", mutate: func(c *Claims) { c.Body = json.RawMessage(`{"a":1,"a":2}`) }, want: "body"},
		{name: "body_bad_utf8", mutate: func(c *Claims) { c.Body = json.RawMessage("{\"a\":\"\xff\"}") }, want: "body"},
		{name: "body_too_deep", mutate: func(c *Claims) { c.Body = nested(maxClaimsDepth) }, want: "body"},
		{name: "body_deepest", mutate: func(c *Claims) { c.Body = nested(maxClaimsDepth - 1) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testClaims()
			tt.mutate(c)
			err := ValidateClaims(c)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ValidateClaims: %v", err)
				}
				return
			}
			checkErr(t, err, ErrClaims, ReasonClaimsInvalid, false)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
	if err := ValidateClaims(nil); !errors.Is(err, ErrClaims) {
		t.Errorf("ValidateClaims(nil) = %v", err)
	}
}

// nested returns a JSON object nested depth levels deep (depth 1 = "{}").
func nested(depth int) json.RawMessage {
	return json.RawMessage(strings.Repeat(`{"a":`, depth-1) + "{}" + strings.Repeat("}", depth-1))
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := NewID()
		if !ValidID(id) || seen[id] {
			t.Fatalf("NewID() = %q: invalid or repeated", id)
		}
		seen[id] = true
	}
	for _, tt := range []struct {
		id   string
		want bool
	}{
		{testMsgID, true},
		{strings.ToUpper(testMsgID), false},
		{"{" + testMsgID + "}", false},
		{strings.ReplaceAll(testMsgID, "-", ""), false},
		{"01959f5e-7a00-4abc-8def-0123456789ab", false}, // version 4
		{"01959f5e-7a00-7abc-cdef-0123456789ab", false}, // variant
		{"01959f5e-7a00-7abc-8def-0123456789a", false},
		{"", false},
	} {
		if got := ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestLimits(t *testing.T) {
	f := newFixture(t)
	body := `{"data":"` + strings.Repeat("<", DefaultMaxBodyBytes-12) + `"}`
	c := testClaims()
	c.Body = json.RawMessage(body)
	s := f.seal(t, c)
	if max := (Limits{}).MaxEnvelopeBytes(); len(s.Envelope) > max {
		t.Fatalf("a maximal legitimate envelope is %d bytes, over MaxEnvelopeBytes %d", len(s.Envelope), max)
	}
	if _, err := f.jpOpener.Open(s.Envelope, testNow); err != nil {
		t.Fatalf("Open of a maximal body: %v", err)
	}
	if (Limits{MaxBodyBytes: 1 << 10}).MaxEnvelopeBytes() >= (Limits{}).MaxEnvelopeBytes() {
		t.Error("MaxEnvelopeBytes does not follow MaxBodyBytes")
	}
}
