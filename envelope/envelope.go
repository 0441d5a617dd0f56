package envelope

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
)

// Token types, carried in the protected header "typ" of each JWS. They keep
// messages and receipts apart (RFC 8725 §3.11): one is never accepted as the other.
const (
	TypMessage = "cmx-msg+jwt"
	TypReceipt = "cmx-rcpt+jwt"
)

// Type is the kind of information a message carries under the agreement.
type Type string

const (
	NonMarketPracticeReport      Type = "non_market_practice_report"
	LaborEnforcementNotice       Type = "labor_enforcement_notice"
	InvestmentReviewBestPractice Type = "investment_review_best_practice"
)

// Types lists every message type, in a stable order.
var Types = []Type{NonMarketPracticeReport, LaborEnforcementNotice, InvestmentReviewBestPractice}

// Valid reports whether t is one of Types.
func (t Type) Valid() bool {
	switch t {
	case NonMarketPracticeReport, LaborEnforcementNotice, InvestmentReviewBestPractice:
		return true
	}
	return false
}

// Schema is the schema identifier of t, carried in the "schema" claim.
func (t Type) Schema() string { return "cmx." + string(t) + ".v1" }

// Claims is the payload of a message JWS (DESIGN.md §4). Sender and Recipient
// are agency names qualified by party ("US:DOL-ILAB"); Sender always comes from
// the authenticated agency, never from a request body.
type Claims struct {
	Issuer        string          `json:"iss"`
	Audience      string          `json:"aud"`
	ID            string          `json:"jti"`
	IssuedAt      int64           `json:"iat"`
	Expiry        int64           `json:"exp"`
	Type          Type            `json:"type"`
	Schema        string          `json:"schema"`
	Sender        string          `json:"sender"`
	Recipient     string          `json:"recipient,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	Marking       string          `json:"marking,omitempty"`
	Body          json.RawMessage `json:"body"`
}

// Status is the state a receipt attests.
type Status string

const (
	StatusAccepted  Status = "accepted"
	StatusDelivered Status = "delivered"
	StatusRejected  Status = "rejected"
)

// Reason is the stable code carried by a rejected receipt.
type Reason string

const (
	ReasonMalformed         Reason = "malformed"          // not a well-formed compact token of the profile
	ReasonTooLarge          Reason = "too_large"          // over a size cap, refused before parsing
	ReasonDecryptFailed     Reason = "decrypt_failed"     // unknown key, retired key, bad tag, bad epk...
	ReasonSignatureInvalid  Reason = "signature_invalid"  // signature does not verify with the leaf key
	ReasonUntrustedSigner   Reason = "untrusted_signer"   // chain, KeyUsage, policy, party or validity failed
	ReasonClaimsInvalid     Reason = "claims_invalid"     // missing or ill-formed claims, wrong iss/aud
	ReasonSchemaInvalid     Reason = "schema_invalid"     // body not valid against the type's schema
	ReasonExpired           Reason = "expired"            // exp passed (with leeway)
	ReasonNotYetValid       Reason = "not_yet_valid"      // iat in the future beyond leeway (transient)
	ReasonUnknownRecipient  Reason = "unknown_recipient"  // no agency of ours takes it
	ReasonDuplicateConflict Reason = "duplicate_conflict" // same id seen with another digest
	ReasonPolicyDenied      Reason = "policy_denied"      // marking or type refused by local policy
	ReasonRoutingMismatch   Reason = "routing_mismatch"   // subject or headers disagree with signed claims
	ReasonDeliveryFailed    Reason = "delivery_failed"    // accepted, but our agency refused it permanently
)

// Digest returns the base64url (unpadded) SHA-256 of b, the form used by the
// env_sha256 and msg_sha256 receipt claims.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
