package certs

import (
	"errors"
	"fmt"
)

// Sentinel errors. Verify wraps them in a *VerifyError; test with errors.Is.
// ErrNotYetValid is the only one a caller should treat as transient: it
// usually means our clock is behind (catalogue C-07).
var (
	ErrUntrusted    = errors.New("certs: no path to a pinned root")
	ErrExpired      = errors.New("certs: certificate expired")
	ErrNotYetValid  = errors.New("certs: certificate not yet valid")
	ErrKeyUsage     = errors.New("certs: key usage not allowed for role")
	ErrPolicy       = errors.New("certs: certificate policy not allowed for role")
	ErrParty        = errors.New("certs: certificate names another party")
	ErrChainTooLong = errors.New("certs: certificate chain too long")
	ErrCertTooLarge = errors.New("certs: certificate too large")
	ErrMalformed    = errors.New("certs: malformed certificate or key")
	ErrKeyMismatch  = errors.New("certs: private key does not match certificate")
	ErrWeakKey      = errors.New("certs: key type or size not allowed")

	// ErrInvalidOptions reports a caller error in VerifyOptions (no Role,
	// zero Now): never a property of the certificate.
	ErrInvalidOptions = errors.New("certs: invalid verify options")

	// ErrUnknownKey is returned by KeySet.Lookup for a kid that names none
	// of our decryption keys.
	ErrUnknownKey = errors.New("certs: unknown decryption key")
	// ErrKeyRetired is returned by KeySet.Lookup for a key retired longer
	// than the outage budget ago.
	ErrKeyRetired = errors.New("certs: decryption key retired")
)

// Names of the checks reported in VerifyError.Check, in the order Verify
// runs them.
const (
	CheckOptions  = "options"
	CheckChain    = "chain-length"
	CheckSize     = "cert-size"
	CheckDecode   = "decode"
	CheckKey      = "leaf-key"
	CheckPath     = "path"
	CheckCA       = "basic-constraints"
	CheckKU       = "key-usage"
	CheckEKU      = "ext-key-usage"
	CheckPolicy   = "policy"
	CheckParty    = "party"
	CheckValidity = "validity"
)

// VerifyError is the error Verify and VerifyX5C return: which check failed,
// on which certificate (its subject, "" if none could be parsed), and why.
// Err wraps one of the sentinels above.
type VerifyError struct {
	Check   string
	Subject string
	Err     error
}

func (e *VerifyError) Error() string {
	if e.Subject == "" {
		return fmt.Sprintf("%v (check %s)", e.Err, e.Check)
	}
	return fmt.Sprintf("%v (check %s, subject %q)", e.Err, e.Check, e.Subject)
}

func (e *VerifyError) Unwrap() error { return e.Err }

func verifyErr(check, subject string, err error) *VerifyError {
	return &VerifyError{Check: check, Subject: subject, Err: err}
}
