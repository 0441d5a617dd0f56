package envelope

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/certs/certstest"
	jose "github.com/go-jose/go-jose/v4"
)

// openCase is one input to Opener.Open and the failure it must produce.
type openCase struct {
	name      string
	env       func(t testing.TB, f *fixture) []byte
	opener    func(t testing.TB, f *fixture, o *Opener) // optional change to a copy of the JP opener
	want      error                                     // nil = must open
	reason    Reason
	transient bool
}

// inner builds a message JWS by hand from header members and a payload,
// signed with the US signing key, and encrypts it to JP.
type innerBuilder struct {
	t testing.TB
	f *fixture
}

func (b innerBuilder) members(id *certs.Identity) (alg, typ, kid, x5c string) {
	x5cJSON, _ := json.Marshal(certstest.X5C(id))
	return `"alg":"ES256"`, `"typ":"` + TypMessage + `"`, `"kid":"` + id.KID + `"`, `"x5c":` + string(x5cJSON)
}

// header joins members into a JSON object, in order, verbatim.
func header(members ...string) string { return "{" + strings.Join(members, ",") + "}" }

// usHeader is the US signing header with extra members appended and
// replacements applied (old, new pairs).
func (b innerBuilder) usHeader(extra []string, repl ...string) string {
	alg, typ, kid, x5c := b.members(b.f.us.Signing)
	h := header(append([]string{alg, typ, kid, x5c}, extra...)...)
	return strings.NewReplacer(repl...).Replace(h)
}

func (b innerBuilder) payload(mutate func(*Claims)) []byte {
	c := testClaims()
	if mutate != nil {
		mutate(c)
	}
	return payloadOf(b.t, c)
}

// env signs header+payload with the US signing key and encrypts it to JP.
func (b innerBuilder) env(hdr string, payload []byte) []byte {
	return b.f.encryptCompact(b.t, []byte(signRaw(b.t, b.f.us.Signing.Key, hdr, payload)))
}

func build(fn func(b innerBuilder) []byte) func(testing.TB, *fixture) []byte {
	return func(t testing.TB, f *fixture) []byte { return fn(innerBuilder{t: t, f: f}) }
}

// sealed returns a valid envelope of claims changed by mutate.
func sealed(mutate func(*Claims)) func(testing.TB, *fixture) []byte {
	return func(t testing.TB, f *fixture) []byte {
		c := testClaims()
		if mutate != nil {
			mutate(c)
		}
		return f.seal(t, c).Envelope
	}
}

// edited returns a valid envelope passed through edit.
func edited(edit func(t testing.TB, f *fixture, env []byte) []byte) func(testing.TB, *fixture) []byte {
	return func(t testing.TB, f *fixture) []byte { return edit(t, f, f.seal(t, testClaims()).Envelope) }
}

func outerHeader(edit func(h string) string) func(testing.TB, *fixture) []byte {
	return edited(func(t testing.TB, f *fixture, env []byte) []byte { return withOuterHeader(t, env, edit) })
}

func replaceIn(old, new string) func(string) string {
	return func(s string) string { return strings.Replace(s, old, new, 1) }
}

func addMember(m string) func(string) string {
	return func(s string) string { return strings.TrimSuffix(s, "}") + "," + m + "}" }
}

// setEPK replaces the epk of an outer header.
func setEPK(epk string) func(string) string {
	return func(s string) string {
		var h map[string]json.RawMessage
		if err := json.Unmarshal([]byte(s), &h); err != nil {
			panic(err)
		}
		h["epk"] = json.RawMessage(epk)
		out, _ := json.Marshal(h)
		return string(out)
	}
}

// ecPoint formats an EC JWK.
func ecPoint(crv string, x, y []byte) string {
	return fmt.Sprintf(`{"kty":"EC","crv":%q,"x":%q,"y":%q}`, crv, b64s(x), b64s(y))
}

func bytesOf(n int, v byte) []byte {
	b := make([]byte, n)
	b[n-1] = v
	return b
}

func jsonSerialized(t testing.TB, obj interface{ FullSerialize() string }) []byte {
	t.Helper()
	return []byte(obj.FullSerialize())
}

