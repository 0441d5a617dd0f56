package envelope

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// Tests of the bounds of the schemas and of ValidateBody, and of the pattern
// engine: what keeps the work per body flat.

// TestSchemasBounded walks every schema: each object schema closes
// additionalProperties, each string has maxLength, each array maxItems, each
// property a description; and no valid body can be deeper than maxBodyDepth.
func TestSchemasBounded(t *testing.T) {
	for _, typ := range Types {
		t.Run(string(typ), func(t *testing.T) {
			var doc map[string]any
			if err := json.Unmarshal(SchemaJSON(typ), &doc); err != nil {
				t.Fatal(err)
			}
			walkSchema(t, doc, "#")
			defs, _ := doc["$defs"].(map[string]any)
			if depth := instanceDepth(doc, defs); depth < 2 || depth > maxBodyDepth {
				t.Errorf("deepest valid body is %d levels, limit %d", depth, maxBodyDepth)
			}
			if n := instanceValues(doc, defs); n < 10 || n > maxBodyValues {
				t.Errorf("largest valid body has %d values, limit %d", n, maxBodyValues)
			}
		})
	}
}

func walkSchema(t *testing.T, node map[string]any, at string) {
	t.Helper()
	switch node["type"] {
	case "object":
		if node["additionalProperties"] != false {
			t.Errorf("%s: object without additionalProperties: false", at)
		}
	case "string":
		if _, ok := node["maxLength"]; !ok {
			t.Errorf("%s: string without maxLength", at)
		}
	case "array":
		if n, ok := node["maxItems"].(float64); !ok || n > maxBodyItems {
			t.Errorf("%s: array without maxItems, or over maxBodyItems", at)
		}
	}
	if props, ok := node["properties"].(map[string]any); ok && len(props) > maxBodyMembers {
		t.Errorf("%s: more properties than maxBodyMembers", at)
	}
	if props, ok := node["properties"].(map[string]any); ok && node["type"] == "object" {
		for name, p := range props {
			if _, ok := p.(map[string]any)["description"]; !ok {
				if ref, _ := p.(map[string]any)["$ref"].(string); ref == "" {
					t.Errorf("%s/properties/%s: no description", at, name)
				}
			}
		}
	}
	for key, v := range node {
		switch v := v.(type) {
		case map[string]any:
			walkSchema(t, v, at+"/"+key)
		case []any:
			for _, item := range v {
				if m, ok := item.(map[string]any); ok {
					walkSchema(t, m, at+"/"+key)
				}
			}
		}
	}
}

// instanceDepth is the nesting depth of the deepest instance node allows.
func instanceDepth(node, defs map[string]any) int {
	if ref, ok := node["$ref"].(string); ok {
		return instanceDepth(defs[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any), defs)
	}
	deepest := 0
	if props, ok := node["properties"].(map[string]any); ok {
		for _, p := range props {
			deepest = max(deepest, instanceDepth(p.(map[string]any), defs))
		}
	}
	if items, ok := node["items"].(map[string]any); ok {
		deepest = max(deepest, instanceDepth(items, defs))
	}
	if node["type"] == "object" || node["type"] == "array" {
		return deepest + 1
	}
	return deepest
}

// instanceValues is the most values an instance of node can hold.
func instanceValues(node, defs map[string]any) int {
	if ref, ok := node["$ref"].(string); ok {
		return instanceValues(defs[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any), defs)
	}
	n := 1
	if props, ok := node["properties"].(map[string]any); ok {
		for _, p := range props {
			n += instanceValues(p.(map[string]any), defs)
		}
	}
	if items, ok := node["items"].(map[string]any); ok {
		n += int(node["maxItems"].(float64)) * instanceValues(items, defs)
	}
	return n
}

