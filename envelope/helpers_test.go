package envelope

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
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

// testNow is the fixed clock of every test: an hour after the fixtures' PKIs
// were issued.
var testNow = certstest.Now.Add(time.Hour)

// Fixed ids keep golden output deterministic.
const (
	testMsgID   = "01959f5e-7a00-7abc-8def-0123456789ab"
	testMsgID2  = "01959f5e-7a00-7abc-8def-0123456789ac"
	testBodyRaw = `{"title":"Export restrictions on graphite <&> anode material","severity":"high","items":[1,2,3]}`
)

type fixture struct {
	us, jp    *certs.PKI
	usBundle  *certs.Bundle // what JP pins for US
	jpBundle  *certs.Bundle // what US pins for JP
	jpKeys    *certs.KeySet
	jpOpener  *Opener // JP opening US messages
	usReceipt *ReceiptVerifier
	oldEnc    *certs.Identity // a second JP encryption key, see oldEncryption
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	f := &fixture{us: certstest.NewPKI(tb, "US"), jp: certstest.NewPKI(tb, "JP")}
	f.usBundle = certstest.Bundle(tb, "US")
	f.jpBundle = certstest.Bundle(tb, "JP")
	ks, err := certs.NewKeySet(0, decryptionKey(f.jp.Encryption))
	if err != nil {
		tb.Fatal(err)
	}
	f.jpKeys = ks
	f.jpOpener = &Opener{Self: "JP", Peer: f.usBundle, Keys: ks}
	f.usReceipt = &ReceiptVerifier{Self: "US", Peer: f.jpBundle}
	return f
}

func decryptionKey(id *certs.Identity) *certs.DecryptionKey {
	return &certs.DecryptionKey{Cert: id.Cert, Key: id.Key, KID: id.KID}
}

// testClaims are a valid US → JP message at testNow.
func testClaims() *Claims {
	return &Claims{
		Issuer:        "US",
		Audience:      "JP",
		ID:            testMsgID,
		IssuedAt:      testNow.Unix(),
		Expiry:        testNow.Add(7 * 24 * time.Hour).Unix(),
		Type:          LaborEnforcementNotice,
		Schema:        LaborEnforcementNotice.Schema(),
		Sender:        "US:DOL-ILAB",
		Recipient:     "JP:MHLW",
		CorrelationID: "case-2026/0042",
		Marking:       "TLP:AMBER",
		Body:          json.RawMessage(testBodyRaw),
	}
}

func (f *fixture) seal(tb testing.TB, c *Claims) *Sealed {
	tb.Helper()
	s, err := Seal(c, f.us.Signing, f.jp.Encryption.Cert)
	if err != nil {
		tb.Fatalf("Seal: %v", err)
	}
	return s
}