func openCases() []openCase {
	return []openCase{
		{name: "valid", env: sealed(nil)},
		{name: "J-01_alg_none_empty_signature", want: ErrMalformed, reason: ReasonMalformed,
			env: build(func(b innerBuilder) []byte {
				h := b.usHeader(nil, `"alg":"ES256"`, `"alg":"none"`)
				return b.f.encryptCompact(b.t, []byte(b64s([]byte(h))+"."+b64s(b.payload(nil))+"."))
			})},
		{name: "J-01_alg_none_with_signature", want: ErrCrypto, reason: ReasonSignatureInvalid,
			env: build(func(b innerBuilder) []byte {
				return b.env(b.usHeader(nil, `"alg":"ES256"`, `"alg":"none"`), b.payload(nil))
			})},
		{name: "J-02_HS256_keyed_with_peer_public_key", want: ErrCrypto, reason: ReasonSignatureInvalid,
			env: build(func(b innerBuilder) []byte {
				h := b.usHeader(nil, `"alg":"ES256"`, `"alg":"HS256"`)
				input := b64s([]byte(h)) + "." + b64s(b.payload(nil))
				mac := hmac.New(sha256.New, b.f.us.Signing.Cert.RawSubjectPublicKeyInfo)
				mac.Write([]byte(input))
				return b.f.encryptCompact(b.t, []byte(input+"."+b64s(mac.Sum(nil))))
			})},
		{name: "J-03_ES256_header_P384_leaf", want: ErrCrypto, reason: ReasonSignatureInvalid,
			env: build(func(b innerBuilder) []byte {
				key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
				id := certstest.LeafWithKey(b.t, b.f.us, key, nil)
				alg, typ, kid, x5c := b.members(id)
				return b.f.encryptCompact(b.t, []byte(signRaw(b.t, key, header(alg, typ, kid, x5c), b.payload(nil))))
			})},
		{name: "J-03_ES256_header_RSA_leaf", want: ErrUntrustedSigner, reason: ReasonUntrustedSigner,
			env: build(func(b innerBuilder) []byte {
				key, _ := rsa.GenerateKey(rand.Reader, 2048)
				id := certstest.LeafWithKey(b.t, b.f.us, key, nil)
				alg, typ, kid, x5c := b.members(id)
				return b.env(header(alg, typ, kid, x5c), b.payload(nil))
			})},
		{name: "J-04_embedded_jwk", want: ErrMalformed, reason: ReasonMalformed,
			env: build(func(b innerBuilder) []byte {
				k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				jwk, _ := jose.JSONWebKey{Key: &k.PublicKey}.MarshalJSON()
				return b.f.encryptCompact(b.t, []byte(signRaw(b.t, k, b.usHeader([]string{`"jwk":` + string(jwk)}), b.payload(nil))))
			})},
		{name: "J-05_jku", want: ErrMalformed, reason: ReasonMalformed,
			env: build(func(b innerBuilder) []byte {
				return b.env(b.usHeader([]string{`"jku":"http://169.254.169.254/latest/keys"`}), b.payload(nil))
			})},
		{name: "J-05_x5u", want: ErrMalformed, reason: ReasonMalformed,
			env: build(func(b innerBuilder) []byte {
				return b.env(b.usHeader([]string{`"x5u":"https://attacker.invalid/chain.pem"`}), b.payload(nil))
			})},
		{name: "J-06_outer_kid_path", want: ErrCrypto, reason: ReasonDecryptFailed,
			env: outerHeader(kidTo("../../../../dev/null"))},
		{name: "J-06_outer_kid_sql", want: ErrCrypto, reason: ReasonDecryptFailed,
			env: outerHeader(kidTo("' OR 1=1 --"))},
		{name: "J-06_outer_kid_10kB", want: ErrMalformed, reason: ReasonMalformed,
			env: outerHeader(kidTo(strings.Repeat("A", 10_000)))},
		{name: "J-06_outer_kid_not_utf8", want: ErrMalformed, reason: ReasonMalformed,
			env: outerHeader(kidTo("\xff\xfe"))},
		{name: "J-06_inner_kid_path", want: ErrUntrustedSigner, reason: ReasonUntrustedSigner,
			env: build(func(b innerBuilder) []byte {
				return b.env(b.usHeader(nil, b.f.us.Signing.KID, "../../etc/passwd"), b.payload(nil))
			})},
		{name: "J-07_jwe_json_serialization", want: ErrMalformed, reason: ReasonMalformed,
			env: func(t testing.TB, f *fixture) []byte {
				return jsonSerialized(t, f.encryptRaw(t, f.seal(t, testClaims()).Inner, jose.A256GCM, nil))
			}},
		{name: "J-07_jws_json_serialization_inside", want: ErrMalformed, reason: ReasonMalformed,
			env: func(t testing.TB, f *fixture) []byte {
				return f.encryptCompact(t, goJoseJSONJWS(t, f, false))
			}},
		{name: "J-08_two_signatures", want: ErrMalformed, reason: ReasonMalformed,
			env: func(t testing.TB, f *fixture) []byte { return f.encryptCompact(t, goJoseJSONJWS(t, f, true)) }},
		{name: "J-08_flattened_without_protected", want: ErrMalformed, reason: ReasonMalformed,
			env: func(t testing.TB, f *fixture) []byte {
				return f.encryptCompact(t, []byte(`{"payload":"e30","signature":"AAAA"}`))
			}},
		{name: "J-09_crit_exp", want: ErrMalformed, reason: ReasonMalformed,
			env: build(func(b innerBuilder) []byte { return b.env(b.usHeader([]string{`"crit":["exp"]`}), b.payload(nil)) })},
		{name: "J-09_crit_empty", want: ErrMalformed, reason: ReasonMalformed,
			env: build(func(b innerBuilder) []byte { return b.env(b.usHeader([]string{`"crit":[]`}), b.payload(nil)) })},
		{name: "J-09_crit_b64_false", want: ErrMalformed, reason: ReasonMalformed,
			env: build(func(b innerBuilder) []byte {
				return b.env(b.usHeader([]string{`"crit":["b64"]`, `"b64":false`}), b.payload(nil))
			})},
		{name: "J-09_crit_in_jwe", want: ErrMalformed, reason: ReasonMalformed,
			env: outerHeader(addMember(`"crit":["exp"]`))},
		{name: "J-10_duplicate_alg", want: ErrMalformed, reason: ReasonMalformed,
			env: build(func(b innerBuilder) []byte { return b.env(b.usHeader([]string{`"alg":"none"`}), b.payload(nil)) })},
		{name: "J-10_duplicate_kid_outer", want: ErrMalformed, reason: ReasonMalformed,
			env: outerHeader(addMember(`"kid":"b"`))},
		{name: "J-11_case_variant_Alg", want: ErrMalformed, reason: ReasonMalformed,
			env: build(func(b innerBuilder) []byte { return b.env(b.usHeader([]string{`"Alg":"none"`}), b.payload(nil)) })},
		{name: "J-11_case_variant_KID_outer", want: ErrMalformed, reason: ReasonMalformed,
			env: outerHeader(addMember(`"KID":"x"`))},
		{name: "J-12_RSA1_5", want: ErrMalformed, reason: ReasonMalformed,
			env: outerHeader(replaceIn(`"alg":"ECDH-ES+A256KW"`, `"alg":"RSA1_5"`))},
		{name: "J-13_PBES2_huge_p2c", want: ErrMalformed, reason: ReasonMalformed,
			env: outerHeader(func(string) string {
				return `{"alg":"PBES2-HS512+A256KW","enc":"A256GCM","cty":"JWT","kid":"k","p2c":2147483647,"p2s":"c2FsdHNhbHRzYWx0c2FsdA"}`
			})},
		{name: "J-14_zip_deflate", want: ErrMalformed, reason: ReasonMalformed,
			env: func(t testing.TB, f *fixture) []byte {
				obj := f.encryptRaw(t, f.seal(t, testClaims()).Inner, jose.A256GCM, &jose.EncrypterOptions{Compression: jose.DEFLATE})
				s, _ := obj.CompactSerialize()
				return []byte(s)
			}},
	}
}

