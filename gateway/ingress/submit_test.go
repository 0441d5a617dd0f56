package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
)

func TestSubmit(t *testing.T) {
	e := newEnv(t, envOption{})
	id := wantAccepted(t, e.submit(t, tokDOL, validBody))
	calls := e.be.submits()
	if len(calls) != 1 || calls[0].agency != "DOL-ILAB" || calls[0].id != id || calls[0].req.To != "JP" {
		t.Fatalf("backend saw %+v", calls)
	}
	id2 := wantAccepted(t, e.submit(t, tokDOL, validBody))
	if id2 == id {
		t.Fatal("without Idempotency-Key every submission needs a fresh id")
	}
	wantAccepted(t, e.submit(t, tokDOL, validBody, "Content-Type", "application/json; charset=UTF-8"))
}

func TestSubmitRefused(t *testing.T) {
	e := newEnv(t, envOption{})
	tests := []struct {
		name      string
		token     string
		body      string
		hdr       []string
		status    int
		code      string
		wantField string
	}{
		{name: "H-08_sender_in_body", token: tokDOL, body: `{"type":"labor_enforcement_notice","to":"JP","sender":"US:USTR","body":{}}`,
			status: 400, code: CodeUnknownField, wantField: "sender"},
		{name: "type_not_allowed_for_agency", token: tokUSTR, body: validBody, status: 403, code: CodeForbidden, wantField: "type"},
		{name: "unknown_type", token: tokDOL, body: `{"type":"gossip","to":"JP","body":{}}`, status: 422, code: CodeUnknownType, wantField: "type"},
		{name: "missing_type", token: tokDOL, body: `{"to":"JP","body":{}}`, status: 400, code: CodeMissingField, wantField: "type"},
		{name: "missing_to", token: tokDOL, body: `{"type":"labor_enforcement_notice","body":{}}`, status: 400, code: CodeMissingField, wantField: "to"},
		{name: "to_ourselves", token: tokDOL, body: `{"type":"labor_enforcement_notice","to":"US","body":{}}`, status: 422, code: CodeUnknownPeer, wantField: "to"},
		{name: "to_not_a_party", token: tokDOL, body: `{"type":"labor_enforcement_notice","to":"jpn","body":{}}`, status: 422, code: CodeUnknownPeer, wantField: "to"},
		{name: "H-20_crlf_in_correlation_id", token: tokDOL, body: `{"type":"labor_enforcement_notice","to":"JP","correlation_id":"a\r\nX-Injected: 1","body":{}}`,
			status: 400, code: CodeInvalidField, wantField: "correlation_id"},
		{name: "H-20_long_correlation_id", token: tokDOL, body: `{"type":"labor_enforcement_notice","to":"JP","correlation_id":"` + strings.Repeat("a", 129) + `","body":{}}`,
			status: 400, code: CodeInvalidField, wantField: "correlation_id"},
		{name: "H-20_colon_space_in_recipient", token: tokDOL, body: `{"type":"labor_enforcement_notice","to":"JP","recipient":"JP: X-Injected","body":{}}`,
			status: 400, code: CodeInvalidField, wantField: "recipient"},
		{name: "H-20_newline_in_marking", token: tokDOL, body: `{"type":"labor_enforcement_notice","to":"JP","marking":"TLP:RED\nX-Injected: 1","body":{}}`,
			status: 400, code: CodeInvalidField, wantField: "marking"},
		{name: "H-12_nul_in_marking", token: tokDOL, body: `{"type":"labor_enforcement_notice","to":"JP","marking":"TLP\u0000","body":{}}`,
			status: 400, code: CodeMalformedJSON, wantField: "marking"},
		{name: "H-13_gzip", token: tokDOL, body: validBody, hdr: []string{"Content-Encoding", "gzip"}, status: 415, code: CodeUnsupportedMediaType},
		{name: "H-13_deflate", token: tokDOL, body: validBody, hdr: []string{"Content-Encoding", "deflate"}, status: 415, code: CodeUnsupportedMediaType},
		{name: "text_plain", token: tokDOL, body: validBody, hdr: []string{"Content-Type", "text/plain"}, status: 415, code: CodeUnsupportedMediaType},
		{name: "json_latin1", token: tokDOL, body: validBody, hdr: []string{"Content-Type", "application/json; charset=latin1"}, status: 415, code: CodeUnsupportedMediaType},
		{name: "H-10_key_too_long", token: tokDOL, body: validBody, hdr: []string{"Idempotency-Key", strings.Repeat("k", 65)}, status: 400, code: CodeInvalidIdempotencyKey},
		{name: "H-10_key_non_ascii", token: tokDOL, body: validBody, hdr: []string{"Idempotency-Key", "ключ"}, status: 400, code: CodeInvalidIdempotencyKey},
		{name: "H-10_key_space", token: tokDOL, body: validBody, hdr: []string{"Idempotency-Key", "a b"}, status: 400, code: CodeInvalidIdempotencyKey},
		{name: "H-10_key_empty", token: tokDOL, body: validBody, hdr: []string{"Idempotency-Key", ""}, status: 400, code: CodeInvalidIdempotencyKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.be.submits())
			r := e.submit(t, tt.token, tt.body, tt.hdr...)
			p := wantProblem(t, r, tt.status, tt.code)
			if p.Field != tt.wantField {
				t.Fatalf("field %q, want %q", p.Field, tt.wantField)
			}
			if p.Instance != "/v1/messages" {
				t.Fatalf("instance %q", p.Instance)
			}
			if strings.Contains(string(r.body), "X-Injected") || strings.Contains(e.logs.String(), "X-Injected") {
				t.Fatal("client input reflected in the answer or the logs")
			}
			if n := len(e.be.submits()); n != before {
				t.Fatal("a refused request reached Submit")
			}
		})
	}
	t.Run("H-10_two_keys", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/messages", strings.NewReader(validBody))
		req.Header.Set("Authorization", "Bearer "+tokDOL)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Add("Idempotency-Key", "one")
		req.Header.Add("Idempotency-Key", "two")
		wantProblem(t, e.send(t, req), 400, CodeInvalidIdempotencyKey)
	})
}

