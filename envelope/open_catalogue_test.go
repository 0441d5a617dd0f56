package envelope

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/certs/certstest"
	jose "github.com/go-jose/go-jose/v4"
)

// seg edits segment i of a valid envelope.
func seg(i int, edit func([]byte) []byte) func(testing.TB, *fixture) []byte {
	return edited(func(t testing.TB, f *fixture, env []byte) []byte { return editSeg(t, env, i, edit) })
}

// raw edits a valid envelope as text.
func raw(edit func(string) string) func(testing.TB, *fixture) []byte {
	return edited(func(_ testing.TB, _ *fixture, env []byte) []byte { return []byte(edit(string(env))) })
}

// innerEdited encrypts a valid inner JWS after edit.
func innerEdited(edit func(string) string) func(testing.TB, *fixture) []byte {
	return func(t testing.TB, f *fixture) []byte {
		return f.encryptCompact(t, []byte(edit(string(f.seal(t, testClaims()).Inner))))
	}
}

// withSig replaces the signature of a valid inner JWS and encrypts it.
func withSig(sig func(valid []byte) []byte) func(testing.TB, *fixture) []byte {
	return func(t testing.TB, f *fixture) []byte {
		in := f.seal(t, testClaims()).Inner
		return f.encryptCompact(t, editSeg(t, in, 2, sig))
	}
}

var p256N = elliptic.P256().Params().N