func kidTo(kid string) func(string) string {
	return func(s string) string {
		i := strings.Index(s, `"kid":"`) + len(`"kid":"`)
		j := i + strings.Index(s[i:], `"`)
		return s[:i] + kid + s[j:]
	}
}

// goJoseJSONJWS signs a valid message with go-jose in JWS JSON
// serialization, with a second (garbage) signature if two.
func goJoseJSONJWS(t testing.TB, f *fixture, two bool) []byte {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType(TypMessage).WithHeader("kid", f.us.Signing.KID).
		WithHeader("x5c", certstest.X5C(f.us.Signing))
	keys := []jose.SigningKey{{Algorithm: jose.ES256, Key: f.us.Signing.Key}}
	if two {
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		keys = append(keys, jose.SigningKey{Algorithm: jose.ES256, Key: other})
	}
	s, err := jose.NewMultiSigner(keys, opts)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(payloadOf(t, testClaims()))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(obj.FullSerialize())
}

func TestOpen(t *testing.T) {
	f := newFixture(t)
	cases := append(openCases(), openCases2()...)
	cases = append(cases, openCases3()...)
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			o := *f.jpOpener
			if tt.opener != nil {
				tt.opener(t, f, &o)
			}
			env := tt.env(t, f)
			op, err := o.Open(env, testNow)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if op.Claims.Audience != "JP" || !chainOK(f.usBundle, op.Chain, testNow) {
					t.Fatal("accepted without aud = JP and a verified chain")
				}
				return
			}
			checkErr(t, err, tt.want, tt.reason, tt.transient)
			if op != nil {
				t.Error("Open returned a message with an error")
			}
		})
	}
}