// payloadOf encodes claims the way Seal does.
func payloadOf(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := encodeJSON(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func b64s(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwsHeaderJSON is the header Seal would write for signer, as raw JSON.
func jwsHeaderJSON(id *certs.Identity, typ string) string {
	x5c, _ := json.Marshal(certstest.X5C(id))
	return `{"alg":"ES256","typ":"` + typ + `","kid":"` + id.KID + `","x5c":` + string(x5c) + `}`
}

// signRaw builds a compact JWS by hand over the exact header and payload
// bytes given, signed ES256 (raw R‖S) with key: for headers go-jose would
// never write.
func signRaw(tb testing.TB, key crypto.Signer, header string, payload []byte) string {
	tb.Helper()
	input := b64s([]byte(header)) + "." + b64s(payload)
	return input + "." + b64s(es256(tb, key, input))
}

func es256(tb testing.TB, key crypto.Signer, input string) []byte {
	tb.Helper()
	sum := sha256.Sum256([]byte(input))
	der, err := key.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		tb.Fatal(err)
	}
	r, s := derToRS(tb, der)
	size := 32
	if pub, ok := key.Public().(*ecdsa.PublicKey); ok {
		size = (pub.Curve.Params().BitSize + 7) / 8
	}
	return append(r.FillBytes(make([]byte, size)), s.FillBytes(make([]byte, size))...)
}

func derToRS(tb testing.TB, der []byte) (*big.Int, *big.Int) {
	tb.Helper()
	var sig struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &sig); err != nil {
		tb.Fatal(err)
	}
	return sig.R, sig.S
}

func pad32(n *big.Int) []byte {
	out := make([]byte, 32)
	return n.FillBytes(out)
}

// encryptRaw encrypts plaintext to JP's encryption key with go-jose, the
// profile's algorithms unless enc/alg say otherwise; opts may add headers.
func (f *fixture) encryptRaw(tb testing.TB, plaintext []byte, enc jose.ContentEncryption, opts *jose.EncrypterOptions) *jose.JSONWebEncryption {
	tb.Helper()
	if opts == nil {
		opts = &jose.EncrypterOptions{}
	}
	opts = opts.WithContentType("JWT")
	cert := f.jp.Encryption.Cert
	rcpt := jose.Recipient{Algorithm: jose.ECDH_ES_A256KW, Key: cert.PublicKey, KeyID: certs.KID(cert)}
	e, err := jose.NewEncrypter(enc, rcpt, opts)
	if err != nil {
		tb.Fatal(err)
	}
	obj, err := e.Encrypt(plaintext)
	if err != nil {
		tb.Fatal(err)
	}
	return obj
}

func (f *fixture) encryptCompact(tb testing.TB, plaintext []byte) []byte {
	tb.Helper()
	s, err := f.encryptRaw(tb, plaintext, jose.A256GCM, nil).CompactSerialize()
	if err != nil {
		tb.Fatal(err)
	}
	return []byte(s)
}

// segments splits a compact token.
func segments(tok []byte) []string { return strings.Split(string(tok), ".") }

func join(segs []string) []byte { return []byte(strings.Join(segs, ".")) }

// withOuterHeader replaces the outer protected header of env by edit(header JSON).
func withOuterHeader(tb testing.TB, env []byte, edit func(string) string) []byte {
	tb.Helper()
	segs := segments(env)
	raw, err := base64.RawURLEncoding.DecodeString(segs[0])
	if err != nil {
		tb.Fatal(err)
	}
	segs[0] = b64s([]byte(edit(string(raw))))
	return join(segs)
}

// editSeg decodes segment i, edits its bytes and re-encodes it canonically.
func editSeg(tb testing.TB, tok []byte, i int, edit func([]byte) []byte) []byte {
	tb.Helper()
	segs := segments(tok)
	raw, err := base64.RawURLEncoding.DecodeString(segs[i])
	if err != nil {
		tb.Fatal(err)
	}
	segs[i] = b64s(edit(raw))
	return join(segs)
}

// checkErr asserts err is an *Error with the reason and sentinel wanted.
func checkErr(tb testing.TB, err error, sentinel error, reason Reason, transient bool) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("no error; want %v (%s)", sentinel, reason)
	}
	var e *Error
	if !errors.As(err, &e) {
		tb.Fatalf("error %T %v is not an *Error", err, err)
	}
	if !errors.Is(err, sentinel) {
		tb.Errorf("error %v does not wrap %v", err, sentinel)
	}
	if got := ReasonOf(err); got != reason {
		tb.Errorf("reason = %s, want %s (error %v)", got, reason, err)
	}
	if got := IsTransient(err); got != transient {
		tb.Errorf("transient = %v, want %v (error %v)", got, transient, err)
	}
}

// ecKey returns the ECDSA private key of an identity.
func ecKey(tb testing.TB, id *certs.Identity) *ecdsa.PrivateKey {
	tb.Helper()
	k, ok := id.Key.(*ecdsa.PrivateKey)
	if !ok {
		tb.Fatalf("identity key is %T", id.Key)
	}
	return k
}

// chainOK re-verifies an accepted chain against bundle: the fuzz property.
func chainOK(bundle *certs.Bundle, chain []*x509.Certificate, now time.Time) bool {
	return len(chain) > 0 && bundle.Verify(chain, certs.VerifyOptions{Role: certs.RoleSigning, Now: now}) == nil
}
