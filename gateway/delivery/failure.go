package delivery

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Classes of a failed delivery. A *Failure matches exactly one of them with
// errors.Is; the caller maps them to JetStream actions (transient →
// NakWithDelay(Backoff(...)), permanent → park, rejected receipt, Term).
var (
	ErrTransient = errors.New("delivery: transient failure")
	ErrPermanent = errors.New("delivery: permanent failure")
)

// Causes carried in Failure.Err.
var (
	// ErrInFlight: a delivery of the same message id is already in progress
	// in this Webhook; the second call does not reach the agency (F-09).
	ErrInFlight = errors.New("delivery: a delivery of this message is already in flight")
	// ErrRedirect: the agency answered 3xx; redirects are never followed.
	ErrRedirect = errors.New("delivery: redirect not followed")
	// ErrStatus: the agency answered a non-2xx status (see Failure.Status).
	ErrStatus = errors.New("delivery: agency refused the delivery")
	// ErrAmbiguous: the agency answered 2xx but the response broke off; the
	// outcome is unknown, so it is retried with the same Idempotency-Key.
	ErrAmbiguous = errors.New("delivery: response broke off after 2xx")
	// ErrInvalidURL: the webhook URL is not an absolute http(s) URL.
	ErrInvalidURL = errors.New("delivery: invalid webhook URL")
)

// Failure is a delivery that did not end in 2xx.
type Failure struct {
	Status     int           // HTTP status, 0 when no response was received
	RetryAfter time.Duration // the agency's Retry-After, capped at MaxRetryAfter; 0 if none
	Permanent  bool          // retrying the same request cannot succeed
	Err        error         // the cause
}

func (f *Failure) Error() string {
	var b strings.Builder
	if f.Permanent {
		b.WriteString(ErrPermanent.Error())
	} else {
		b.WriteString(ErrTransient.Error())
	}
	if f.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", f.Status)
	}
	if f.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %v)", f.RetryAfter)
	}
	if f.Err != nil {
		b.WriteString(": ")
		b.WriteString(f.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (f *Failure) Unwrap() error { return f.Err }

// Is makes errors.Is(err, ErrPermanent) and errors.Is(err, ErrTransient)
// follow f.Permanent.
func (f *Failure) Is(target error) bool {
	switch target {
	case ErrPermanent:
		return f.Permanent
	case ErrTransient:
		return !f.Permanent
	}
	return false
}

// transientStatus reports whether an agency's non-2xx status is worth
// retrying with the same request. 409 is transient because the IETF
// Idempotency-Key draft answers a concurrent request with the same key with
// 409; 421 asks for a new connection. Every other 3xx/4xx is permanent, as
// is 501; every other 5xx, and anything outside 100..599, is transient.
func transientStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusConflict, http.StatusMisdirectedRequest,
		http.StatusTooEarly, http.StatusTooManyRequests:
		return true
	case http.StatusNotImplemented:
		return false
	}
	return code >= 500 || code < 100
}

// permanentError reports whether a transport error cannot be cured by
// retrying: the agency's certificate does not verify, the agency refuses
// our certificate, the URL is not usable, or TLS met a plain HTTP server.
// Everything else (refused, reset, timeout, EOF) is transient.
func permanentError(err error) bool {
	var (
		verr *tls.CertificateVerificationError
		uerr x509.UnknownAuthorityError
		herr x509.HostnameError
		cerr x509.CertificateInvalidError
		aerr tls.AlertError
		rerr tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, ErrInvalidURL),
		errors.As(err, &verr), errors.As(err, &uerr), errors.As(err, &herr), errors.As(err, &cerr),
		errors.As(err, &rerr):
		return true
	case errors.As(err, &aerr):
		return certificateAlert(uint8(aerr))
	}
	return false
}

// certificateAlert reports TLS alerts (RFC 8446 §6.2) by which the agency
// rejects our client certificate.
func certificateAlert(a uint8) bool {
	switch a {
	case 42, 43, 44, 45, 46, 48, 49, 116: // bad, unsupported, revoked, expired, unknown cert; unknown_ca; access_denied; certificate_required
		return true
	}
	return false
}

// parseRetryAfter reads a Retry-After value (RFC 9110 §10.2.3: delay-seconds
// or an HTTP-date) relative to now and caps it at limit. ok is false when
// the value is absent or malformed. A date in the past means 0.
func parseRetryAfter(v string, now time.Time, limit time.Duration) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if strings.Trim(v, "0123456789") == "" {
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil || secs > uint64(limit/time.Second) {
			return limit, true // digits that overflow still mean "a very long time"
		}
		return min(time.Duration(secs)*time.Second, limit), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), limit), true
}
