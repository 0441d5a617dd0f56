package envelope

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// The JSON Schemas (draft 2020-12) of the three body types, one file per
// type, named after Type.Schema. They are the contract for bodies: a body is
// valid exactly when it validates against its schema, with format assertions
// on (date, uri).
//
//go:embed schemas/*.json
var schemaFS embed.FS

// One realistic, valid, clearly illustrative body per type, for the demo and
// the docs.
//
//go:embed examples/*.json
var exampleFS embed.FS

// ErrUnknownType is returned by ValidateBody for a Type not in Types.
var ErrUnknownType = errors.New("envelope: unknown message type")

// maxBodyDepth bounds the nesting of a body (the body object is depth 1). The
// deepest valid body is 4 levels deep (report → minerals → mineral →
// hs_codes); anything deeper is invalid anyway, and refusing it while
// decoding keeps the cost of a hostile body linear and the stack flat
// (catalogue H-12, J-25).
const maxBodyDepth = 16

// maxBodyItems, maxBodyMembers and maxBodyValues bound every array, every
// object and the whole of a body while it is decoded. No schema allows more
// (a test checks it). The validator reports every failing item, so without
// them one array of a million wrong items would cost a million errors (about
// 1 GB allocated for a 2 MB body); and the values under unknown members would
// be built in memory before being refused.
const (
	maxBodyItems   = 64
	maxBodyMembers = 64
	maxBodyValues  = 4096
)

// schemaBaseURL prefixes the $id of every schema. ".invalid" (RFC 2606) makes
// plain that the ids are names, never fetched.
const schemaBaseURL = "https://cmx.invalid/schemas/"

// SchemaError reports why a body does not match the schema of its type. It
// wraps ErrSchema.
type SchemaError struct {
	Type Type
	// Field is the JSON pointer (RFC 6901) of the first failing location,
	// e.g. "/minerals/0/hs_codes/1"; "" is the body itself. For an unknown or
	// missing member it points at that member.
	Field string
	// Reason is a short human message. It never repeats the offending value.
	Reason string
}

// maxFieldDisplay bounds how much of Field Error prints: member names come
// from the input and may be arbitrarily long.
const maxFieldDisplay = 200

// Error returns "envelope: body of <type> invalid at <field>: <reason>".
func (e *SchemaError) Error() string {
	if e.Field == "" {
		return "envelope: body of " + clip(string(e.Type), 64) + " invalid: " + e.Reason
	}
	return "envelope: body of " + clip(string(e.Type), 64) + " invalid at " + clip(e.Field, maxFieldDisplay) + ": " + e.Reason
}

// Unwrap returns ErrSchema.
func (e *SchemaError) Unwrap() error { return ErrSchema }

// clip shortens s to at most n bytes (on a rune boundary) and quotes it if it
// holds anything but printable characters, so that input copied into an
// error message cannot forge log lines.
func clip(s string, n int) string {
	s = truncate(s, n)
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// truncate shortens s to at most n bytes, on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// SchemaJSON returns the JSON Schema of t (a fresh copy), or nil for an
// unknown type.
func SchemaJSON(t Type) []byte {
	if !t.Valid() {
		return nil
	}
	b, err := schemaFS.ReadFile("schemas/" + t.Schema() + ".json")
	if err != nil {
		return nil
	}
	return b
}

// Example returns a realistic, valid example body of t (a fresh copy), or nil
// for an unknown type. The examples are illustrative: no real entity is
// accused of anything.
func Example(t Type) json.RawMessage {
	if !t.Valid() {
		return nil
	}
	b, err := exampleFS.ReadFile("examples/" + string(t) + ".json")
	if err != nil {
		return nil
	}
	return b
}

// schemaID is the $id of the schema of t.
func schemaID(t Type) string { return schemaBaseURL + t.Schema() + ".json" }

// compiledSchemas compiles every schema once. Compiled schemas are read-only,
// so one set serves every goroutine.
var compiledSchemas = sync.OnceValues(func() (map[Type]*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	// No loader: a $ref outside the embedded schemas fails to compile rather
	// than reading a file or the network.
	c.UseLoader(jsonschema.SchemeURLLoader{})
	c.UseRegexpEngine(compilePattern)
	for _, t := range Types {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(SchemaJSON(t)))
		if err != nil {
			return nil, fmt.Errorf("envelope: schema of %s: %w", t, err)
		}
		if err := c.AddResource(schemaID(t), doc); err != nil {
			return nil, fmt.Errorf("envelope: schema of %s: %w", t, err)
		}
	}
	out := make(map[Type]*jsonschema.Schema, len(Types))
	for _, t := range Types {
		s, err := c.Compile(schemaID(t))
		if err != nil {
			return nil, fmt.Errorf("envelope: schema of %s: %w", t, err)
		}
		out[t] = s
	}
	return out, nil
})

