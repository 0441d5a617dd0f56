package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestExample(t *testing.T) {
	for _, typ := range Types {
		t.Run(string(typ), func(t *testing.T) {
			ex := Example(typ)
			if len(ex) == 0 {
				t.Fatal("no example")
			}
			if err := ValidateBody(typ, ex); err != nil {
				t.Fatalf("example does not validate: %v", err)
			}
			ex[0] = 'x' // a caller's copy: the next call must not see it
			if Example(typ)[0] != '{' {
				t.Fatal("Example returned shared bytes")
			}
		})
	}
	if Example("no_such_type") != nil {
		t.Error("Example of an unknown type is not nil")
	}
}

// TestValidateBodyTestdata validates the further valid bodies in
// testdata/examples/valid, named <type>-<what>.json: they exercise optional
// members and conditional rules the examples leave out.
func TestValidateBodyTestdata(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "examples", "valid", "*.json"))
	if err != nil || len(files) < len(Types) {
		t.Fatalf("glob: %v, %d files", err, len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			body, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			typ := Type(strings.SplitN(filepath.Base(f), "-", 2)[0])
			if err := ValidateBody(typ, body); err != nil {
				t.Fatalf("ValidateBody: %v", err)
			}
		})
	}
}

func TestSchemaJSON(t *testing.T) {
	for _, typ := range Types {
		t.Run(string(typ), func(t *testing.T) {
			var doc map[string]any
			if err := json.Unmarshal(SchemaJSON(typ), &doc); err != nil {
				t.Fatal(err)
			}
			if got, want := doc["$id"], "https://cmx.invalid/schemas/"+typ.Schema()+".json"; got != want {
				t.Errorf("$id = %v, want %s", got, want)
			}
			if got := doc["$schema"]; got != "https://json-schema.org/draft/2020-12/schema" {
				t.Errorf("$schema = %v", got)
			}
			if !strings.Contains(doc["title"].(string), typ.Schema()) {
				t.Errorf("title %q does not name %s", doc["title"], typ.Schema())
			}
		})
	}
	if SchemaJSON("no_such_type") != nil {
		t.Error("SchemaJSON of an unknown type is not nil")
	}
	if _, err := compiledSchemas(); err != nil {
		t.Fatalf("schemas do not compile: %v", err)
	}
}

// edit returns the example of typ decoded, changed by f, and encoded again.
func edit(t *testing.T, typ Type, f func(body map[string]any)) []byte {
	t.Helper()
	var body map[string]any
	dec := json.NewDecoder(bytes.NewReader(Example(typ)))
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil {
		t.Fatal(err)
	}
	f(body)
	out, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func obj(v any, key string) map[string]any { return v.(map[string]any)[key].(map[string]any) }
func arr(v any, key string) []any          { return v.(map[string]any)[key].([]any) }

// repeatItems returns n distinct strings made by format.
func repeatItems(n int, format func(i int) string) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = format(i)
	}
	return out
}

