package envelope

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	jose "github.com/go-jose/go-jose/v4"
)

// Defaults of a zero Opener and ReceiptVerifier.
const (
	DefaultLeeway      = 2 * time.Minute
	DefaultMaxLifetime = 8 * 24 * time.Hour
)

// Opener opens envelopes from one peer. It holds no mutable state: one Opener
// may be used by many goroutines at once. Fields must not change after first use.
type Opener struct {
	Self        string        // our party; aud must equal it
	Peer        *certs.Bundle // the peer's pinned roots; iss must equal Peer.Party()
	Keys        *certs.KeySet // our decryption keys
	Leeway      time.Duration // clock skew allowed on iat and exp; 0 = DefaultLeeway
	MaxLifetime time.Duration // max exp-iat; 0 = DefaultMaxLifetime
	Limits      Limits
	// ValidateBody, when set, checks the body against the schema of its
	// type, last; a failure is ErrSchema / ReasonSchemaInvalid.
	ValidateBody func(t Type, body []byte) error
}

// Opened is a verified message.
type Opened struct {
	Claims    Claims
	Inner     []byte              // the exact inner JWS
	Chain     []*x509.Certificate // the verified signer chain, leaf first; shared, do not modify
	EnvSHA256 string              // Digest of the envelope; "" from OpenInner
	MsgSHA256 string              // Digest(Inner)
}

// errOpener reports an Opener used without Self, Peer or Keys: a
// programming error, not a property of the input.
var errOpener = errors.New("envelope: Opener needs Self, Peer and Keys")

// Open decrypts and verifies env at time now, running the checks listed in
// the package documentation in that order. Every failure is an *Error.
func (o *Opener) Open(env []byte, now time.Time) (*Opened, error) {
	plain, e := o.decryptInner(env, now)
	if e != nil {
		return nil, e
	}
	op, e := o.openInner(string(plain), now)
	if e != nil {
		return nil, e
	}
	op.EnvSHA256 = Digest(env)
	return op, nil
}

// DecryptInner runs Open's checks up to decryption (size, form, outer
// header, key, decrypt) and returns the inner JWS without verifying it: for
// evidence, whose readers verify it themselves (OpenInner, cmx verify).
func (o *Opener) DecryptInner(env []byte, now time.Time) ([]byte, error) {
	plain, e := o.decryptInner(env, now)
	if e != nil {
		return nil, e
	}
	return plain, nil
}

func (o *Opener) decryptInner(env []byte, now time.Time) ([]byte, *Error) {
	if o.Self == "" || o.Peer == nil || o.Keys == nil {
		return nil, &Error{Reason: ReasonMalformed, Err: errOpener}
	}
	if len(env) > o.Limits.MaxEnvelopeBytes() {
		return nil, fail(ReasonTooLarge, wrap(ErrTooLarge, "envelope over the size cap"))
	}
	tok := string(env)
	var segs [5]string
	if e := splitCompact(tok, segs[:], maxOuterHeaderBytes); e != nil {
		return nil, e
	}
	var h jweHeader
	if e := decodeHeader(segs[0], jweMembers, &h); e != nil {
		return nil, e
	}
	if h.Alg != string(jose.ECDH_ES_A256KW) || h.Enc != string(jose.A256GCM) || h.Cty != "JWT" {
		return nil, malformed("outer alg, enc or cty outside the profile")
	}
	key, e := o.lookup(h.Kid, now)
	if e != nil {
		return nil, e
	}
	return decrypt(tok, key)
}

// OpenInner verifies an already decrypted inner JWS at time now (auditors,
// evidence): the same checks as Open from step 6 on. EnvSHA256 is empty.
func (o *Opener) OpenInner(jws []byte, now time.Time) (*Opened, error) {
	if o.Self == "" || o.Peer == nil {
		return nil, errOpener
	}
	if len(jws) > o.Limits.MaxInnerBytes() {
		return nil, fail(ReasonTooLarge, wrap(ErrTooLarge, "inner JWS over the size cap"))
	}
	op, e := o.openInner(string(jws), now)
	if e != nil {
		return nil, e
	}
	return op, nil
}