// ValidateBody checks that body is a valid body of type t. It is pure, safe
// for concurrent use, and costs time linear in len(body); callers bound that
// length before (ingress body limit, token size cap).
//
// Checks, in order; the first failure is returned as a *SchemaError (wrapping
// ErrSchema), except an unknown t (ErrUnknownType):
//  1. body is valid UTF-8 (encoding/json would silently replace bad bytes);
//  2. body is exactly one JSON object, nested at most maxBodyDepth deep, no
//     array over maxBodyItems items, no object over maxBodyMembers members,
//     at most maxBodyValues values in all,
//     no duplicate member name in any object (two readers of the same bytes
//     must not see two different documents), and nothing after it but
//     whitespace. None of these rejects a body the schema accepts;
//     they bound the work of the next step;
//  3. the decoded value validates against the schema of t. If several
//     locations fail, Field is the deepest of them, ties broken by document
//     path then schema keyword, so the same body always gets the same error.
func ValidateBody(t Type, body []byte) error {
	if !t.Valid() {
		return fmt.Errorf("%w %q", ErrUnknownType, truncate(string(t), 64))
	}
	schemas, err := compiledSchemas()
	if err != nil {
		return err
	}
	v, serr := decodeBody(body)
	if serr != nil {
		serr.Type = t
		return serr
	}
	err = schemas[t].Validate(v)
	if err == nil {
		return nil
	}
	var verr *jsonschema.ValidationError
	if !errors.As(err, &verr) {
		return &SchemaError{Type: t, Reason: err.Error()}
	}
	f := firstFailure(verr)
	return &SchemaError{Type: t, Field: pointer(f.loc), Reason: f.reason}
}

// compilePattern is the regexp engine of the schemas: the standard regexp
// package, except for patterns that only say "every character is in this
// class" (^[^...]*$, the text rules applied to every free-text field), which
// classMatcher matches with one pass over the runes: the same language, and
// ValidateBody about 25% faster on the examples.
func compilePattern(pattern string) (jsonschema.Regexp, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, err
	}
	if ranges, ok := wholeStringClass(pattern); ok {
		return classMatcher{re: re, ranges: ranges}, nil
	}
	return re, nil
}

// wholeStringClass returns the rune ranges (lo, hi pairs) of pattern when it
// is exactly ^C*$ for a character class C.
func wholeStringClass(pattern string) ([]rune, bool) {
	ast, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, false
	}
	ast = ast.Simplify()
	if ast.Op != syntax.OpConcat || len(ast.Sub) != 3 {
		return nil, false
	}
	begin, star, end := ast.Sub[0], ast.Sub[1], ast.Sub[2]
	if begin.Op != syntax.OpBeginText || end.Op != syntax.OpEndText ||
		star.Op != syntax.OpStar || star.Sub[0].Op != syntax.OpCharClass {
		return nil, false
	}
	return star.Sub[0].Rune, true
}

// classMatcher matches ^C*$ where C is given by its ranges.
type classMatcher struct {
	re     *regexp.Regexp // for String, and the reference the tests compare with
	ranges []rune
}

func (m classMatcher) String() string { return m.re.String() }

func (m classMatcher) MatchString(s string) bool {
	for _, r := range s {
		if !inRanges(m.ranges, r) {
			return false
		}
	}
	return true
}

func inRanges(ranges []rune, r rune) bool {
	for i := 0; i+1 < len(ranges); i += 2 {
		if r < ranges[i] {
			return false // ranges are sorted
		}
		if r <= ranges[i+1] {
			return true
		}
	}
	return false
}