func TestValidateBody(t *testing.T) {
	const (
		nmpr = NonMarketPracticeReport
		len_ = LaborEnforcementNotice
		irbp = InvestmentReviewBestPractice
	)
	deep := func(n int) []byte {
		return []byte(`{"title":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`)
	}
	tests := []struct {
		name       string
		typ        Type
		body       func(t *testing.T) []byte
		wantField  string
		wantReason string // substring
	}{
		{"valid_example", nmpr, func(*testing.T) []byte { return Example(nmpr) }, "", ""},
		{"valid_trailing_whitespace", irbp, func(*testing.T) []byte { return append(Example(irbp), " \r\n\t"...) }, "", ""},
		{"valid_20000_multibyte_characters", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) { b["description"] = strings.Repeat("界", 20000) })
		}, "", ""},
		{"valid_lone_surrogate_escape_becomes_U+FFFD", nmpr, func(t *testing.T) []byte {
			return bytes.Replace(Example(nmpr), []byte(`"title": "`), []byte(`"title": "\ud800 `), 1)
		}, "", ""},

		// catalogue H-12: unknown fields, at any level; names match case-sensitively.
		{"H-12_unknown_field_top", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) { b["classification"] = "secret" })
		}, "/classification", "unknown field"},
		{"H-12_unknown_field_nested", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) { obj(b, "third_economy")["nmae"] = "x" })
		}, "/third_economy/nmae", "unknown field"},
		{"H-12_unknown_field_in_array_item", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) {
				arr(b, "evidence_references")[1].(map[string]any)["url"] = "https://example.org/"
			})
		}, "/evidence_references/1/url", "unknown field"},
		{"H-12_unknown_field_case_variant", irbp, func(t *testing.T) []byte {
			return edit(t, irbp, func(b map[string]any) { b["Title"] = b["title"] })
		}, "/Title", "unknown field"},
		{"H-12_unknown_field_name_escaped_in_pointer", len_, func(t *testing.T) []byte {
			return edit(t, len_, func(b map[string]any) { obj(b, "entity")["a/b~c"] = true })
		}, "/entity/a~1b~0c", "unknown field"},

		// Bounds.
		{"oversized_string", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) { b["title"] = strings.Repeat("x", 201) })
		}, "/title", "longer than 200 characters (got 201)"},
		{"oversized_string_counts_characters", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) { b["description"] = strings.Repeat("界", 20001) })
		}, "/description", "longer than 20000 characters"},
		{"too_many_items", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) {
				arr(b, "minerals")[0].(map[string]any)["hs_codes"] = repeatItems(21, func(i int) string { return "2504." + string(rune('1'+i/10)) + string(rune('0'+i%10)) })
			})
		}, "/minerals/0/hs_codes", "more than 20 items (got 21)"},
		{"empty_array", len_, func(t *testing.T) []byte {
			return edit(t, len_, func(b map[string]any) { b["violation_categories"] = []any{} })
		}, "/violation_categories", "must not be empty"},
		{"empty_string", irbp, func(t *testing.T) []byte {
			return edit(t, irbp, func(b map[string]any) { b["authority"] = "" })
		}, "/authority", "must not be empty"},
		{"duplicate_items", len_, func(t *testing.T) []byte {
			return edit(t, len_, func(b map[string]any) { b["minerals"] = []any{"cobalt", "copper", "cobalt"} })
		}, "/minerals", "items 0 and 2 are equal"},

		// Enums, patterns, formats, types.
		{"wrong_enum", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) { b["practice_category"] = "dumping" })
		}, "/practice_category", "must be one of export_restriction, subsidy,"},
		{"wrong_enum_in_array", len_, func(t *testing.T) []byte {
			return edit(t, len_, func(b map[string]any) { b["minerals"] = []any{"cobalt", "unobtainium"} })
		}, "/minerals/1", "must be one of lithium,"},
		{"country_UK_is_not_assigned", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) { obj(b, "third_economy")["code"] = "UK" })
		}, "/third_economy/code", "not one of the 249 allowed values"},
		{"country_lowercase", len_, func(t *testing.T) []byte {
			return edit(t, len_, func(b map[string]any) { obj(b, "entity")["country"] = "cd" })
		}, "/entity/country", "not one of the 249 allowed values"},
		{"bad_hs_code", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) { arr(b, "minerals")[0].(map[string]any)["hs_codes"] = []any{"2504.10", "25041"} })
		}, "/minerals/0/hs_codes/1", `does not match pattern ^[0-9]{4}(\.?[0-9]{2}){0,2}$`},
		{"bad_hs_code_letter_O", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) { arr(b, "minerals")[0].(map[string]any)["hs_codes"] = []any{"2504.1O"} })
		}, "/minerals/0/hs_codes/0", "does not match pattern"},
		{"bad_date_layout", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) { obj(b, "observed_period")["from"] = "2023/12/01" })
		}, "/observed_period/from", "is not a valid date"},
		{"bad_date_day_out_of_range", len_, func(t *testing.T) []byte {
			return edit(t, len_, func(b map[string]any) { b["effective_date"] = "2023-02-29" })
		}, "/effective_date", "is not a valid date"},
		{"bad_uri_scheme", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) {
				arr(b, "evidence_references")[1].(map[string]any)["uri"] = "javascript:alert(1)"
			})
		}, "/evidence_references/1/uri", "does not match pattern"},
		{"bad_uri_relative", irbp, func(t *testing.T) []byte {
			return edit(t, irbp, func(b map[string]any) { arr(b, "references")[1].(map[string]any)["uri"] = "/part-800" })
		}, "/references/1/uri", "is not a valid uri"},
		{"bad_version", irbp, func(t *testing.T) []byte {
			return edit(t, irbp, func(b map[string]any) { b["version"] = "v1" })
		}, "/version", "does not match pattern"},
		{"bad_lei_checksum_shape", len_, func(t *testing.T) []byte {
			return edit(t, len_, func(b map[string]any) {
				obj(b, "entity")["identifiers"] = []any{map[string]any{"scheme": "lei", "value": "NOT-AN-LEI"}}
			})
		}, "/entity/identifiers/0/value", "does not match pattern ^[A-Z0-9]{18}[0-9]{2}$"},
		{"wrong_type", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) { b["minerals"] = "graphite" })
		}, "/minerals", "got string, want array"},
		{"number_for_string", irbp, func(t *testing.T) []byte {
			return edit(t, irbp, func(b map[string]any) { b["version"] = json.Number("1.0") })
		}, "/version", "got number, want string"},

		// Required members, plain and conditional.
		{"missing_required_top", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) { delete(b, "title") })
		}, "/title", "missing required field"},
		{"missing_required_nested", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) { delete(obj(b, "third_economy"), "code") })
		}, "/third_economy/code", "missing required field"},
		{"other_mineral_without_name", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) { b["minerals"] = []any{map[string]any{"mineral": "other"}} })
		}, "/minerals/0/name", "missing required field"},
		{"remedy_agreed_without_remedy", len_, func(t *testing.T) []byte {
			return edit(t, len_, func(b map[string]any) { b["action"] = "remedy_agreed" })
		}, "/remedy", "missing required field"},
		{"empty_object", irbp, func(*testing.T) []byte { return []byte(`{}`) }, "/authority", "missing required field"},

		// Catalogue H-12: NUL bytes, control and bidirectional characters.
		{"H-12_NUL_in_single_line", nmpr, func(t *testing.T) []byte {
			return edit(t, nmpr, func(b map[string]any) { b["title"] = "Export\x00licensing" })
		}, "/title", "contains a control, line-separator or bidirectional-formatting character"},
		{"H-12_NUL_in_multi_line", len_, func(t *testing.T) []byte {
			return edit(t, len_, func(b map[string]any) { b["summary"] = "line one\nline\x00two" })
		}, "/summary", "contains a control"},
		{"newline_in_single_line", irbp, func(t *testing.T) []byte {
			return edit(t, irbp, func(b map[string]any) { b["authority"] = "CFIUS\nX-Injected: 1" })
		}, "/authority", "contains a control"},
		{"bidi_override_in_name", len_, func(t *testing.T) []byte {
			return edit(t, len_, func(b map[string]any) { obj(b, "entity")["name"] = "Example \u202eoC gninifeR" })
		}, "/entity/name", "contains a control"},
		{"NUL_in_identifier", len_, func(t *testing.T) []byte {
			return edit(t, len_, func(b map[string]any) { b["case_reference"] = "CMX-1\x00" })
		}, "/case_reference", "does not match pattern"},

		// Catalogue H-12: not one object, trailing data, malformed JSON.
		{"H-12_body_array", nmpr, func(*testing.T) []byte { return []byte(`[{}]`) }, "", "body must be a JSON object"},
		{"H-12_body_string", nmpr, func(*testing.T) []byte { return []byte(`"{}"`) }, "", "body must be a JSON object"},
		{"H-12_body_null", len_, func(*testing.T) []byte { return []byte(`null`) }, "", "body must be a JSON object"},
		{"H-12_body_empty", len_, func(*testing.T) []byte { return nil }, "", "empty body"},
		{"H-12_body_whitespace", len_, func(*testing.T) []byte { return []byte(" \n") }, "", "empty body"},
		{"H-12_trailing_object", irbp, func(*testing.T) []byte { return append(Example(irbp), "{}"...) }, "", "data after the JSON object"},
		{"H-12_trailing_garbage", irbp, func(*testing.T) []byte { return append(Example(irbp), "x"...) }, "", "data after the JSON object"},
		{"H-12_malformed_value", irbp, func(*testing.T) []byte { return []byte(`{"title": }`) }, "/title", "malformed JSON: invalid character '}'"},
		{"H-12_malformed_truncated", nmpr, func(*testing.T) []byte {
			ex := Example(nmpr)
			return ex[:bytes.Index(ex, []byte("Export licensing"))]
		}, "/title", "malformed JSON: unexpected end of input"},
		{"H-12_raw_NUL_in_string", irbp, func(*testing.T) []byte { return []byte("{\"title\":\"a\x00b\"}") }, "/title", "malformed JSON: invalid character '\\x00' in string literal"},
		{"H-12_malformed_trailing_comma", nmpr, func(*testing.T) []byte { return []byte(`{"title":"x",}`) }, "", "malformed JSON"},

		// Catalogue H-12: invalid UTF-8 (raw bytes, overlong encodings, encoded surrogates).
		{"H-12_invalid_UTF-8", nmpr, func(*testing.T) []byte { return []byte("{\"title\":\"a\xffb\"}") }, "", "invalid UTF-8 at byte offset 11"},
		{"H-12_overlong_UTF-8_slash", nmpr, func(*testing.T) []byte { return []byte("{\"title\":\"\xc0\xaf\"}") }, "", "invalid UTF-8 at byte offset 10"},
		{"H-12_UTF-8_encoded_surrogate", nmpr, func(*testing.T) []byte { return []byte("{\"title\":\"\xed\xa0\x80\"}") }, "", "invalid UTF-8 at byte offset 10"},

		// Catalogue H-12: nesting 10 000 deep is refused at maxBodyDepth, wherever it sits.
		{"H-12_nesting_10000_deep", nmpr, func(*testing.T) []byte { return deep(10000) }, "/title" + strings.Repeat("/0", maxBodyDepth-1), "nested deeper than 16 levels"},
		{"H-12_nesting_objects_deep", nmpr, func(*testing.T) []byte {
			return []byte(strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000))
		}, strings.Repeat("/a", maxBodyDepth), "nested deeper than 16 levels"},

		// Bounded work: arrays and objects larger than any schema allows stop the decoder.
		{"array_of_a_million_items", nmpr, func(*testing.T) []byte {
			return []byte(`{"minerals":[` + strings.Repeat("1,", 1_000_000) + `1]}`)
		}, "/minerals", "more than 64 items"},
		{"object_of_a_million_members", len_, func(*testing.T) []byte {
			var b strings.Builder
			b.WriteString(`{"entity":{`)
			for i := range 1_000_000 {
				fmt.Fprintf(&b, `"m%d":1,`, i)
			}
			b.WriteString(`"z":1}}`)
			return []byte(b.String())
		}, "/entity", "more than 64 members"},

		{"too_many_values_under_an_unknown_member", irbp, func(*testing.T) []byte { return manyValues(10) }, "/x/63/61", "more than 4096 values in the body"},

		// Catalogue H-12 (and J-10 for bodies): duplicate member names, also through escapes.
		{"H-12_duplicate_key_top", irbp, func(*testing.T) []byte {
			return bytes.Replace(Example(irbp), []byte(`"topic": `), []byte(`"topic": "mitigation", "topic": `), 1)
		}, "/topic", "duplicate member name"},
		{"H-12_duplicate_key_nested", nmpr, func(*testing.T) []byte {
			return bytes.Replace(Example(nmpr), []byte(`"code": "CN"`), []byte(`"code": "CN", "code": "JP"`), 1)
		}, "/third_economy/code", "duplicate member name"},
		{"H-12_duplicate_key_escaped", nmpr, func(*testing.T) []byte {
			return bytes.Replace(Example(nmpr), []byte(`"code": "CN"`), []byte(`"code": "CN", "co\u0064e": "JP"`), 1)
		}, "/third_economy/code", "duplicate member name"},

		// A body of one type is not a body of another; the deepest failure is reported.
		{"wrong_type_of_body", len_, func(*testing.T) []byte { return Example(nmpr) }, "/minerals/0", "got object, want string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateBody(tt.typ, tt.body(t))
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("ValidateBody: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrSchema) {
				t.Fatalf("ValidateBody = %v, want ErrSchema", err)
			}
			var se *SchemaError
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not a *SchemaError", err)
			}
			if se.Type != tt.typ || se.Field != tt.wantField || !strings.Contains(se.Reason, tt.wantReason) {
				t.Errorf("got %s %q %q\nwant %s %q %q", se.Type, se.Field, se.Reason, tt.typ, tt.wantField, tt.wantReason)
			}
		})
	}
}