// lookup finds our decryption key named by kid. An unknown or retired key is
// a decryption failure (catalogue J-06, C-14).
func (o *Opener) lookup(kid string, now time.Time) (any, *Error) {
	dk, err := o.Keys.Lookup(kid, now)
	if err != nil {
		return nil, fail(ReasonDecryptFailed, fmt.Errorf("%w: %w", ErrCrypto, err))
	}
	switch k := dk.Key.(type) {
	case *ecdsa.PrivateKey, jose.OpaqueKeyDecrypter:
		return k, nil
	}
	return nil, fail(ReasonDecryptFailed, wrap(ErrCrypto, "decryption key of an unusable type"))
}

// decrypt runs go-jose on a token whose form and header were already checked,
// with exactly the profile's algorithms. Every failure, and any panic inside
// the library, is the one opaque errDecrypt (catalogue J-15, J-16, J-17).
func decrypt(tok string, key any) (plain []byte, e *Error) {
	defer func() {
		if recover() != nil {
			plain, e = nil, errDecrypt
		}
	}()
	obj, err := jose.ParseEncryptedCompact(tok,
		[]jose.KeyAlgorithm{jose.ECDH_ES_A256KW}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, errDecrypt
	}
	plain, err = obj.Decrypt(key)
	if err != nil {
		return nil, errDecrypt
	}
	return plain, nil
}

// openInner runs steps 6 to 11 on an inner JWS.
func (o *Opener) openInner(jws string, now time.Time) (*Opened, *Error) {
	h, e := parseJWSHeader(jws, TypMessage)
	if e != nil {
		return nil, e
	}
	leeway := durationOr(o.Leeway, DefaultLeeway)
	chain, e := verifySigner(o.Peer, h, now, leeway)
	if e != nil {
		return nil, e
	}
	payload, e := verifySignature(jws, chain[0])
	if e != nil {
		return nil, e
	}
	c, e := o.checkClaims(payload, chain, now, leeway)
	if e != nil {
		return nil, e
	}
	if o.ValidateBody != nil {
		if err := o.ValidateBody(c.Type, c.Body); err != nil {
			return nil, fail(ReasonSchemaInvalid, fmt.Errorf("%w: %w", ErrSchema, err))
		}
	}
	inner := []byte(jws)
	return &Opened{Claims: *c, Inner: inner, Chain: chain, MsgSHA256: Digest(inner)}, nil
}

// verifySigner checks the x5c chain of h against the peer's pinned roots for
// the signing role at now, and that kid names its leaf (catalogue C-02). A
// chain not yet valid is transient: our clock may be behind (C-07).
func verifySigner(peer *certs.Bundle, h *jwsHeader, now time.Time, leeway time.Duration) ([]*x509.Certificate, *Error) {
	chain, err := peer.VerifyX5C(h.X5C, certs.VerifyOptions{Role: certs.RoleSigning, Now: now, Leeway: leeway})
	if err != nil {
		return nil, &Error{
			Reason:    ReasonUntrustedSigner,
			Transient: errors.Is(err, certs.ErrNotYetValid),
			Err:       fmt.Errorf("%w: %w", ErrUntrustedSigner, err),
		}
	}
	if len(chain) == 0 || h.Kid != certs.KID(chain[0]) {
		return nil, fail(ReasonUntrustedSigner, wrap(ErrUntrustedSigner, "kid does not name the x5c leaf"))
	}
	return chain, nil
}

// verifySignature verifies the ES256 signature of jws with the leaf's key
// only: never a key from the token, never a []byte (catalogue J-02, J-04).
// Any failure or library panic is the one errSignature.
func verifySignature(jws string, leaf *x509.Certificate) (payload []byte, e *Error) {
	defer func() {
		if recover() != nil {
			payload, e = nil, errSignature
		}
	}()
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, errSignature
	}
	obj, err := jose.ParseSignedCompact(jws, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, errSignature
	}
	payload, err = obj.Verify(crypto.PublicKey(pub))
	if err != nil {
		return nil, errSignature
	}
	return payload, nil
}