// bodyDecoder builds the value jsonschema validates (map[string]any, []any,
// string, json.Number, bool, nil) token by token, so that it can refuse
// duplicate members and anything over the bounds as soon as it sees them, and
// say where.
type bodyDecoder struct {
	dec    *json.Decoder
	path   []string
	values int // decoded so far, the body object included
}

// decodeBody decodes body per steps 1 and 2 of ValidateBody.
func decodeBody(body []byte) (any, *SchemaError) {
	if !utf8.Valid(body) {
		return nil, &SchemaError{Reason: fmt.Sprintf("invalid UTF-8 at byte offset %d", invalidUTF8Offset(body))}
	}
	d := bodyDecoder{dec: json.NewDecoder(bytes.NewReader(body)), values: 1}
	d.dec.UseNumber()
	tok, err := d.dec.Token()
	switch {
	case err == io.EOF:
		return nil, &SchemaError{Reason: "empty body"}
	case err != nil:
		return nil, d.malformed(err)
	case tok != json.Delim('{'):
		return nil, &SchemaError{Reason: "body must be a JSON object"}
	}
	v, serr := d.object(1)
	if serr != nil {
		return nil, serr
	}
	if _, err := d.dec.Token(); err != io.EOF {
		return nil, &SchemaError{Reason: "data after the JSON object"}
	}
	return v, nil
}

func invalidUTF8Offset(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

func (d *bodyDecoder) fail(reason string) *SchemaError {
	return &SchemaError{Field: pointer(d.path), Reason: reason}
}

func (d *bodyDecoder) malformed(err error) *SchemaError {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return d.fail("malformed JSON: unexpected end of input")
	}
	return d.fail("malformed JSON: " + strings.TrimPrefix(err.Error(), "json: "))
}

