package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

// refCheckJSON is a slow reference implementation of checkJSON on
// encoding/json's tokenizer; the differential fuzz target compares them.
func refCheckJSON(data []byte, maxDepth int, top members) error {
	if !utf8.Valid(data) {
		return errJSONUTF8
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return errJSONSyntax
	}
	type frame struct {
		object, wantKey, top bool
		seen                 map[string]bool
	}
	stack := []frame{{object: true, wantKey: true, top: true, seen: map[string]bool{}}}
	for len(stack) > 0 {
		if tok, err = dec.Token(); err != nil {
			return errJSONSyntax
		}
		cur := &stack[len(stack)-1]
		if cur.object && cur.wantKey {
			if tok == json.Delim('}') {
				if cur.top && top != nil {
					for name, req := range top {
						if req && !cur.seen[name] {
							return errJSONMissing
						}
					}
				}
				stack = stack[:len(stack)-1]
				continue
			}
			key := tok.(string)
			if _, ok := top[key]; cur.top && top != nil && !ok {
				return errJSONUnknown
			}
			if cur.seen[key] {
				return errJSONDuplicate
			}
			cur.seen[key], cur.wantKey = true, false
			continue
		}
		cur.wantKey = true
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) >= maxDepth {
				return errJSONDepth
			}
			stack = append(stack, frame{object: tok == json.Delim('{'), wantKey: true, seen: map[string]bool{}})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return errJSONSyntax
	}
	return nil
}

var strictCases = []struct {
	name string
	in   string
	want error
}{
	{"empty_object", `{}`, nil},
	{"spaces", " \t\r\n{ \"a\" : [ 1 , -0.5e+3 , true , false , null , \"x\\u00e9\\n\" ] } \n", nil},
	{"nested_ok", `{"a":{"b":{"a":1}},"b":[{"a":1},{"a":2}]}`, nil},
	{"same_name_in_siblings", `{"x":{"a":1},"y":{"a":1}}`, nil},
	{"duplicate", `{"a":1,"a":2}`, errJSONDuplicate},
	{"duplicate_escaped", `{"a":1,"\u0061":2}`, errJSONDuplicate},
	{"duplicate_nested", `{"x":[{"k":1,"k":1}]}`, errJSONDuplicate},
	{"duplicate_in_big_object", `{` + manyMembers(40) + `,"m7":0}`, errJSONDuplicate},
	{"big_object", `{` + manyMembers(40) + `}`, nil},
	{"case_variants_distinct", `{"a":1,"A":2}`, nil},
	{"array_top", `[1]`, errJSONSyntax},
	{"string_top", `"a"`, errJSONSyntax},
	{"trailing", `{} {}`, errJSONSyntax},
	{"trailing_comma", `{"a":1,}`, errJSONSyntax},
	{"leading_zero", `{"a":01}`, errJSONSyntax},
	{"bare_minus", `{"a":-}`, errJSONSyntax},
	{"dot_no_digits", `{"a":1.}`, errJSONSyntax},
	{"exp_no_digits", `{"a":1e}`, errJSONSyntax},
	{"control_char", "{\"a\":\"\x01\"}", errJSONSyntax},
	{"bad_escape", `{"a":"\x"}`, errJSONSyntax},
	{"short_unicode", `{"a":"\u12"}`, errJSONSyntax},
	{"unterminated", `{"a":"b`, errJSONSyntax},
	{"bad_literal", `{"a":tru}`, errJSONSyntax},
	{"single_quotes", `{'a':1}`, errJSONSyntax},
	{"not_utf8", "{\"a\":\"\xff\"}", errJSONUTF8},
	{"depth_3_ok", `{"a":[{}]}`, nil},
	{"depth_4", `{"a":[{"b":[]}]}`, errJSONDepth},
	{"empty", ``, errJSONSyntax},
}

// manyMembers returns n members "m0":0 ... "m<n-1>":0, past the small set.
func manyMembers(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`"m%d":0`, i)
	}
	return strings.Join(parts, ",")
}

func TestCheckJSON(t *testing.T) {
	for _, tt := range strictCases {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkJSON([]byte(tt.in), 3, nil); !errors.Is(err, tt.want) {
				t.Errorf("checkJSON = %v, want %v", err, tt.want)
			}
			if (refCheckJSON([]byte(tt.in), 3, nil) == nil) != (tt.want == nil) {
				t.Errorf("reference disagrees")
			}
		})
	}
	top := members{"a": true, "b": false}
	for in, want := range map[string]error{
		`{"a":1}`:             nil,
		`{"a":1,"b":2}`:       nil,
		`{"b":2}`:             errJSONMissing,
		`{"a":1,"c":2}`:       errJSONUnknown,
		`{"A":1}`:             errJSONUnknown,
		`{"a":1,"x":{"c":1}}`: errJSONUnknown,
		`{"a":{"c":1}}`:       nil, // only the top level is restricted
	} {
		if err := checkJSON([]byte(in), 3, top); !errors.Is(err, want) {
			t.Errorf("checkJSON(%s, top) = %v, want %v", in, err, want)
		}
	}
}

func TestScanJSONVisit(t *testing.T) {
	in := []byte(`{ "a" : "x" , "\u0062" : {"c": [1, 2]} }`)
	got := map[string]string{}
	err := scanJSON(in, 3, nil, func(name string, v []byte) error { got[name] = string(v); return nil })
	if err != nil || got["a"] != `"x"` || got["b"] != `{"c": [1, 2]}` || len(got) != 2 {
		t.Errorf("visit saw %v, %v", got, err)
	}
}
