package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"unicode/utf8"
)

// maxClaimsDepth bounds the nesting of a claims payload (the claims object is
// depth 1, the body object depth 2). encoding/json itself stops only at 10 000
// (catalogue J-25, CVE-2025-53864 class).
const maxClaimsDepth = 32

// members is the set of member names allowed at the top level of a strict
// object, each mapped to whether it is required. Names match exactly (case
// sensitive): encoding/json would match "ISS" to the field tagged "iss".
type members map[string]bool

// errJSON* are the causes checkJSON reports; callers wrap them with the
// sentinel of their step.
var (
	errJSONNotObject = errors.New("not a single JSON object")
	errJSONUTF8      = errors.New("invalid UTF-8")
	errJSONDepth     = errors.New("nesting too deep")
	errJSONDuplicate = errors.New("duplicate member name")
	errJSONUnknown   = errors.New("unknown member")
	errJSONMissing   = errors.New("missing member")
)

// frame is one open object or array while scanning.
type frame struct {
	object   bool
	wantKey  bool
	seen     map[string]struct{}
	topLevel bool
}

// checkJSON verifies that data is exactly one JSON object in valid UTF-8,
// with no duplicate member names at any level, nested at most maxDepth deep,
// and, when top is not nil, whose top-level members are exactly those of top
// (every required one present, no other). encoding/json alone keeps the last
// of duplicate members and matches names case-insensitively, so the same
// bytes could mean two things to two readers.
func checkJSON(data []byte, maxDepth int, top members) error {
	if !utf8.Valid(data) {
		return errJSONUTF8
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return errJSONNotObject
	}
	stack := []frame{{object: true, wantKey: true, topLevel: true, seen: map[string]struct{}{}}}
	for len(stack) > 0 {
		if tok, err = dec.Token(); err != nil {
			return errJSONNotObject
		}
		if stack, err = step(stack, tok, maxDepth, top); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return errJSONNotObject
	}
	return nil
}

// step advances the scanner by one token.
func step(stack []frame, tok json.Token, maxDepth int, top members) ([]frame, error) {
	cur := &stack[len(stack)-1]
	if cur.object && cur.wantKey {
		if tok == json.Delim('}') {
			if cur.topLevel && top != nil {
				if err := checkRequired(cur.seen, top); err != nil {
					return nil, err
				}
			}
			return pop(stack), nil
		}
		key, _ := tok.(string)
		if cur.topLevel && top != nil {
			if _, ok := top[key]; !ok {
				return nil, errJSONUnknown
			}
		}
		if cur.seen == nil {
			cur.seen = make(map[string]struct{}, 8)
		}
		if _, dup := cur.seen[key]; dup {
			return nil, errJSONDuplicate
		}
		cur.seen[key] = struct{}{}
		cur.wantKey = false
		return stack, nil
	}
	switch tok {
	case json.Delim('{'), json.Delim('['):
		if len(stack) >= maxDepth {
			return nil, errJSONDepth
		}
		cur.wantKey = true // the parent object wants a key after this value
		return append(stack, frame{object: tok == json.Delim('{'), wantKey: true}), nil
	case json.Delim(']'):
		return pop(stack), nil
	}
	cur.wantKey = true
	return stack, nil
}

func pop(stack []frame) []frame {
	stack = stack[:len(stack)-1]
	return stack
}

func checkRequired(seen map[string]struct{}, top members) error {
	for name, required := range top {
		if _, ok := seen[name]; required && !ok {
			return errJSONMissing
		}
	}
	return nil
}

// decodeStrict checks data with checkJSON and then decodes it into v,
// refusing fields v does not declare.
func decodeStrict(data []byte, maxDepth int, top members, v any) error {
	if err := checkJSON(data, maxDepth, top); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