// TestHeaderInjection sends raw requests whose header values a Go client
// would refuse to send (H-20): net/http or the handler answers 400, and the
// value is never reflected.
func TestHeaderInjection(t *testing.T) {
	e := newEnv(t, envOption{})
	tests := []struct {
		name  string
		extra string
	}{
		{name: "H-20_CR_in_idempotency_key", extra: "Idempotency-Key: a\rX-Injected: 1\r\n"},
		{name: "H-20_NUL_in_idempotency_key", extra: "Idempotency-Key: a\x00X-Injected\r\n"},
		{name: "H-20_obs_fold_idempotency_key", extra: "Idempotency-Key: abc\r\n X-Injected\r\n"},
		{name: "H-10_DEL_in_idempotency_key", extra: "Idempotency-Key: a\x7fX-Injected\r\n"},
		{name: "H-20_tab_in_idempotency_key", extra: "Idempotency-Key: a\tX-Injected\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := "POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tokDOL +
				"\r\nContent-Type: application/json\r\n" + tt.extra + "Content-Length: " + itoa(len(validBody)) + "\r\n\r\n" + validBody
			resp, body := rawRoundTrip(t, e.addr, raw)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", resp.StatusCode, body)
			}
			for k, vs := range resp.Header {
				if strings.Contains(k, "Injected") || strings.Contains(strings.Join(vs, ""), "Injected") {
					t.Fatalf("reflected in header %s: %v", k, vs)
				}
			}
			if strings.Contains(body, "Injected") || strings.Contains(e.logs.String(), "Injected") {
				t.Fatal("reflected in the body or the logs")
			}
			if len(e.be.submits()) != 0 {
				t.Fatal("reached Submit")
			}
		})
	}
}