func openCases2() []openCase {
	offCurve := ecPoint("P-256", bytesOf(32, 1), bytesOf(32, 1))
	return []openCase{
		{name: "J-15_epk_not_on_curve", want: ErrCrypto, reason: ReasonDecryptFailed, env: outerHeader(setEPK(offCurve))},
		{name: "J-15_epk_zero", want: ErrCrypto, reason: ReasonDecryptFailed,
			env: outerHeader(setEPK(ecPoint("P-256", make([]byte, 32), make([]byte, 32))))},
		{name: "J-15_epk_huge_coordinate", want: ErrCrypto, reason: ReasonDecryptFailed,
			env: outerHeader(setEPK(ecPoint("P-256", bytesOf(33, 1), bytesOf(32, 1))))},
		{name: "J-15_epk_other_curve", want: ErrCrypto, reason: ReasonDecryptFailed,
			env: outerHeader(func(h string) string {
				k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
				jwk, _ := jose.JSONWebKey{Key: &k.PublicKey}.MarshalJSON()
				return setEPK(string(jwk))(h)
			})},
		{name: "J-15_epk_not_a_key", want: ErrCrypto, reason: ReasonDecryptFailed, env: outerHeader(setEPK(`{"kty":"oct","k":"AAAA"}`))},
		{name: "J-16_empty_encrypted_key", want: ErrMalformed, reason: ReasonMalformed,
			env: raw(func(s string) string { p := strings.Split(s, "."); p[1] = ""; return strings.Join(p, ".") })},
		{name: "J-17_truncated_tag", want: ErrCrypto, reason: ReasonDecryptFailed, env: seg(4, func(b []byte) []byte { return b[:12] })},
		{name: "J-17_iv_wrong_length", want: ErrCrypto, reason: ReasonDecryptFailed, env: seg(2, func(b []byte) []byte { return append(b, 0) })},
		{name: "J-17_ciphertext_bit_flip", want: ErrCrypto, reason: ReasonDecryptFailed,
			env: seg(3, func(b []byte) []byte { b[len(b)/2] ^= 0x01; return b })},
		{name: "J-17_wrapped_key_bit_flip", want: ErrCrypto, reason: ReasonDecryptFailed,
			env: seg(1, func(b []byte) []byte { b[0] ^= 0x80; return b })},
		{name: "J-17_tag_moved_to_iv", want: ErrCrypto, reason: ReasonDecryptFailed,
			env: raw(func(s string) string {
				p := strings.Split(s, ".")
				p[2], p[4] = p[4], p[2]
				return strings.Join(p, ".")
			})},
		{name: "J-17_protected_header_reordered", want: ErrCrypto, reason: ReasonDecryptFailed,
			env: outerHeader(reorder)},
		{name: "J-18_million_dots", want: ErrMalformed, reason: ReasonMalformed,
			env: func(testing.TB, *fixture) []byte { return []byte(strings.Repeat(".", 1_000_000)) }},
		{name: "J-18_six_segments", want: ErrMalformed, reason: ReasonMalformed, env: raw(func(s string) string { return s + ".AAAA" })},
		{name: "J-18_over_size_cap", want: ErrTooLarge, reason: ReasonTooLarge,
			env: func(testing.TB, *fixture) []byte { return make([]byte, Limits{}.MaxEnvelopeBytes()+1) }},
		{name: "J-19_enc_A128CBC_HS256", want: ErrMalformed, reason: ReasonMalformed,
			env: outerHeader(replaceIn(`"enc":"A256GCM"`, `"enc":"A128CBC-HS256"`))},
		{name: "J-19_enc_A128GCM_real", want: ErrMalformed, reason: ReasonMalformed,
			env: func(t testing.TB, f *fixture) []byte {
				s, _ := f.encryptRaw(t, f.seal(t, testClaims()).Inner, jose.A128GCM, nil).CompactSerialize()
				return []byte(s)
			}},
		{name: "J-19_enc_unknown", want: ErrMalformed, reason: ReasonMalformed, env: outerHeader(replaceIn(`"enc":"A256GCM"`, `"enc":"X"`))},
		{name: "J-20_plaintext_raw_json", want: ErrMalformed, reason: ReasonMalformed,
			env: func(t testing.TB, f *fixture) []byte { return f.encryptCompact(t, payloadOf(t, testClaims())) }},
		{name: "J-21_receipt_as_message", want: ErrMalformed, reason: ReasonMalformed,
			env: func(t testing.TB, f *fixture) []byte {
				r := testReceipt(StatusAccepted)
				r.Issuer, r.Audience = "US", "JP"
				tok, err := IssueReceipt(r, f.us.Signing)
				if err != nil {
					t.Fatal(err)
				}
				return f.encryptCompact(t, tok)
			}},
		{name: "J-22_aud_other_party", want: ErrClaims, reason: ReasonClaimsInvalid,
			env: sealed(func(c *Claims) { c.Audience, c.Recipient = "KR", "KR:MOTIE" })},
		{name: "J-22_iss_not_peer", want: ErrClaims, reason: ReasonClaimsInvalid,
			env: sealed(func(c *Claims) { c.Issuer, c.Sender = "KR", "KR:MOTIE" })},
		{name: "J-23_outer_sender_header", want: ErrMalformed, reason: ReasonMalformed,
			env: outerHeader(addMember(`"sender":"US:DOL-ILAB"`))},
		{name: "J-24_iat_2h_future", want: ErrNotYetValid, reason: ReasonNotYetValid, transient: true,
			env: sealed(func(c *Claims) { c.IssuedAt, c.Expiry = at(2*time.Hour), at(48*time.Hour) })},
		{name: "J-24_iat_within_leeway", env: sealed(func(c *Claims) { c.IssuedAt = at(time.Minute) })},
		{name: "J-24_exp_past", want: ErrExpired, reason: ReasonExpired,
			env: sealed(func(c *Claims) { c.IssuedAt, c.Expiry = at(-50*time.Minute), at(-10*time.Minute) })},
		{name: "J-24_exp_within_leeway", env: sealed(func(c *Claims) { c.IssuedAt, c.Expiry = at(-50*time.Minute), at(-time.Minute) })},
		{name: "J-24_lifetime_over_max", want: ErrClaims, reason: ReasonClaimsInvalid,
			env: sealed(func(c *Claims) { c.Expiry = at(9 * 24 * time.Hour) })},
		{name: "J-24_lifetime_custom_max", want: ErrClaims, reason: ReasonClaimsInvalid,
			env: sealed(nil), opener: func(_ testing.TB, _ *fixture, o *Opener) { o.MaxLifetime = time.Hour }},
		{name: "J-24_iat_missing", want: ErrClaims, reason: ReasonClaimsInvalid,
			env: build(func(b innerBuilder) []byte {
				return b.env(b.usHeader(nil), dropMember(b.t, b.payload(nil), "iat"))
			})},
		{name: "J-24_exp_missing", want: ErrClaims, reason: ReasonClaimsInvalid,
			env: build(func(b innerBuilder) []byte {
				return b.env(b.usHeader(nil), dropMember(b.t, b.payload(nil), "exp"))
			})},
		{name: "J-25_header_nested_100000", want: ErrMalformed, reason: ReasonMalformed,
			env: build(func(b innerBuilder) []byte {
				deep := strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000)
				return b.env(b.usHeader([]string{`"x":` + deep}), b.payload(nil))
			})},
		{name: "J-25_header_nested_small", want: ErrMalformed, reason: ReasonMalformed,
			env: build(func(b innerBuilder) []byte {
				return b.env(b.usHeader(nil, `"x5c":[`, `"x5c":[[[[`, `"]}`, `"]]]]}`), b.payload(nil))
			})},
		{name: "J-25_outer_header_nested", want: ErrMalformed, reason: ReasonMalformed,
			env: outerHeader(setEPK(`{"kty":"EC","crv":"P-256","x":[[["a"]]],"y":"b"}`))},
		{name: "J-25_claim_nested_100000", want: ErrClaims, reason: ReasonClaimsInvalid,
			env: build(func(b innerBuilder) []byte {
				deep := strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000)
				return b.env(b.usHeader(nil), []byte(strings.Replace(string(b.payload(nil)), `"items":[1,2,3]`, `"items":`+deep, 1)))
			})},
		{name: "J-25_claim_nested_33", want: ErrClaims, reason: ReasonClaimsInvalid,
			env: build(func(b innerBuilder) []byte {
				return b.env(b.usHeader(nil), []byte(strings.Replace(string(b.payload(nil)), `"items":[1,2,3]`, `"items":`+string(nested(31)), 1)))
			})},
		{name: "J-26_der_signature", want: ErrCrypto, reason: ReasonSignatureInvalid,
			env: withSig(func(v []byte) []byte {
				r, s := new(big.Int).SetBytes(v[:32]), new(big.Int).SetBytes(v[32:])
				der, _ := asn1.Marshal(struct{ R, S *big.Int }{r, s})
				return der
			})},
		{name: "J-26_r_s_zero", want: ErrCrypto, reason: ReasonSignatureInvalid, env: withSig(func([]byte) []byte { return make([]byte, 64) })},
		{name: "J-26_s_equals_n", want: ErrCrypto, reason: ReasonSignatureInvalid,
			env: withSig(func(v []byte) []byte { return append(v[:32:32], pad32(p256N)...) })},
		{name: "J-26_s_plus_n", want: ErrCrypto, reason: ReasonSignatureInvalid,
			env: withSig(func(v []byte) []byte {
				s := new(big.Int).Add(new(big.Int).SetBytes(v[32:]), p256N)
				return append(v[:32:32], s.Bytes()...)
			})},
		{name: "J-26_short_signature", want: ErrCrypto, reason: ReasonSignatureInvalid, env: withSig(func(v []byte) []byte { return v[:63] })},
		{name: "J-27_padding", want: ErrMalformed, reason: ReasonMalformed, env: raw(func(s string) string { return s + "==" })},
		{name: "J-27_plus_slash", want: ErrMalformed, reason: ReasonMalformed,
			env: raw(func(s string) string { return strings.NewReplacer("-", "+", "_", "/").Replace(s) + "+/" })},
		{name: "J-27_newline", want: ErrMalformed, reason: ReasonMalformed, env: raw(func(s string) string { return s[:40] + "\n" + s[40:] })},
		{name: "J-27_space", want: ErrMalformed, reason: ReasonMalformed, env: raw(func(s string) string { return " " + s })},
		{name: "J-27_trailing_dot", want: ErrMalformed, reason: ReasonMalformed, env: raw(func(s string) string { return s + "." })},
		{name: "J-27_non_canonical_tail", want: ErrMalformed, reason: ReasonMalformed, env: raw(nonCanonicalTail)},
		{name: "J-27_inner_non_canonical_signature", want: ErrMalformed, reason: ReasonMalformed, env: innerEdited(nonCanonicalTail)},
		{name: "J-27_inner_padding", want: ErrMalformed, reason: ReasonMalformed, env: innerEdited(func(s string) string { return s + "=" })},
		{name: "J-28_jwe_in_jwe", want: ErrMalformed, reason: ReasonMalformed,
			env: func(t testing.TB, f *fixture) []byte { return f.encryptCompact(t, f.seal(t, testClaims()).Envelope) }},
		{name: "J-28_jws_in_jws", want: ErrClaims, reason: ReasonClaimsInvalid,
			env: build(func(b innerBuilder) []byte { return b.env(b.usHeader(nil), b.f.seal(b.t, testClaims()).Inner) })},
		{name: "J-28_inner_cty_jwt", want: ErrMalformed, reason: ReasonMalformed,
			env: build(func(b innerBuilder) []byte { return b.env(b.usHeader([]string{`"cty":"JWT"`}), b.payload(nil)) })},
		{name: "J-29_jwe_json_two_recipients", want: ErrMalformed, reason: ReasonMalformed,
			env: func(t testing.TB, f *fixture) []byte {
				k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				e, err := jose.NewMultiEncrypter(jose.A256GCM, []jose.Recipient{
					{Algorithm: jose.ECDH_ES_A256KW, Key: f.jp.Encryption.Cert.PublicKey, KeyID: f.jp.Encryption.KID},
					{Algorithm: jose.ECDH_ES_A256KW, Key: &k.PublicKey},
				}, (&jose.EncrypterOptions{}).WithContentType("JWT"))
				if err != nil {
					t.Fatal(err)
				}
				obj, err := e.Encrypt(f.seal(t, testClaims()).Inner)
				if err != nil {
					t.Fatal(err)
				}
				return []byte(obj.FullSerialize())
			}},
	}
}

