package envelope

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cmx-exchange/cmx/certs"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
)

// Sealed is a message ready to send: the envelope bytes that travel, the
// inner JWS they carry, and the digests receipts will refer to.
type Sealed struct {
	Envelope  []byte // JWE compact
	Inner     []byte // JWS compact
	EnvSHA256 string // Digest(Envelope)
	MsgSHA256 string // Digest(Inner)
}

// errSeal marks a failure of our own side while sealing or issuing: a bad
// signer, recipient or claims. It is never caused by a peer.
var errSeal = errors.New("envelope: cannot seal")

// Seal signs c with signer (ES256, typ cmx-msg+jwt, kid and x5c of the
// signer's chain) and encrypts the result to recipient's encryption key
// (ECDH-ES+A256KW, A256GCM, cty JWT, kid of recipient). The claims are
// checked with ValidateClaims first; the body is not checked against its
// schema (the caller does that), nor bounded in size (the ingress does).
func Seal(c *Claims, signer *certs.Identity, recipient *x509.Certificate) (*Sealed, error) {
	if err := ValidateClaims(c); err != nil {
		return nil, err
	}
	pub, err := recipientKey(recipient)
	if err != nil {
		return nil, err
	}
	payload, err := encodeJSON(c)
	if err != nil {
		return nil, fmt.Errorf("%w: encode claims: %w", errSeal, err)
	}
	inner, err := signCompact(payload, TypMessage, signer)
	if err != nil {
		return nil, err
	}
	env, err := encryptCompact(inner, pub, certs.KID(recipient))
	if err != nil {
		return nil, err
	}
	return &Sealed{
		Envelope:  []byte(env),
		Inner:     []byte(inner),
		EnvSHA256: Digest([]byte(env)),
		MsgSHA256: Digest([]byte(inner)),
	}, nil
}

// encodeJSON encodes v once, without HTML escaping (which would grow a body
// full of '<' sixfold) and without the trailing newline.
func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// recipientKey returns the P-256 key of an encryption certificate.
func recipientKey(cert *x509.Certificate) (*ecdsa.PublicKey, error) {
	if cert == nil {
		return nil, fmt.Errorf("%w: no recipient certificate", errSeal)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: recipient key is not P-256", errSeal)
	}
	if cert.KeyUsage&x509.KeyUsageKeyAgreement == 0 {
		return nil, fmt.Errorf("%w: recipient certificate is not for key agreement", errSeal)
	}
	return pub, nil
}

// signCompact signs payload as a compact JWS with protected header exactly
// {"alg":"ES256","typ":typ,"kid":...,"x5c":[...]}.
func signCompact(payload []byte, typ string, signer *certs.Identity) (string, error) {
	key, x5c, err := signingKey(signer)
	if err != nil {
		return "", err
	}
	opts := (&jose.SignerOptions{}).
		WithType(jose.ContentType(typ)).
		WithHeader("kid", signer.KID).
		WithHeader("x5c", x5c)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errSeal, err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("%w: sign: %w", errSeal, err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("%w: serialize: %w", errSeal, err)
	}
	return out, nil
}

// signingKey checks that signer can produce tokens a peer will accept (a
// P-256 key matching the leaf, a kid naming the leaf) and returns the key in
// the form go-jose takes, with the x5c chain.
func signingKey(signer *certs.Identity) (any, []string, error) {
	if signer == nil || signer.Key == nil || len(signer.Chain) == 0 {
		return nil, nil, fmt.Errorf("%w: signer needs a key and a chain", errSeal)
	}
	leaf := signer.Chain[0]
	pub, ok := signer.Key.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() || !pub.Equal(leaf.PublicKey) {
		return nil, nil, fmt.Errorf("%w: signer key is not the P-256 key of its leaf", errSeal)
	}
	if signer.KID != certs.KID(leaf) {
		return nil, nil, fmt.Errorf("%w: signer KID does not name its leaf", errSeal)
	}
	x5c := make([]string, len(signer.Chain))
	for i, c := range signer.Chain {
		x5c[i] = base64.StdEncoding.EncodeToString(c.Raw)
	}
	if k, ok := signer.Key.(*ecdsa.PrivateKey); ok {
		return k, x5c, nil
	}
	return cryptosigner.Opaque(signer.Key), x5c, nil // an HSM behind crypto.Signer
}

// encryptCompact encrypts the inner JWS to pub.
func encryptCompact(inner string, pub *ecdsa.PublicKey, kid string) (string, error) {
	rcpt := jose.Recipient{Algorithm: jose.ECDH_ES_A256KW, Key: pub, KeyID: kid}
	opts := (&jose.EncrypterOptions{}).WithContentType("JWT")
	enc, err := jose.NewEncrypter(jose.A256GCM, rcpt, opts)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errSeal, err)
	}
	obj, err := enc.Encrypt([]byte(inner))
	if err != nil {
		return "", fmt.Errorf("%w: encrypt: %w", errSeal, err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("%w: serialize: %w", errSeal, err)
	}
	return out, nil
}