func TestBackendErrors(t *testing.T) {
	e := newEnv(t, envOption{})
	tests := []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter string
		leak       string // must not appear in the answer
	}{
		{name: "H-16_unavailable", err: &api.Error{Kind: api.KindUnavailable, Code: "stream-full", Detail: "outbox full"},
			status: 503, code: "stream-full", retryAfter: "1"},
		{name: "H-16_pubAck_timeout", err: context.DeadlineExceeded, status: 503, code: CodeUnavailable, retryAfter: "1"},
		{name: "H-14_unknown_recipient", err: &api.Error{Kind: api.KindUnprocessable, Code: "unknown-recipient", Field: "recipient"},
			status: 422, code: "unknown-recipient"},
		{name: "schema_invalid", err: &api.Error{Kind: api.KindUnprocessable, Code: "schema-invalid", Field: "body/title"},
			status: 422, code: "schema-invalid"},
		{name: "H-14_recipient_forbidden", err: &api.Error{Kind: api.KindForbidden, Code: "recipient-forbidden"}, status: 403, code: "recipient-forbidden"},
		{name: "invalid", err: &api.Error{Kind: api.KindInvalid}, status: 400, code: CodeInvalid},
		{name: "conflict", err: &api.Error{Kind: api.KindConflict, Code: "conflict"}, status: 409, code: CodeConflict},
		{name: "bad_code_replaced", err: &api.Error{Kind: api.KindInvalid, Code: "Bad Code\r\n"}, status: 400, code: CodeInvalid},
		{name: "internal_not_leaked", err: &api.Error{Kind: api.KindInternal, Code: "secret-code", Detail: "key /etc/secret"},
			status: 500, code: CodeInternal, leak: "secret"},
		{name: "plain_error_not_leaked", err: errors.New("nats: connection to 10.0.0.7 refused"), status: 500, code: CodeInternal, leak: "10.0.0.7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.be.setSubmit(func(context.Context, string, string) error { return tt.err })
			r := e.submit(t, tokDOL, validBody)
			p := wantProblem(t, r, tt.status, tt.code)
			if got := r.header.Get("Retry-After"); got != tt.retryAfter {
				t.Fatalf("Retry-After %q, want %q", got, tt.retryAfter)
			}
			var ae *api.Error
			if errors.As(tt.err, &ae) && tt.status < 500 && (p.Field != ae.Field || p.Detail != ae.Detail) {
				t.Fatalf("problem %+v does not carry the backend's field and detail", p)
			}
			if tt.leak != "" && strings.Contains(string(r.body), tt.leak) {
				t.Fatalf("internal detail leaked: %s", r.body)
			}
		})
	}
	t.Run("logged", func(t *testing.T) {
		if !strings.Contains(e.logs.String(), "10.0.0.7") {
			t.Fatal("an internal error must be logged")
		}
	})
}

func TestReads(t *testing.T) {
	e := newEnv(t, envOption{})
	id := wantAccepted(t, e.submit(t, tokDOL, validBody))
	var m api.Message
	r := e.do(t, http.MethodGet, "/v1/messages/"+id, tokDOL, "")
	if err := json.Unmarshal(r.body, &m); r.status != 200 || err != nil || m.ID != id {
		t.Fatalf("GET message: %d %s", r.status, r.body)
	}
	wantCommonHeaders(t, r)
	wantProblem(t, e.do(t, http.MethodGet, "/v1/messages/"+id, tokUSTR, ""), 404, CodeNotFound)
	if r := e.do(t, http.MethodGet, "/v1/messages/"+id, tokOps, ""); r.status != 200 {
		t.Fatalf("admin GET: %d", r.status)
	}
	for _, bad := range []string{"x", "550e8400-e29b-41d4-a716-446655440000", strings.ToUpper(id), "%0d%0aX-Injected:1", id + "0"} {
		r := e.do(t, http.MethodGet, "/v1/messages/"+bad, tokDOL, "")
		wantProblem(t, r, 400, CodeInvalidID)
		if strings.Contains(string(r.body), "Injected:1") && !strings.Contains(string(r.body), "%0d%0a") {
			t.Fatal("raw path reflected")
		}
	}

	e.be.addDelivery("DOL-ILAB", "01890000-0000-7000-8000-000000000001")
	e.be.addDelivery("DOL-ILAB", "01890000-0000-7000-8000-000000000002")
	var in api.Inbox
	r = e.do(t, http.MethodGet, "/v1/inbox?limit=1", tokDOL, "")
	if err := json.Unmarshal(r.body, &in); r.status != 200 || err != nil || len(in.Deliveries) != 1 {
		t.Fatalf("inbox: %d %s", r.status, r.body)
	}
	r = e.do(t, http.MethodGet, "/v1/inbox", tokUSTR, "")
	if r.status != 200 || string(r.body) != `{"deliveries":[]}` {
		t.Fatalf("empty inbox: %d %s", r.status, r.body)
	}
	for _, q := range []string{"limit=0", "limit=101", "limit=x", "limit=1&limit=2", "limit="} {
		p := wantProblem(t, e.do(t, http.MethodGet, "/v1/inbox?"+q, tokDOL, ""), 400, CodeInvalidParameter)
		if p.Field != "limit" {
			t.Fatalf("field %q", p.Field)
		}
	}
	if r := e.do(t, http.MethodPost, "/v1/inbox/01890000-0000-7000-8000-000000000001/ack", tokDOL, ""); r.status != 204 {
		t.Fatalf("ack: %d %s", r.status, r.body)
	}
	wantProblem(t, e.do(t, http.MethodPost, "/v1/inbox/01890000-0000-7000-8000-000000000001/ack", tokDOL, ""), 404, CodeNotFound)

	wantProblem(t, e.do(t, http.MethodGet, "/v1/peers", tokDOL, ""), 403, CodeForbidden)
	var ps api.Peers
	r = e.do(t, http.MethodGet, "/v1/peers", tokOps, "")
	if err := json.Unmarshal(r.body, &ps); r.status != 200 || err != nil || len(ps.Peers) != 1 {
		t.Fatalf("peers: %d %s", r.status, r.body)
	}
}

