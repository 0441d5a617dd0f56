package ingress

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestDecodeSubmit(t *testing.T) {
	deep := `{"type":"x","to":"JP","body":` + strings.Repeat(`{"a":`, 10000) + `1` + strings.Repeat(`}`, 10000) + `}`
	deepArr := `{"type":"x","to":"JP","body":{"a":` + strings.Repeat(`[`, 10000) + strings.Repeat(`]`, 10000) + `}}`
	at64 := `{"type":"x","to":"JP","body":` + strings.Repeat(`{"a":`, 63) + `1` + strings.Repeat(`}`, 63) + `}`
	at65 := `{"type":"x","to":"JP","body":` + strings.Repeat(`{"a":`, 64) + `1` + strings.Repeat(`}`, 64) + `}`
	tests := []struct {
		name      string
		in        string
		wantCode  string // "" = accepted
		wantField string
	}{
		{name: "valid", in: validBody},
		{name: "valid_all_fields", in: `{"type":"t","to":"JP","recipient":"JP:MHLW","correlation_id":"c-1","marking":"TLP:AMBER","body":{"x":[1,{"y":null}]}}`},
		{name: "H-12_duplicate_top_level_key", in: `{"type":"a","type":"b","to":"JP","body":{}}`, wantCode: CodeDuplicateKey, wantField: "type"},
		{name: "H-12_duplicate_key_escaped", in: `{"type":"a","t\u0079pe":"b","to":"JP","body":{}}`, wantCode: CodeDuplicateKey, wantField: "type"},
		{name: "H-12_duplicate_key_in_body", in: `{"type":"a","to":"JP","body":{"x":{"k":1,"k":2}}}`, wantCode: CodeDuplicateKey, wantField: "body/x/k"},
		{name: "H-12_duplicate_key_in_array", in: `{"type":"a","to":"JP","body":{"x":[{},{"k":1,"k":2}]}}`, wantCode: CodeDuplicateKey, wantField: "body/x/1/k"},
		{name: "H-12_same_key_in_sibling_objects_ok", in: `{"type":"a","to":"JP","body":{"x":[{"k":1},{"k":2}]}}`},
		{name: "H-12_unknown_field", in: `{"type":"a","to":"JP","body":{},"extra":1}`, wantCode: CodeUnknownField, wantField: "extra"},
		{name: "H-12_field_case_folded", in: `{"TYPE":"a","to":"JP","body":{}}`, wantCode: CodeUnknownField, wantField: "TYPE"},
		{name: "H-08_sender_in_body", in: `{"type":"a","to":"JP","sender":"US:USTR","body":{}}`, wantCode: CodeUnknownField, wantField: "sender"},
		{name: "H-12_unknown_field_control_chars_quoted", in: `{"a\r\nb":1}`, wantCode: CodeUnknownField, wantField: `a\r\nb`},
		{name: "H-12_nesting_10000", in: deep, wantCode: CodeTooDeep},
		{name: "H-12_nesting_10000_arrays", in: deepArr, wantCode: CodeTooDeep},
		{name: "H-12_nesting_64_ok", in: at64},
		{name: "H-12_nesting_65", in: at65, wantCode: CodeTooDeep},
		{name: "H-12_invalid_utf8", in: "{\"type\":\"a\xff\",\"to\":\"JP\",\"body\":{}}", wantCode: CodeInvalidUTF8},
		{name: "H-12_overlong_utf8", in: "{\"type\":\"\xc0\xaf\",\"to\":\"JP\",\"body\":{}}", wantCode: CodeInvalidUTF8},
		{name: "H-12_raw_NUL", in: "{\"type\":\"a\x00\",\"to\":\"JP\",\"body\":{}}", wantCode: CodeMalformedJSON},
		{name: "H-12_escaped_NUL_value", in: `{"type":"a","to":"JP","body":{"x":"a\u0000b"}}`, wantCode: CodeMalformedJSON, wantField: "body/x"},
		{name: "H-12_escaped_NUL_key", in: `{"type":"a","to":"JP","body":{"\u0000":1}}`, wantCode: CodeMalformedJSON},
		{name: "H-12_trailing_data", in: validBody + `{}`, wantCode: CodeTrailingData},
		{name: "H-12_trailing_garbage", in: validBody + `x`, wantCode: CodeTrailingData},
		{name: "trailing_whitespace_ok", in: validBody + " \n"},
		{name: "H-12_truncated", in: `{"type":"a","to":"JP","body":{`, wantCode: CodeMalformedJSON},
		{name: "H-12_syntax", in: `{"type":"a",}`, wantCode: CodeMalformedJSON},
		{name: "empty", in: ``, wantCode: CodeMalformedJSON},
		{name: "top_level_array", in: `[]`, wantCode: CodeMalformedJSON},
		{name: "top_level_string", in: `"x"`, wantCode: CodeMalformedJSON},
		{name: "body_not_object", in: `{"type":"a","to":"JP","body":[1]}`, wantCode: CodeInvalidField, wantField: "body"},
		{name: "body_null", in: `{"type":"a","to":"JP","body":null}`, wantCode: CodeInvalidField, wantField: "body"},
		{name: "body_missing", in: `{"type":"a","to":"JP"}`, wantCode: CodeInvalidField, wantField: "body"},
		{name: "wrong_type", in: `{"type":1,"to":"JP","body":{}}`, wantCode: CodeInvalidField, wantField: "type"},
		{name: "huge_number_ok", in: `{"type":"a","to":"JP","body":{"n":1e999999}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := DecodeSubmit([]byte(tt.in))
			if tt.wantCode == "" {
				if err != nil {
					t.Fatalf("DecodeSubmit: %v", err)
				}
				if req.Body[0] != '{' {
					t.Fatalf("body %q", req.Body)
				}
				return
			}
			var p *problemErr
			if !errors.As(err, &p) {
				t.Fatalf("error %v, want a problem %s", err, tt.wantCode)
			}
			if p.status != http.StatusBadRequest || p.code != tt.wantCode || p.field != tt.wantField {
				t.Fatalf("got %d %s field %q, want 400 %s field %q", p.status, p.code, p.field, tt.wantCode, tt.wantField)
			}
			if strings.ContainsAny(p.detail+p.field, "\r\n\x00") {
				t.Fatalf("problem echoes control characters: %q %q", p.detail, p.field)
			}
		})
	}
}

func FuzzDecodeSubmit(f *testing.F) {
	for _, s := range []string{
		validBody,
		`{"type":"a","type":"b","to":"JP","body":{}}`,
		`{"type":"a","to":"JP","body":{"x":[{"k":1,"k":2}]}}`,
		`{"type":"a","to":"JP","sender":"US:USTR","body":{}}`,
		strings.Repeat(`{"a":`, 100),
		strings.Repeat(`[`, 100),
		"{\"type\":\"a\xff\"}",
		`{"type":"a","to":"JP","body":{"x":"\u0000"}}`,
		validBody + `{}`,
		`{"type":"a","to":"JP","body":{"n":-0.0e-0}}`,
		`{"type":"\ud800","to":"JP","body":{}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := DecodeSubmit(raw)
		if err != nil {
			var p *problemErr
			if !errors.As(err, &p) || p.status != http.StatusBadRequest {
				t.Fatalf("error %v is not a 400 problem", err)
			}
			if strings.ContainsAny(p.detail+p.field, "\r\n\x00") {
				t.Fatalf("problem echoes control characters: %q %q", p.detail, p.field)
			}
			return
		}
		// Accepted: one object whose body is an object; re-encoding and
		// decoding again gives the same request.
		if len(req.Body) == 0 || req.Body[0] != '{' {
			t.Fatalf("accepted body %q", req.Body)
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		req2, err := DecodeSubmit(again)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", again, err)
		}
		if req2.Type != req.Type || req2.To != req.To || req2.Recipient != req.Recipient ||
			req2.CorrelationID != req.CorrelationID || req2.Marking != req.Marking {
			t.Fatalf("round trip changed the request: %+v vs %+v", req, req2)
		}
	})
}
