package envelope

import (
	"errors"
	"strings"
)

// Sentinel errors. Every failure of Open, OpenInner and ReceiptVerifier.Verify
// is an *Error whose Err wraps exactly one of them; test with errors.Is.
var (
	ErrTooLarge        = errors.New("envelope: too large")
	ErrMalformed       = errors.New("envelope: malformed token")
	ErrCrypto          = errors.New("envelope: cryptographic failure")
	ErrUntrustedSigner = errors.New("envelope: untrusted signer")
	ErrClaims          = errors.New("envelope: invalid claims")
	ErrExpired         = errors.New("envelope: expired")
	ErrNotYetValid     = errors.New("envelope: not yet valid")
	ErrSchema          = errors.New("envelope: body does not match its schema")
)

// Error is a verification failure with the reason code a rejected receipt
// carries. Transient marks failures that may pass later without any change to
// the input (our clock may be behind: catalogue C-07, J-24); the caller
// retries those instead of rejecting.
type Error struct {
	Reason    Reason
	Transient bool
	Err       error // wraps one of the sentinels
}

// Error returns "envelope: <reason>: <cause>".
func (e *Error) Error() string {
	cause := "unknown"
	if e.Err != nil {
		cause = strings.TrimPrefix(e.Err.Error(), "envelope: ")
	}
	return "envelope: " + string(e.Reason) + ": " + cause
}

func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the reason code of err: the Reason of an *Error in its
// chain, ReasonMalformed for any other non-nil error, "" for nil.
func ReasonOf(err error) Reason {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) && e.Reason != "" {
		return e.Reason
	}
	return ReasonMalformed
}

// IsTransient reports whether err may go away by waiting: a message or a
// signer certificate that is not yet valid by our clock.
func IsTransient(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Transient
}

// fail builds a permanent *Error.
func fail(reason Reason, err error) *Error { return &Error{Reason: reason, Err: err} }

// errDecrypt is the one opaque error of every decryption failure, whatever
// the cause inside the JWE (bad epk, bad key wrap, bad tag, bad IV): no
// difference in text can serve as an oracle (catalogue J-15, J-17).
var errDecrypt = &Error{Reason: ReasonDecryptFailed, Err: wrap(ErrCrypto, "decryption failed")}

// errSignature is the one opaque error of every signature failure.
var errSignature = &Error{Reason: ReasonSignatureInvalid, Err: wrap(ErrCrypto, "signature does not verify")}

// wrapped is a sentinel with detail, cheaper than fmt.Errorf on hot paths
// and with the same errors.Is behaviour.
type wrapped struct {
	sentinel error
	detail   string
}

func (w *wrapped) Error() string { return w.sentinel.Error() + ": " + w.detail }
func (w *wrapped) Unwrap() error { return w.sentinel }

func wrap(sentinel error, detail string) error { return &wrapped{sentinel: sentinel, detail: detail} }

func malformed(detail string) *Error { return fail(ReasonMalformed, wrap(ErrMalformed, detail)) }

func claimsInvalid(detail string) *Error {
	return fail(ReasonClaimsInvalid, wrap(ErrClaims, detail))
}