func TestHealth(t *testing.T) {
	e := newEnv(t, envOption{})
	r := e.do(t, http.MethodGet, "/healthz", "", "")
	if r.status != 200 || string(r.body) != `{"status":"ok"}` {
		t.Fatalf("healthz: %d %s", r.status, r.body)
	}
	wantCommonHeaders(t, r)
	if r := e.do(t, http.MethodGet, "/readyz", "", ""); r.status != 200 {
		t.Fatalf("readyz: %d %s", r.status, r.body)
	}
	e.be.mu.Lock()
	e.be.readyErr = errors.New("stream CMX_OUT missing")
	e.be.mu.Unlock()
	r = e.do(t, http.MethodGet, "/readyz", "", "")
	wantProblem(t, r, 503, CodeNotReady)
	if strings.Contains(string(r.body), "CMX_OUT") || r.header.Get("Retry-After") != "1" {
		t.Fatalf("readyz answer %s %v", r.body, r.header)
	}
	if r := e.do(t, http.MethodGet, "/healthz", "", ""); r.status != 200 {
		t.Fatalf("healthz while not ready: %d", r.status)
	}
}

// TestRouting covers H-18: wrong paths and methods get problem+json 404/405
// and touch nothing.
func TestRouting(t *testing.T) {
	e := newEnv(t, envOption{opt: []Option{WithExtraHandler("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "cmx_up 1\n")
	}))}})
	tests := []struct {
		name, method, path string
		status             int
		code               string
		allow              string
	}{
		{name: "H-18_unknown_path", method: http.MethodGet, path: "/messages", status: 404, code: CodeNotFound},
		{name: "H-18_trailing_slash", method: http.MethodPost, path: "/v1/messages/", status: 404, code: CodeNotFound},
		{name: "H-18_unclean_path", method: http.MethodPost, path: "/v1//messages", status: 404, code: CodeNotFound},
		{name: "H-18_dot_segments", method: http.MethodGet, path: "/v1/x/../peers", status: 404, code: CodeNotFound},
		{name: "H-18_put", method: http.MethodPut, path: "/v1/messages", status: 405, code: CodeMethodNotAllowed, allow: "POST"},
		{name: "H-18_trace", method: http.MethodTrace, path: "/v1/messages", status: 405, code: CodeMethodNotAllowed, allow: "POST"},
		{name: "H-18_delete_message", method: http.MethodDelete, path: "/v1/messages/01890000-0000-7000-8000-000000000001", status: 405, code: CodeMethodNotAllowed, allow: "GET, HEAD"},
		{name: "H-18_get_ack", method: http.MethodGet, path: "/v1/inbox/01890000-0000-7000-8000-000000000001/ack", status: 405, code: CodeMethodNotAllowed, allow: "POST"},
		{name: "H-18_odd_method", method: "BREW", path: "/v1/peers", status: 405, code: CodeMethodNotAllowed, allow: "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, tt.method, tt.path, tokDOL, "")
			wantProblem(t, r, tt.status, tt.code)
			if got := r.header.Get("Allow"); got != tt.allow {
				t.Fatalf("Allow %q, want %q", got, tt.allow)
			}
			if len(e.be.submits()) != 0 {
				t.Fatal("side effect")
			}
		})
	}
	t.Run("extra_handler", func(t *testing.T) {
		r := e.do(t, http.MethodGet, "/metrics", "", "")
		if r.status != 200 || string(r.body) != "cmx_up 1\n" {
			t.Fatalf("metrics: %d %s", r.status, r.body)
		}
		wantCommonHeaders(t, r)
	})
}

func TestPanicRecovered(t *testing.T) {
	e := newEnv(t, envOption{})
	const id = "01890000-0000-7000-8000-0000000000ff"
	e.be.mu.Lock()
	e.be.panicID = id
	e.be.mu.Unlock()
	r := e.do(t, http.MethodGet, "/v1/messages/"+id, tokDOL, "")
	wantProblem(t, r, 500, CodeInternal)
	if strings.Contains(string(r.body), "boom") || !strings.Contains(e.logs.String(), "boom") {
		t.Fatalf("panic: answer %s; it must be logged, not shown", r.body)
	}
	if r := e.do(t, http.MethodGet, "/healthz", "", ""); r.status != 200 {
		t.Fatal("server did not survive the panic")
	}
}

// rawRoundTrip writes raw on a new connection and reads one response.
func rawRoundTrip(t *testing.T, addr, raw string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return readResponse(t, c)
}