// manyValues returns a body of more than maxBodyValues values within the
// bounds of depth, items and members, followed by n more.
func manyValues(n int) []byte {
	inner := "[" + strings.Repeat("1,", 62) + "1]"
	return []byte(`{"x":[` + strings.Repeat(inner+",", 63) + inner + `],"y":[` + strings.Repeat("1,", n) + `1]}`)
}

// TestValidateBodyHostileShapesCheap checks that hostile shapes cost the
// same whatever their size: decoding stops at the first level, item or member
// beyond the bounds (catalogue H-12; DESIGN.md §8 invariant 7).
func TestValidateBodyHostileShapesCheap(t *testing.T) {
	tests := []struct {
		name  string
		shape func(n int) []byte
	}{
		{"nesting", func(n int) []byte {
			return []byte(`{"title":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`)
		}},
		{"items", func(n int) []byte { return []byte(`{"minerals":[` + strings.Repeat("1,", n) + `1]}`) }},
		{"values", manyValues},
		{"members", func(n int) []byte {
			var b strings.Builder
			b.WriteString(`{"third_economy":{`)
			for i := range n {
				fmt.Fprintf(&b, `"m%d":1,`, i)
			}
			b.WriteString(`"z":1}}`)
			return []byte(b.String())
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			allocs := func(n int) float64 {
				body := tt.shape(n)
				return testing.AllocsPerRun(3, func() {
					if !errors.Is(ValidateBody(NonMarketPracticeReport, body), ErrSchema) {
						t.Fatal("accepted")
					}
				})
			}
			small, huge := allocs(100), allocs(1_000_000)
			if huge > small+50 || huge > 8*maxBodyValues {
				t.Errorf("allocations: %v at size 100, %v at size 1 000 000", small, huge)
			}
		})
	}
}

// schemaPatterns returns every "pattern" of every schema.
func schemaPatterns(t testing.TB) []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if p, ok := x.(string); ok && k == "pattern" {
					out = append(out, p)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	for _, typ := range Types {
		var doc any
		if err := json.Unmarshal(SchemaJSON(typ), &doc); err != nil {
			t.Fatal(err)
		}
		walk(doc)
	}
	return out
}

// TestCompilePattern checks the fast matcher of whole-string class patterns
// against the standard regexp package, on every rune at and around the
// bounds of each class.
func TestCompilePattern(t *testing.T) {
	fast := 0
	for _, p := range schemaPatterns(t) {
		m, err := compilePattern(p)
		if err != nil {
			t.Fatalf("%q: %v", p, err)
		}
		cm, ok := m.(classMatcher)
		if !ok {
			continue
		}
		fast++
		if cm.String() != p {
			t.Errorf("String() = %q, want %q", cm.String(), p)
		}
		re := regexp.MustCompile(p)
		probes := []string{"", "plain text", "a\nb", "日本語", "a\x00", "\u202e", "\U0010FFFF"}
		for _, r := range cm.ranges {
			for _, x := range []rune{r - 1, r, r + 1} {
				probes = append(probes, string(x), "ok "+string(x)+" ok")
			}
		}
		for _, s := range probes {
			if got, want := cm.MatchString(s), re.MatchString(s); got != want {
				t.Errorf("%q on %q: fast %v, regexp %v", p, s, got, want)
			}
		}
	}
	if fast != 2*len(Types) { // single_line and multi_line in each schema
		t.Errorf("%d patterns use the fast matcher, want %d", fast, 2*len(Types))
	}
}

func FuzzCompilePattern(f *testing.F) {
	f.Add("Export licensing\trequirement\n")
	f.Add("a\u202eb\x00\x7f\u0085\u2028")
	patterns := schemaPatterns(f)
	f.Fuzz(func(t *testing.T, s string) {
		for _, p := range patterns {
			m, err := compilePattern(p)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := m.MatchString(s), regexp.MustCompile(p).MatchString(s); got != want {
				t.Fatalf("%q on %q: engine %v, regexp %v", p, s, got, want)
			}
		}
	})
}
