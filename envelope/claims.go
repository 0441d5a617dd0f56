package envelope

import (
	"bytes"
	"encoding/base64"
	"strings"

	"github.com/google/uuid"
)

// DefaultMaxBodyBytes is the body size bound of a zero Limits.
const DefaultMaxBodyBytes = 1 << 20

// Header size bounds, on the base64url segment, checked before any JSON is
// decoded (catalogue J-25). The inner header carries the x5c chain.
const (
	maxOuterHeaderBytes = 4 << 10
	maxInnerHeaderBytes = 8 << 10
	// maxClaimsOverhead bounds the claims other than the body, in bytes.
	maxClaimsOverhead = 2 << 10
)

// Limits bounds the work done on one input. The zero value is usable.
type Limits struct {
	MaxBodyBytes int // bytes of the body claim; 0 (or less) = DefaultMaxBodyBytes
}

func (l Limits) maxBody() int {
	if l.MaxBodyBytes <= 0 {
		return DefaultMaxBodyBytes
	}
	return l.MaxBodyBytes
}

// MaxInnerBytes bounds a legitimate inner JWS carrying MaxBodyBytes of body:
// header, base64url of the claims, signature.
func (l Limits) MaxInnerBytes() int {
	enc := base64.RawURLEncoding
	return maxInnerHeaderBytes + 1 + enc.EncodedLen(l.maxBody()+maxClaimsOverhead) + 1 + enc.EncodedLen(64)
}

// MaxEnvelopeBytes bounds a legitimate JWE for MaxBodyBytes of body: the
// inner JWS is base64url-encoded once more, plus the outer header, the
// wrapped key, the IV and the tag. Anything longer is refused before parsing.
func (l Limits) MaxEnvelopeBytes() int {
	enc := base64.RawURLEncoding
	return maxOuterHeaderBytes + 1 + enc.EncodedLen(40) + 1 + enc.EncodedLen(12) + 1 +
		enc.EncodedLen(l.MaxInnerBytes()) + 1 + enc.EncodedLen(16)
}

// NewID returns a new message id: a UUIDv7 in canonical lowercase text form.
func NewID() string { return uuid.Must(uuid.NewV7()).String() }

// ValidID reports whether s is a UUIDv7 in canonical lowercase text form
// (8-4-4-4-12 hex digits, version 7, RFC 9562 variant). Ids are compared as
// bytes, so exactly one text form is accepted.
func ValidID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return s[14] == '7' && strings.IndexByte("89ab", s[19]) >= 0
}

// ValidateClaims checks that c is well formed (DESIGN.md §4): party codes,
// ids, times, type and schema, agency names, optional claims and a body that
// is one strict JSON object. It reports every problem at once. It does not
// check the body against the type's schema, nor times against a clock.
func ValidateClaims(c *Claims) error {
	if e := validateClaims(c, true); e != nil {
		return e
	}
	return nil
}

// validateClaims is ValidateClaims; strictBody false skips the strict scan
// of a body already scanned as part of its payload.
func validateClaims(c *Claims, strictBody bool) *Error {
	if c == nil {
		return claimsInvalid("no claims")
	}
	var p problems
	p.check(validParty(c.Issuer), "iss is not a party code")
	p.check(validParty(c.Audience), "aud is not a party code")
	p.check(c.Issuer != c.Audience, "iss equals aud")
	p.check(ValidID(c.ID), "jti is not a UUIDv7")
	p.check(c.IssuedAt > 0, "iat missing")
	p.check(c.Expiry > c.IssuedAt, "exp not after iat")
	p.check(c.Type.Valid(), "unknown type")
	p.check(c.Schema == c.Type.Schema(), "schema does not match type")
	p.check(validAgencyOf(c.Sender, c.Issuer), "sender is not an agency of iss")
	p.check(c.Recipient == "" || validAgencyOf(c.Recipient, c.Audience), "recipient is not an agency of aud")
	p.check(validCorrelation(c.CorrelationID), "correlation_id not printable ASCII of at most 128 bytes")
	p.check(validMarking(c.Marking), "marking not [A-Z0-9:_ -] of at most 64 bytes")
	p.check(validBody(c.Body, strictBody), "body is not a strict JSON object")
	return p.err()
}

// problems collects failed checks into one claims error.
type problems []string

func (p *problems) check(ok bool, msg string) {
	if !ok {
		*p = append(*p, msg)
	}
}

func (p problems) err() *Error {
	if len(p) == 0 {
		return nil
	}
	return claimsInvalid(strings.Join(p, "; "))
}

// validParty: ^[A-Z]{2}$.
func validParty(s string) bool {
	return len(s) == 2 && isUpper(s[0]) && isUpper(s[1])
}

func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// validAgency: ^[A-Z0-9][A-Z0-9-]{0,31}$.
func validAgency(s string) bool {
	if len(s) == 0 || len(s) > 32 || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isUpper(c) && !isDigit(c) && c != '-' {
			return false
		}
	}
	return true
}

// validAgencyOf: "<party>:<AGENCY>" for the given party.
func validAgencyOf(s, party string) bool {
	rest, ok := strings.CutPrefix(s, party+":")
	return ok && validParty(party) && validAgency(rest)
}

func validCorrelation(s string) bool {
	if len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func validMarking(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isUpper(c) && !isDigit(c) && strings.IndexByte(":_ -", c) < 0 {
			return false
		}
	}
	return true
}

// validBody: one JSON object passing the strict checks the receiver applies
// to the whole claims payload, one level shallower since it sits inside it.
func validBody(b []byte, strict bool) bool {
	b = bytes.TrimSpace(b)
	return len(b) > 0 && b[0] == '{' && (!strict || checkJSON(b, maxClaimsDepth-1, nil) == nil)
}
