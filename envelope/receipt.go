package envelope

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/cmx-exchange/cmx/certs"
)

// Receipt is the payload of a receipt JWS (DESIGN.md §4).
type Receipt struct {
	Issuer      string `json:"iss"` // the receiving party, which issues the receipt
	Audience    string `json:"aud"` // the original sender
	ID          string `json:"jti"` // ReceiptID(Msg, Status)
	IssuedAt    int64  `json:"iat"`
	Msg         string `json:"msg"`
	Status      Status `json:"status"`
	Reason      Reason `json:"reason,omitempty"`     // iff rejected
	EnvSHA256   string `json:"env_sha256"`           // Digest of the exact envelope received
	MsgSHA256   string `json:"msg_sha256,omitempty"` // Digest of the inner JWS, if it was decrypted
	Recipient   string `json:"recipient,omitempty"`  // iff delivered: the agency, "<iss>:<AGENCY>"
	DeliveredAt int64  `json:"delivered_at,omitempty"`
}

// Valid reports whether s is one of the receipt statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusAccepted, StatusDelivered, StatusRejected:
		return true
	}
	return false
}

// Valid reports whether r is one of the declared reason codes.
func (r Reason) Valid() bool {
	switch r {
	case ReasonMalformed, ReasonTooLarge, ReasonDecryptFailed, ReasonSignatureInvalid,
		ReasonUntrustedSigner, ReasonClaimsInvalid, ReasonSchemaInvalid, ReasonExpired,
		ReasonNotYetValid, ReasonUnknownRecipient, ReasonDuplicateConflict,
		ReasonPolicyDenied, ReasonRoutingMismatch, ReasonDeliveryFailed:
		return true
	}
	return false
}

// wellFormed reports whether r has the form of a reason code. A verifier
// accepts any well-formed code, so a peer on a newer version can add codes
// without its receipts turning invalid; an issuer uses only known ones.
func (r Reason) wellFormed() bool {
	if len(r) == 0 || len(r) > 48 {
		return false
	}
	for i := 0; i < len(r); i++ {
		if c := r[i]; (c < 'a' || c > 'z') && (c != '_' || i == 0) {
			return false
		}
	}
	return true
}

// ReceiptID is the deterministic receipt id "<msg>.<status>": one receipt per
// message and status (DESIGN.md §8.4).
func ReceiptID(msgID string, s Status) string { return msgID + "." + string(s) }

// IssueReceipt signs r as a compact JWS (ES256, typ cmx-rcpt+jwt, kid and
// x5c of signer). An empty r.ID is set to ReceiptID(r.Msg, r.Status). r is
// checked first (see validateReceipt) and its issuer must be signer's party.
func IssueReceipt(r *Receipt, signer *certs.Identity) ([]byte, error) {
	if r == nil || signer == nil {
		return nil, fmt.Errorf("%w: no receipt or no signer", errSeal)
	}
	if r.ID == "" {
		r.ID = ReceiptID(r.Msg, r.Status)
	}
	if e := validateReceipt(r); e != nil {
		return nil, e
	}
	if r.Reason != "" && !r.Reason.Valid() {
		return nil, claimsInvalid("unknown reason code")
	}
	if signer.Party != "" && signer.Party != r.Issuer {
		return nil, claimsInvalid("iss is not the signer's party")
	}
	payload, err := encodeJSON(r)
	if err != nil {
		return nil, fmt.Errorf("%w: encode receipt: %w", errSeal, err)
	}
	tok, err := signCompact(payload, TypReceipt, signer)
	if err != nil {
		return nil, err
	}
	return []byte(tok), nil
}

// validateReceipt checks the structure of r, reporting every problem at once.
func validateReceipt(r *Receipt) *Error {
	var p problems
	p.check(validParty(r.Issuer), "iss is not a party code")
	p.check(validParty(r.Audience), "aud is not a party code")
	p.check(r.Issuer != r.Audience, "iss equals aud")
	p.check(ValidID(r.Msg), "msg is not a UUIDv7")
	p.check(r.ID == ReceiptID(r.Msg, r.Status), "jti is not <msg>.<status>")
	p.check(r.IssuedAt > 0, "iat missing")
	p.check(r.Status.Valid(), "unknown status")
	rejected, delivered := r.Status == StatusRejected, r.Status == StatusDelivered
	p.check(rejected == (r.Reason != ""), "reason must be set iff rejected")
	p.check(r.Reason == "" || r.Reason.wellFormed(), "reason is not a reason code")
	p.check(delivered == (r.Recipient != ""), "recipient must be set iff delivered")
	p.check(delivered == (r.DeliveredAt != 0), "delivered_at must be set iff delivered")
	p.check(r.Recipient == "" || validAgencyOf(r.Recipient, r.Issuer), "recipient is not an agency of iss")
	p.check(r.DeliveredAt >= 0, "delivered_at negative")
	p.check(validDigest(r.EnvSHA256), "env_sha256 is not a base64url SHA-256")
	p.check(r.MsgSHA256 == "" || validDigest(r.MsgSHA256), "msg_sha256 is not a base64url SHA-256")
	return p.err()
}

