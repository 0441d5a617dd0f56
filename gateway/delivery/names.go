package delivery

import (
	"errors"
	"regexp"
)

// Errors for names that are refused before they reach a KV key or a header.
var (
	// ErrInvalidID: a message id is not a UUID in canonical lowercase text
	// form (RFC 9562 §4), the form the gateway assigns.
	ErrInvalidID = errors.New("delivery: invalid message id")
	// ErrInvalidAgency: an agency code does not match ^[A-Z0-9][A-Z0-9-]{0,31}$.
	ErrInvalidAgency = errors.New("delivery: invalid agency code")
)

var (
	idPattern     = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	agencyPattern = regexp.MustCompile(`^[A-Z0-9][A-Z0-9-]{0,31}$`)
)

// validID reports whether id is a canonical lowercase UUID: one id has one
// spelling, so it is one KV key and one Idempotency-Key.
func validID(id string) bool { return idPattern.MatchString(id) }

// validAgency reports whether a is an agency code that is a single NATS
// subject token without wildcards ('.', '*', '>' cannot occur).
func validAgency(a string) bool { return agencyPattern.MatchString(a) }