var claimMembers = members{
	"iss": true, "aud": true, "jti": true, "iat": true, "exp": true, "type": true,
	"schema": true, "sender": true, "body": true,
	"recipient": false, "correlation_id": false, "marking": false,
}

// checkClaims runs step 10: strict decoding, well-formedness, parties, the
// chain at signing time, and times.
func (o *Opener) checkClaims(payload []byte, chain []*x509.Certificate, now time.Time, leeway time.Duration) (*Claims, *Error) {
	c, err := decodeClaims(payload)
	if err != nil {
		return nil, claimsInvalid("payload: " + err.Error())
	}
	// The body was checked strictly as part of the payload, one level deeper.
	if e := validateClaims(c, false); e != nil {
		return nil, e
	}
	if c.Issuer != o.Peer.Party() {
		return nil, claimsInvalid("iss is not the peer")
	}
	if c.Audience != o.Self {
		return nil, claimsInvalid("aud is not us") // surreptitious forwarding (J-22)
	}
	if len(c.Body) > o.Limits.maxBody() {
		return nil, fail(ReasonTooLarge, wrap(ErrTooLarge, "body over the size cap"))
	}
	if e := signedWhileValid(o.Peer, chain, now, c.IssuedAt, leeway); e != nil {
		return nil, e
	}
	if e := checkTimes(c.IssuedAt, c.Expiry, now, leeway, durationOr(o.MaxLifetime, DefaultMaxLifetime)); e != nil {
		return nil, e
	}
	return c, nil
}

// decodeClaims decodes a claims payload in one strict pass: each top-level
// member is decoded on its own, and the body is kept as the exact bytes
// signed, without another pass of encoding/json over it.
func decodeClaims(payload []byte) (*Claims, error) {
	var c Claims
	err := scanJSON(payload, maxClaimsDepth, claimMembers, func(name string, v []byte) error {
		switch name {
		case "body":
			c.Body = v
			return nil
		case "iat":
			return json.Unmarshal(v, &c.IssuedAt)
		case "exp":
			return json.Unmarshal(v, &c.Expiry)
		}
		return json.Unmarshal(v, claimString(&c, name))
	})
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// claimString returns the string field of c for a string claim name.
func claimString(c *Claims, name string) any {
	switch name {
	case "iss":
		return &c.Issuer
	case "aud":
		return &c.Audience
	case "jti":
		return &c.ID
	case "type":
		return &c.Type
	case "schema":
		return &c.Schema
	case "sender":
		return &c.Sender
	case "recipient":
		return &c.Recipient
	case "correlation_id":
		return &c.CorrelationID
	}
	return &c.Marking // "marking": scanJSON admits only claimMembers
}

// signedWhileValid re-checks the chain at the signing time iat: a token
// signed outside its certificate's validity is never valid, so this failure
// is permanent.
func signedWhileValid(peer *certs.Bundle, chain []*x509.Certificate, now time.Time, iat int64, leeway time.Duration) *Error {
	opts := certs.VerifyOptions{Role: certs.RoleSigning, Now: now, SignedAt: time.Unix(iat, 0), Leeway: leeway}
	if err := peer.Verify(chain, opts); err != nil {
		return fail(ReasonUntrustedSigner, fmt.Errorf("%w: at iat: %w", ErrUntrustedSigner, err))
	}
	return nil
}

// checkTimes: exp passed (beyond leeway) is permanent; iat in the future
// (beyond leeway) is transient, our clock may be behind (catalogue J-24).
// Times are compared in whole seconds, so no claim value can overflow.
func checkTimes(iat, exp int64, now time.Time, leeway, maxLifetime time.Duration) *Error {
	nowS, lw := now.Unix(), int64(leeway/time.Second)
	switch {
	case exp < nowS-lw:
		return fail(ReasonExpired, wrap(ErrExpired, "exp passed"))
	case iat > nowS+lw:
		return &Error{Reason: ReasonNotYetValid, Transient: true, Err: wrap(ErrNotYetValid, "iat in the future")}
	case exp-iat > int64(maxLifetime/time.Second):
		return claimsInvalid("exp-iat over the maximum lifetime")
	}
	return nil
}

func durationOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
