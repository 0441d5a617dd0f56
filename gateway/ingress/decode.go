package ingress

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cmx-exchange/cmx/gateway/api"
)

// MaxJSONDepth is the deepest nesting of objects and arrays a request may have.
const MaxJSONDepth = 64

// submitFields are the members of a submit request, matched exactly
// (encoding/json alone would match "TYPE" to "type").
var submitFields = map[string]bool{
	"type": true, "to": true, "recipient": true, "correlation_id": true, "marking": true, "body": true,
}

// DecodeSubmit strictly decodes a submit request: valid UTF-8, one JSON
// object, no duplicate member names at any level, no member outside
// api.SubmitRequest (exact case), nesting at most MaxJSONDepth, no NUL in any
// string, nothing after the value, and "body" an object. It checks form only;
// handlers check meaning (known type, peer, permissions). Errors are
// *problemErr with status 400 and never echo client input unescaped.
func DecodeSubmit(raw []byte) (*api.SubmitRequest, error) {
	if !utf8.Valid(raw) {
		return nil, problem(http.StatusBadRequest, CodeInvalidUTF8, "the request body is not valid UTF-8")
	}
	if err := scanStrict(raw); err != nil {
		return nil, err
	}
	var req api.SubmitRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, decodeProblem(err)
	}
	if len(req.Body) == 0 || req.Body[0] != '{' { // null, absent or not an object
		return nil, problem(http.StatusBadRequest, CodeInvalidField, "body must be a JSON object").withField("body")
	}
	return &req, nil
}

// frame is one open object or array during scanStrict.
type frame struct {
	names   map[string]bool // member names seen; nil for an array
	wantKey bool            // object: the next token is a member name
	key     string          // object: the current member name
	index   int             // array: index of the next element
}

// scanStrict walks the tokens of raw once, bounded by MaxJSONDepth, before
// anything is allocated for the decoded value.
func scanStrict(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var stack []*frame
	for {
		tok, err := dec.Token()
		switch {
		case errors.Is(err, io.EOF) && len(stack) == 0:
			return problem(http.StatusBadRequest, CodeMalformedJSON, "empty request body")
		case errors.Is(err, io.EOF):
			return problem(http.StatusBadRequest, CodeMalformedJSON, "unexpected end of JSON")
		case err != nil:
			return decodeProblem(err)
		}
		if err := scanToken(tok, &stack); err != nil {
			return err
		}
		if len(stack) == 0 {
			return expectEOF(dec)
		}
	}
}

func scanToken(tok json.Token, stack *[]*frame) error {
	var top *frame
	if n := len(*stack); n > 0 {
		top = (*stack)[n-1]
	}
	if top == nil {
		if tok != json.Delim('{') {
			return problem(http.StatusBadRequest, CodeMalformedJSON, "the request must be a JSON object")
		}
	} else if s, ok := tok.(string); ok && top.wantKey {
		return scanKey(s, *stack)
	}
	if s, ok := tok.(string); ok && strings.IndexByte(s, 0) >= 0 {
		return problem(http.StatusBadRequest, CodeMalformedJSON, "NUL character in a JSON string").withField(pointer(*stack))
	}
	switch tok {
	case json.Delim('{'), json.Delim('['):
		if len(*stack) >= MaxJSONDepth {
			return problem(http.StatusBadRequest, CodeTooDeep, "JSON nesting deeper than "+strconv.Itoa(MaxJSONDepth))
		}
		f := &frame{}
		if tok == json.Delim('{') {
			f.names, f.wantKey = map[string]bool{}, true
		}
		*stack = append(*stack, f)
		return nil
	case json.Delim('}'), json.Delim(']'):
		*stack = (*stack)[:len(*stack)-1]
		if n := len(*stack); n > 0 {
			top = (*stack)[n-1]
		} else {
			return nil
		}
	}
	// A value ended inside top.
	if top.names != nil {
		top.wantKey = true
	} else {
		top.index++
	}
	return nil
}

func scanKey(name string, stack []*frame) error {
	top := stack[len(stack)-1]
	top.key, top.wantKey = name, false
	switch {
	case strings.IndexByte(name, 0) >= 0:
		return problem(http.StatusBadRequest, CodeMalformedJSON, "NUL character in a member name")
	case top.names[name]:
		return problem(http.StatusBadRequest, CodeDuplicateKey, "duplicate member name").withField(pointer(stack))
	case len(stack) == 1 && !submitFields[name]:
		return problem(http.StatusBadRequest, CodeUnknownField, "unknown member").withField(pointer(stack))
	}
	top.names[name] = true
	return nil
}

func expectEOF(dec *json.Decoder) error {
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return problem(http.StatusBadRequest, CodeTrailingData, "data after the JSON object")
	}
	return nil
}

// pointer names the current position for the problem "field": the top-level
// member name ("sender"), then RFC 6901 segments below it ("body/items/0").
// It is client input, so it is quoted to printable ASCII and truncated.
func pointer(stack []*frame) string {
	var b strings.Builder
	for i, f := range stack {
		if i > 0 {
			b.WriteByte('/')
		}
		if f.names != nil {
			b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(f.key))
		} else {
			b.WriteString(strconv.Itoa(f.index))
		}
	}
	q := strconv.QuoteToASCII(b.String())
	q = q[1 : len(q)-1]
	if len(q) > 128 {
		q = q[:128]
	}
	return q
}

// decodeProblem turns an encoding/json error into a 400 without echoing input.
func decodeProblem(err error) *problemErr {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return &problemErr{status: http.StatusBadRequest, code: CodeMalformedJSON,
			detail: "JSON syntax error at byte offset " + strconv.FormatInt(syn.Offset, 10), err: err}
	case errors.As(err, &typ):
		p := &problemErr{status: http.StatusBadRequest, code: CodeInvalidField, detail: "wrong JSON type", err: err}
		if submitFields[typ.Field] {
			p.field = typ.Field
		}
		return p
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &problemErr{status: http.StatusBadRequest, code: CodeMalformedJSON, detail: "unexpected end of JSON", err: err}
	}
	// DisallowUnknownFields and the remaining cases: the message would quote
	// client input, so it is logged only.
	return &problemErr{status: http.StatusBadRequest, code: CodeMalformedJSON, detail: "the JSON could not be decoded", err: err}
}