func TestValidateBodyUnknownType(t *testing.T) {
	err := ValidateBody("not_a_type", Example(NonMarketPracticeReport))
	if !errors.Is(err, ErrUnknownType) || errors.Is(err, ErrSchema) {
		t.Fatalf("ValidateBody = %v, want ErrUnknownType only", err)
	}
}

func TestSchemaErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  *SchemaError
		want string
	}{
		{"field", &SchemaError{Type: NonMarketPracticeReport, Field: "/minerals/0/hs_codes/1", Reason: "does not match pattern ^[0-9]{4}(\\.?[0-9]{2}){0,2}$"},
			`envelope: body of non_market_practice_report invalid at /minerals/0/hs_codes/1: does not match pattern ^[0-9]{4}(\.?[0-9]{2}){0,2}$`},
		{"root", &SchemaError{Type: LaborEnforcementNotice, Reason: "body must be a JSON object"},
			"envelope: body of labor_enforcement_notice invalid: body must be a JSON object"},
		{"hostile_field_is_quoted", &SchemaError{Type: LaborEnforcementNotice, Field: "/x\nlevel=ERROR", Reason: "unknown field"},
			`envelope: body of labor_enforcement_notice invalid at "/x\nlevel=ERROR": unknown field`},
		{"long_field_is_clipped", &SchemaError{Type: LaborEnforcementNotice, Field: "/" + strings.Repeat("é", 300), Reason: "unknown field"},
			"envelope: body of labor_enforcement_notice invalid at /" + strings.Repeat("é", 99) + "…: unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// TestValidateBodyDeterministic: with many failures the library reports them
// in map order; ValidateBody must still pick the same one every time.
func TestValidateBodyDeterministic(t *testing.T) {
	body := edit(t, NonMarketPracticeReport, func(b map[string]any) {
		b["zzz"], b["aaa"], b["title"] = 1, 2, strings.Repeat("x", 500)
		obj(b, "third_economy")["code"] = "XX"
		obj(b, "observed_period")["to"] = "never"
		arr(b, "minerals")[0].(map[string]any)["hs_codes"] = []any{"1", "2", "3"}
	})
	first := ValidateBody(NonMarketPracticeReport, body)
	if first == nil || first.(*SchemaError).Field != "/minerals/0/hs_codes/0" {
		t.Fatalf("first error = %v", first)
	}
	for range 50 {
		if err := ValidateBody(NonMarketPracticeReport, body); err.Error() != first.Error() {
			t.Fatalf("got %v, then %v", first, err)
		}
	}
}

func TestValidateBodyConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 8*len(Types))
	for range 8 {
		wg.Go(func() {
			for _, typ := range Types {
				errs <- ValidateBody(typ, Example(typ))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func FuzzValidateBody(f *testing.F) {
	for _, typ := range Types {
		f.Add(string(typ), []byte(Example(typ)))
	}
	for _, seed := range []string{
		``, `{}`, `[]`, `null`, `{"title":"a","title":"b"}`, "{\"title\":\"\xff\"}",
		`{"title":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
		`{"third_economy":{"code":"CN","code":"JP"}}`, `{"a/b~c":1}`, `{"x":1} {}`,
		`{"minerals":[{"mineral":"other","hs_codes":["2504.10","2504.10"]}]}`,
	} {
		f.Add(string(NonMarketPracticeReport), []byte(seed))
	}
	f.Fuzz(func(t *testing.T, typ string, body []byte) {
		err := ValidateBody(Type(typ), body)
		if !Type(typ).Valid() {
			if !errors.Is(err, ErrUnknownType) {
				t.Fatalf("unknown type %q: %v", typ, err)
			}
			return
		}
		if err == nil {
			if !json.Valid(body) || bytes.TrimLeft(body, " \t\r\n")[0] != '{' {
				t.Fatalf("accepted a body that is not one JSON object: %q", body)
			}
			return
		}
		var se *SchemaError
		if !errors.As(err, &se) || !errors.Is(err, ErrSchema) {
			t.Fatalf("error %v (%T) is not a *SchemaError", err, err)
		}
		if se.Field != "" && se.Field[0] != '/' || se.Reason == "" {
			t.Fatalf("bad error %+v", se)
		}
	})
}

func BenchmarkValidateBody(b *testing.B) {
	for _, typ := range Types {
		b.Run(string(typ), func(b *testing.B) {
			body := Example(typ)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if err := ValidateBody(typ, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