// validDigest: 43 canonical base64url characters, the form of Digest.
func validDigest(s string) bool {
	if len(s) != 43 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if b64val[s[i]] == 0xff {
			return false
		}
	}
	return canonical(s)
}

// DefaultMaxReceiptBytes is the receipt size bound of a zero ReceiptVerifier.
const DefaultMaxReceiptBytes = 64 << 10

// ReceiptVerifier verifies receipts issued by one peer. It holds no mutable
// state and is safe for concurrent use. Fields must not change after first use.
// An auditor checking old evidence passes a trusted signing time as now: a
// certificate that has expired since is judged at that time (catalogue R-08).
type ReceiptVerifier struct {
	Self     string        // expected aud; "" = any (offline auditors)
	Peer     *certs.Bundle // the issuer's pinned roots; iss must equal Peer.Party()
	Leeway   time.Duration // iat may be at most this far in the future; 0 = DefaultLeeway
	MaxBytes int           // 0 = DefaultMaxReceiptBytes
}

// VerifiedReceipt is a receipt whose signature, chain and claims verified.
type VerifiedReceipt struct {
	Receipt
	Token []byte              // the exact compact JWS verified
	Chain []*x509.Certificate // the verified signer chain, leaf first; shared, do not modify
}

var receiptMembers = members{
	"iss": true, "aud": true, "jti": true, "iat": true, "msg": true, "status": true,
	"env_sha256": true, "reason": false, "msg_sha256": false, "recipient": false,
	"delivered_at": false,
}

// Verify checks a receipt token at time now, in this order: size; compact
// form; strict header (typ cmx-rcpt+jwt, alg ES256: catalogue R-04); x5c
// chain against Peer at now and kid naming its leaf; signature with the leaf
// key; strict claims and their structure (jti = ReceiptID(msg, status));
// iss = Peer.Party() (a receipt signed with our own key fails: our root is
// not in Peer, R-03); aud = Self when Self is set; the chain again at iat;
// iat at most Leeway in the future (transient, R-07). It checks neither that
// msg is a message we sent nor that env_sha256 is its digest:
// the caller holds that state. Every failure is an *Error.
func (v *ReceiptVerifier) Verify(token []byte, now time.Time) (*VerifiedReceipt, error) {
	if v.Peer == nil {
		return nil, errVerifier
	}
	maxBytes := v.MaxBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxReceiptBytes
	}
	if len(token) > maxBytes {
		return nil, fail(ReasonTooLarge, wrap(ErrTooLarge, "receipt over the size cap"))
	}
	vr, e := v.verify(string(token), now)
	if e != nil {
		return nil, e
	}
	vr.Token = token
	return vr, nil
}

// errVerifier reports a ReceiptVerifier used without Peer.
var errVerifier = errors.New("envelope: ReceiptVerifier needs Peer")

func (v *ReceiptVerifier) verify(tok string, now time.Time) (*VerifiedReceipt, *Error) {
	h, e := parseJWSHeader(tok, TypReceipt)
	if e != nil {
		return nil, e
	}
	leeway := durationOr(v.Leeway, DefaultLeeway)
	chain, e := verifySigner(v.Peer, h, now, leeway)
	if e != nil {
		return nil, e
	}
	payload, e := verifySignature(tok, chain[0])
	if e != nil {
		return nil, e
	}
	var r Receipt
	if err := decodeStrict(payload, 1, receiptMembers, &r); err != nil {
		return nil, claimsInvalid("payload: " + err.Error())
	}
	if e := validateReceipt(&r); e != nil {
		return nil, e
	}
	switch {
	case r.Issuer != v.Peer.Party():
		return nil, claimsInvalid("iss is not the peer")
	case v.Self != "" && r.Audience != v.Self:
		return nil, claimsInvalid("aud is not us")
	}
	if e := signedWhileValid(v.Peer, chain, now, r.IssuedAt, leeway); e != nil {
		return nil, e
	}
	if r.IssuedAt > now.Unix()+int64(leeway/time.Second) {
		return nil, &Error{Reason: ReasonNotYetValid, Transient: true, Err: wrap(ErrNotYetValid, "iat in the future")}
	}
	return &VerifiedReceipt{Receipt: r, Chain: chain}, nil
}