// value turns tok, the first token of a value at depth, into that value.
func (d *bodyDecoder) value(tok json.Token, depth int) (any, *SchemaError) {
	if d.values++; d.values > maxBodyValues {
		return nil, d.fail(fmt.Sprintf("more than %d values in the body", maxBodyValues))
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	if depth+1 > maxBodyDepth {
		return nil, d.fail(fmt.Sprintf("nested deeper than %d levels", maxBodyDepth))
	}
	if delim == '{' {
		return d.object(depth + 1)
	}
	return d.array(depth + 1) // json.Decoder yields no other opening token
}

// object reads the members of an object whose '{' was just read.
func (d *bodyDecoder) object(depth int) (any, *SchemaError) {
	obj := make(map[string]any)
	for {
		tok, err := d.dec.Token()
		if err != nil {
			return nil, d.malformed(err)
		}
		if tok == json.Delim('}') {
			return obj, nil
		}
		if len(obj) == maxBodyMembers {
			return nil, d.fail(fmt.Sprintf("more than %d members", maxBodyMembers))
		}
		key, _ := tok.(string) // json.Decoder yields only strings in key position
		d.path = append(d.path, key)
		if _, dup := obj[key]; dup {
			return nil, d.fail("duplicate member name")
		}
		if tok, err = d.dec.Token(); err != nil {
			return nil, d.malformed(err)
		}
		v, serr := d.value(tok, depth)
		if serr != nil {
			return nil, serr
		}
		obj[key] = v
		d.path = d.path[:len(d.path)-1]
	}
}

// array reads the items of an array whose '[' was just read.
func (d *bodyDecoder) array(depth int) (any, *SchemaError) {
	arr := []any{}
	for i := 0; ; i++ {
		tok, err := d.dec.Token()
		if err != nil {
			return nil, d.malformed(err)
		}
		if tok == json.Delim(']') {
			return arr, nil
		}
		if i == maxBodyItems {
			return nil, d.fail(fmt.Sprintf("more than %d items", maxBodyItems))
		}
		d.path = append(d.path, strconv.Itoa(i))
		v, serr := d.value(tok, depth)
		if serr != nil {
			return nil, serr
		}
		arr = append(arr, v)
		d.path = d.path[:len(d.path)-1]
	}
}

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// pointer renders path as a JSON pointer (RFC 6901).
func pointer(path []string) string {
	var b strings.Builder
	for _, tok := range path {
		b.WriteByte('/')
		b.WriteString(pointerEscaper.Replace(tok))
	}
	return b.String()
}

// failure is one leaf of a jsonschema validation error.
type failure struct {
	loc     []string // instance location, with the member name appended for unknown and missing members
	keyword string   // absolute keyword location, to break ties
	reason  string
}

// firstFailure picks, among the leaves of verr, the deepest failing location,
// ties broken by path then keyword. The library walks object members in map
// order, so the order of its causes varies from run to run: this choice does
// not.
func firstFailure(verr *jsonschema.ValidationError) failure {
	var leaves []failure
	collectFailures(verr, &leaves)
	if len(leaves) == 0 {
		return failure{reason: "does not match the schema"}
	}
	return slices.MinFunc(leaves, func(a, b failure) int {
		if len(a.loc) != len(b.loc) {
			return len(b.loc) - len(a.loc)
		}
		if c := comparePaths(a.loc, b.loc); c != 0 {
			return c
		}
		return strings.Compare(a.keyword, b.keyword)
	})
}

func collectFailures(e *jsonschema.ValidationError, out *[]failure) {
	if len(e.Causes) > 0 {
		for _, c := range e.Causes {
			collectFailures(c, out)
		}
		return
	}
	loc, reason := describe(e)
	*out = append(*out, failure{loc: loc, keyword: e.SchemaURL, reason: reason})
}

// comparePaths orders paths token by token, array indexes numerically.
func comparePaths(a, b []string) int {
	for i := range min(len(a), len(b)) {
		x, errX := strconv.Atoi(a[i])
		y, errY := strconv.Atoi(b[i])
		if errX == nil && errY == nil && x != y {
			return x - y
		}
		if c := strings.Compare(a[i], b[i]); c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}

// maxEnumListed is how many allowed values a reason lists at most.
const maxEnumListed = 12

// describe turns one leaf error into a location and a reason that does not
// repeat the value (it may be large, or sensitive).
func describe(e *jsonschema.ValidationError) ([]string, string) {
	loc := slices.Clone(e.InstanceLocation)
	switch k := e.ErrorKind.(type) {
	case *kind.AdditionalProperties:
		return append(loc, slices.Min(k.Properties)), "unknown field"
	case *kind.Required:
		return append(loc, slices.Min(k.Missing)), "missing required field"
	case *kind.Type:
		return loc, fmt.Sprintf("got %s, want %s", k.Got, strings.Join(k.Want, " or "))
	case *kind.Enum:
		return loc, describeEnum(k.Want)
	case *kind.MinLength:
		if k.Want == 1 {
			return loc, "must not be empty"
		}
		return loc, fmt.Sprintf("shorter than %d characters", k.Want)
	case *kind.MaxLength:
		return loc, fmt.Sprintf("longer than %d characters (got %d)", k.Want, k.Got)
	case *kind.MinItems:
		if k.Want == 1 {
			return loc, "must not be empty"
		}
		return loc, fmt.Sprintf("fewer than %d items", k.Want)
	case *kind.MaxItems:
		return loc, fmt.Sprintf("more than %d items (got %d)", k.Want, k.Got)
	case *kind.UniqueItems:
		return loc, fmt.Sprintf("items %d and %d are equal", k.Duplicates[0], k.Duplicates[1])
	case *kind.Pattern:
		if strings.IndexFunc(k.Want, unicode.IsControl) >= 0 {
			return loc, "contains a control, line-separator or bidirectional-formatting character"
		}
		return loc, "does not match pattern " + k.Want
	case *kind.Format:
		return loc, "is not a valid " + k.Want
	case *kind.FalseSchema:
		return loc, "not allowed"
	default:
		return loc, "fails " + strings.Join(e.ErrorKind.KeywordPath(), "/")
	}
}

func describeEnum(want []any) string {
	if len(want) > maxEnumListed {
		return fmt.Sprintf("not one of the %d allowed values", len(want))
	}
	names := make([]string, len(want))
	for i, w := range want {
		names[i] = fmt.Sprint(w)
	}
	return "must be one of " + strings.Join(names, ", ")
}