// nonCanonicalTail sets unused low bits in the last character of the last
// segment: the same bytes to a lenient decoder, another byte form.
func nonCanonicalTail(s string) string {
	last := s[len(s)-1]
	v := b64val[last]
	alphabet := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	seg := s[strings.LastIndexByte(s, '.')+1:]
	switch len(seg) % 4 {
	case 2:
		v |= 0x01
	case 3:
		v |= 0x01
	default:
		panic("segment length leaves no unused bits")
	}
	return s[:len(s)-1] + string(alphabet[v])
}

// reorder rewrites a JSON object with its members in reverse order: the same
// header to a JSON reader, other authenticated bytes.
func reorder(h string) string {
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(h), &m); err != nil {
		panic(err)
	}
	order := []string{"kid", "epk", "enc", "cty", "alg"}
	parts := make([]string, 0, len(order))
	for _, k := range order {
		parts = append(parts, `"`+k+`":`+string(m[k]))
	}
	return header(parts...)
}

// dropMember removes one top-level member from a JSON object.
func dropMember(t testing.TB, obj []byte, name string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, name)
	out, _ := json.Marshal(m)
	return out
}

// signerCase signs a valid payload with id's header and key, encrypted to JP.
func signerCase(id func(t testing.TB, f *fixture) *certs.Identity, mutate func(*Claims)) func(testing.TB, *fixture) []byte {
	return func(t testing.TB, f *fixture) []byte {
		b := innerBuilder{t: t, f: f}
		s := id(t, f)
		return f.encryptCompact(t, []byte(signRaw(t, s.Key, jwsHeaderJSON(s, TypMessage), b.payload(mutate))))
	}
}