// at is testNow+d in claim seconds.
func at(d time.Duration) int64 { return testNow.Add(d).Unix() }

// TestOpenOpaqueDecrypt checks that every failure inside the JWE gives the
// same error text: no oracle on the epk, the key wrap, the IV or the tag
// (catalogue J-15, J-17).
func TestOpenOpaqueDecrypt(t *testing.T) {
	f := newFixture(t)
	texts := map[string][]string{}
	for _, tt := range openCases2() {
		if !strings.HasPrefix(tt.name, "J-15") && !strings.HasPrefix(tt.name, "J-17") || tt.reason != ReasonDecryptFailed {
			continue
		}
		_, err := f.jpOpener.Open(tt.env(t, f), testNow)
		if err == nil {
			t.Fatalf("%s opened", tt.name)
		}
		texts[err.Error()] = append(texts[err.Error()], tt.name)
	}
	if len(texts) != 1 {
		t.Errorf("decryption failures have %d different texts, want 1: %v", len(texts), texts)
	}
}

// TestDecryptRecovers calls the go-jose boundary directly with inputs the
// form check would have stopped: it must return the opaque error, never
// panic (catalogue J-16, CVE-2026-34986 class).
func TestDecryptRecovers(t *testing.T) {
	f := newFixture(t)
	segs := segments(f.seal(t, testClaims()).Envelope)
	key := ecKey(t, f.jp.Encryption)
	for name, tok := range map[string]string{
		"J-16_empty_encrypted_key": segs[0] + ".." + segs[2] + "." + segs[3] + "." + segs[4],
		"empty":                    "",
		"dots":                     "....",
		"garbage":                  "a.b.c.d.e",
	} {
		if _, e := decrypt(tok, key); e != errDecrypt {
			t.Errorf("%s: decrypt error = %v, want the opaque decryption error", name, e)
		}
	}
	if _, e := decrypt(strings.Join(segs, "."), nil); e != errDecrypt {
		t.Errorf("nil key: %v", e)
	}
}

// TestJ30Digests: equivocation is detected by the inbound stage from the
// digests this package computes: same jti, other body, other digests.
func TestJ30Digests(t *testing.T) {
	f := newFixture(t)
	a := f.seal(t, testClaims())
	c := testClaims()
	c.Body = json.RawMessage(`{"title":"other"}`)
	b := f.seal(t, c)
	oa, errA := f.jpOpener.Open(a.Envelope, testNow)
	ob, errB := f.jpOpener.Open(b.Envelope, testNow)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if oa.Claims.ID != ob.Claims.ID || oa.MsgSHA256 == ob.MsgSHA256 || oa.EnvSHA256 == ob.EnvSHA256 {
		t.Error("same id with different content must give different digests")
	}
}
