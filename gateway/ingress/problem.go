package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"

	"github.com/cmx-exchange/cmx/gateway/api"
)

// Stable problem codes of the edge itself (the last part of the problem+json
// "type", urn:cmx:problem:<code>). Backend errors bring their own codes.
const (
	CodeUnauthorized          = "unauthorized"
	CodeForbidden             = "forbidden"
	CodeNotFound              = "not-found"
	CodeMethodNotAllowed      = "method-not-allowed"
	CodeBodyTooLarge          = "body-too-large"
	CodeRequestTimeout        = "request-timeout"
	CodeBodyUnreadable        = "body-unreadable"
	CodeUnsupportedMediaType  = "unsupported-media-type"
	CodeMalformedJSON         = "malformed-json"
	CodeUnknownField          = "unknown-field"
	CodeDuplicateKey          = "duplicate-key"
	CodeTooDeep               = "too-deep"
	CodeInvalidUTF8           = "invalid-utf8"
	CodeTrailingData          = "trailing-data"
	CodeMissingField          = "missing-field"
	CodeInvalidField          = "invalid-field"
	CodeInvalidParameter      = "invalid-parameter"
	CodeInvalidID             = "invalid-id"
	CodeUnknownType           = "unknown-type"
	CodeUnknownPeer           = "unknown-peer"
	CodeInvalidIdempotencyKey = "invalid-idempotency-key"
	CodeIdempotencyConflict   = "idempotency-conflict"  // same key, different body: 422
	CodeIdempotencyInFlight   = "idempotency-in-flight" // same key, first still running: 409
	CodeRateLimited           = "rate-limited"
	CodeUnavailable           = "unavailable"
	CodeNotReady              = "not-ready"
	CodeInternal              = "internal"
	CodeConflict              = "conflict"
	CodeUnprocessable         = "unprocessable"
	CodeInvalid               = "invalid"
)

// problemErr is an error the edge turns into a problem+json answer.
type problemErr struct {
	status     int
	code       string
	field      string
	detail     string // safe to show to the client: never echoes client input unescaped
	retryAfter int    // seconds; 0 = no Retry-After header
	err        error  // cause, logged, never shown
}

func (p *problemErr) Error() string {
	s := p.code
	if p.detail != "" {
		s += ": " + p.detail
	}
	if p.err != nil {
		s += ": " + p.err.Error()
	}
	return s
}

func (p *problemErr) Unwrap() error { return p.err }

func problem(status int, code, detail string) *problemErr {
	return &problemErr{status: status, code: code, detail: detail}
}

func (p *problemErr) withField(f string) *problemErr { p.field = f; return p }

// writeProblem writes p as application/problem+json (RFC 9457).
func writeProblem(w http.ResponseWriter, r *http.Request, p *problemErr) {
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	if p.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(p.retryAfter))
	}
	if p.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="cmx"`)
	}
	body, err := json.Marshal(api.Problem{
		Type:     api.ProblemTypePrefix + p.code,
		Title:    http.StatusText(p.status),
		Status:   p.status,
		Detail:   p.detail,
		Instance: instance(r),
		Field:    p.field,
	})
	if err != nil { // cannot happen with these field types
		body = []byte(`{"type":"urn:cmx:problem:internal","status":500}`)
	}
	w.WriteHeader(p.status)
	_, _ = w.Write(body)
}

// instance is the request path as sent on the wire, percent-encoded (so no
// control characters), truncated: it is client input echoed back.
func instance(r *http.Request) string {
	s := r.URL.EscapedPath()
	if len(s) > 256 {
		s = s[:256]
	}
	return s
}

var codeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// fromBackend maps an error returned by the Backend to a problem. Only the
// edge chooses status codes (STYLE.md); internal causes are logged, not shown.
func fromBackend(err error) *problemErr {
	var ae *api.Error
	if !errors.As(err, &ae) {
		if errors.Is(err, context.DeadlineExceeded) {
			return &problemErr{status: http.StatusServiceUnavailable, code: CodeUnavailable,
				detail: "the gateway did not finish in time; retry with the same Idempotency-Key", retryAfter: 1, err: err}
		}
		return &problemErr{status: http.StatusInternalServerError, code: CodeInternal, detail: "internal error", err: err}
	}
	status, code := statusOf(ae.Kind)
	if ae.Code != "" && codeRE.MatchString(ae.Code) {
		code = ae.Code
	}
	p := &problemErr{status: status, code: code, field: ae.Field, detail: ae.Detail, err: err}
	switch ae.Kind {
	case api.KindUnavailable:
		p.retryAfter = 1
	case api.KindInternal:
		p.code, p.field, p.detail = CodeInternal, "", "internal error"
	}
	return p
}

func statusOf(k api.Kind) (int, string) {
	switch k {
	case api.KindInvalid:
		return http.StatusBadRequest, CodeInvalid
	case api.KindUnprocessable:
		return http.StatusUnprocessableEntity, CodeUnprocessable
	case api.KindForbidden:
		return http.StatusForbidden, CodeForbidden
	case api.KindNotFound:
		return http.StatusNotFound, CodeNotFound
	case api.KindConflict:
		return http.StatusConflict, CodeConflict
	case api.KindUnavailable:
		return http.StatusServiceUnavailable, CodeUnavailable
	}
	return http.StatusInternalServerError, CodeInternal
}

// fail writes err (a *problemErr or a Backend error) and logs what the
// client is not told.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var p *problemErr
	if !errors.As(err, &p) {
		p = fromBackend(err)
	}
	if p.status >= 500 {
		s.log.ErrorContext(r.Context(), "request failed",
			slog.String("route", r.Pattern), slog.Int("status", p.status),
			slog.String("code", p.code), slog.Any("error", err))
	}
	writeProblem(w, r, p)
}