func usLeaf(mutate func(*x509.Certificate)) func(t testing.TB, f *fixture) *certs.Identity {
	return func(t testing.TB, f *fixture) *certs.Identity { return certstest.Leaf(t, f.us, mutate) }
}

func openCases3() []openCase {
	return []openCase{
		{name: "C-01_own_root", want: ErrUntrustedSigner, reason: ReasonUntrustedSigner,
			env: signerCase(func(_ testing.TB, f *fixture) *certs.Identity { return f.jp.Signing }, nil)},
		{name: "C-02_valid_chain_other_key", want: ErrCrypto, reason: ReasonSignatureInvalid,
			env: build(func(b innerBuilder) []byte {
				return b.f.encryptCompact(b.t, []byte(signRaw(b.t, b.f.jp.Signing.Key, b.usHeader(nil), b.payload(nil))))
			})},
		{name: "C-02_kid_names_other_cert", want: ErrUntrustedSigner, reason: ReasonUntrustedSigner,
			env: build(func(b innerBuilder) []byte {
				return b.env(b.usHeader(nil, b.f.us.Signing.KID, b.f.us.Encryption.KID), b.payload(nil))
			})},
		{name: "C-04_tls_server_cert_signs", want: ErrUntrustedSigner, reason: ReasonUntrustedSigner,
			env: signerCase(func(_ testing.TB, f *fixture) *certs.Identity { return f.us.TLSServer }, nil)},
		{name: "C-06_leaf_expired", want: ErrUntrustedSigner, reason: ReasonUntrustedSigner,
			env: signerCase(usLeaf(func(c *x509.Certificate) { c.NotAfter = testNow.Add(-30 * time.Minute) }),
				func(c *Claims) { c.IssuedAt = at(-40 * time.Minute) })},
		{name: "C-07_leaf_not_yet_valid", want: ErrUntrustedSigner, reason: ReasonUntrustedSigner, transient: true,
			env: signerCase(usLeaf(func(c *x509.Certificate) { c.NotBefore = testNow.Add(time.Hour) }), nil)},
		{name: "signed_before_leaf_valid", want: ErrUntrustedSigner, reason: ReasonUntrustedSigner,
			env: signerCase(usLeaf(func(c *x509.Certificate) { c.NotBefore = testNow.Add(-10 * time.Minute) }),
				func(c *Claims) { c.IssuedAt = at(-30 * time.Minute) })},
		{name: "x5c_empty", want: ErrUntrustedSigner, reason: ReasonUntrustedSigner,
			env: build(func(b innerBuilder) []byte {
				_, _, _, x5c := b.members(b.f.us.Signing)
				return b.env(b.usHeader(nil, x5c, `"x5c":[]`), b.payload(nil))
			})},
		{name: "x5c_garbage", want: ErrUntrustedSigner, reason: ReasonUntrustedSigner,
			env: build(func(b innerBuilder) []byte {
				_, _, _, x5c := b.members(b.f.us.Signing)
				return b.env(b.usHeader(nil, x5c, `"x5c":["AAAA"]`), b.payload(nil))
			})},
		{name: "typ_missing", want: ErrMalformed, reason: ReasonMalformed,
			env: build(func(b innerBuilder) []byte { return b.env(b.usHeader(nil, `"typ":"cmx-msg+jwt",`, ``), b.payload(nil)) })},
		{name: "typ_JWT", want: ErrMalformed, reason: ReasonMalformed,
			env: build(func(b innerBuilder) []byte { return b.env(b.usHeader(nil, TypMessage, "JWT"), b.payload(nil)) })},
		{name: "claims_duplicate_aud", want: ErrClaims, reason: ReasonClaimsInvalid,
			env: build(func(b innerBuilder) []byte {
				return b.env(b.usHeader(nil), []byte(strings.Replace(string(b.payload(nil)), `"aud":"JP"`, `"aud":"KR","aud":"JP"`, 1)))
			})},
		{name: "claims_case_variant_AUD", want: ErrClaims, reason: ReasonClaimsInvalid,
			env: build(func(b innerBuilder) []byte {
				return b.env(b.usHeader(nil), []byte(strings.Replace(string(b.payload(nil)), `"aud":"JP"`, `"aud":"JP","AUD":"KR"`, 1)))
			})},
		{name: "claims_unknown_member", want: ErrClaims, reason: ReasonClaimsInvalid,
			env: build(func(b innerBuilder) []byte {
				return b.env(b.usHeader(nil), []byte(strings.Replace(string(b.payload(nil)), `{`, `{"sub":"x",`, 1)))
			})},
		{name: "claims_iat_string", want: ErrClaims, reason: ReasonClaimsInvalid,
			env: build(func(b innerBuilder) []byte {
				p := strings.Replace(string(b.payload(nil)), `"iat":`, `"iat":"`, 1)
				return b.env(b.usHeader(nil), []byte(strings.Replace(p, `,"exp"`, `","exp"`, 1)))
			})},
		{name: "claims_trailing_data", want: ErrClaims, reason: ReasonClaimsInvalid,
			env: build(func(b innerBuilder) []byte { return b.env(b.usHeader(nil), append(b.payload(nil), " {}"...)) })},
		{name: "claims_not_utf8", want: ErrClaims, reason: ReasonClaimsInvalid,
			env: build(func(b innerBuilder) []byte {
				return b.env(b.usHeader(nil), []byte(strings.Replace(string(b.payload(nil)), "graphite", "graph\xffte", 1)))
			})},
		{name: "C-14_retired_key_within_budget", env: sealedToOld, opener: withRetired(time.Hour)},
		{name: "C-14_retired_key_past_budget", want: ErrCrypto, reason: ReasonDecryptFailed,
			env: sealedToOld, opener: withRetired(8 * 24 * time.Hour)},
		{name: "unknown_encryption_key", want: ErrCrypto, reason: ReasonDecryptFailed, env: sealedToOld},
		{name: "schema_invalid", want: ErrSchema, reason: ReasonSchemaInvalid, env: sealed(nil),
			opener: func(_ testing.TB, _ *fixture, o *Opener) {
				o.ValidateBody = func(ty Type, body []byte) error {
					if ty != LaborEnforcementNotice || string(body) != testBodyRaw {
						return errors.New("ValidateBody got the wrong type or body")
					}
					return errors.New("missing required property")
				}
			}},
		{name: "schema_valid", env: sealed(nil),
			opener: func(_ testing.TB, _ *fixture, o *Opener) { o.ValidateBody = func(Type, []byte) error { return nil } }},
		{name: "body_over_limit", want: ErrTooLarge, reason: ReasonTooLarge, env: sealed(nil),
			opener: func(_ testing.TB, _ *fixture, o *Opener) { o.Limits.MaxBodyBytes = 64 }},
		{name: "envelope_over_custom_cap", want: ErrTooLarge, reason: ReasonTooLarge,
			env:    sealed(func(c *Claims) { c.Body = json.RawMessage(`{"x":"` + strings.Repeat("a", 40_000) + `"}`) }),
			opener: func(_ testing.TB, _ *fixture, o *Opener) { o.Limits.MaxBodyBytes = 1 << 10 }},
	}
}

// oldEncryption is a second JP encryption identity, created once per fixture.
func (f *fixture) oldEncryption(t testing.TB) *certs.Identity {
	t.Helper()
	if f.oldEnc == nil {
		id, err := f.jp.IssueEncryption(certs.PKIOptions{Now: certstest.Now})
		if err != nil {
			t.Fatal(err)
		}
		f.oldEnc = id
	}
	return f.oldEnc
}

// sealedToOld seals a valid message to JP's older encryption key.
func sealedToOld(t testing.TB, f *fixture) []byte {
	s, err := Seal(testClaims(), f.us.Signing, f.oldEncryption(t).Cert)
	if err != nil {
		t.Fatal(err)
	}
	return s.Envelope
}

// withRetired gives the opener a key set where the older key was retired
// ago before now, with the default 7-day budget.
func withRetired(ago time.Duration) func(testing.TB, *fixture, *Opener) {
	return func(t testing.TB, f *fixture, o *Opener) {
		old := decryptionKey(f.oldEncryption(t))
		old.RetiredAt = testNow.Add(-ago)
		ks, err := certs.NewKeySet(0, decryptionKey(f.jp.Encryption), old)
		if err != nil {
			t.Fatal(err)
		}
		o.Keys = ks
	}
}
