package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
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

// errJSON* are the causes the strict scanner reports; callers wrap them with
// the sentinel of their step.
var (
	errJSONSyntax    = errors.New("not a single JSON object")
	errJSONUTF8      = errors.New("invalid UTF-8")
	errJSONDepth     = errors.New("nesting too deep")
	errJSONDuplicate = errors.New("duplicate member name")
	errJSONUnknown   = errors.New("unknown member")
	errJSONMissing   = errors.New("missing member")
)

// checkJSON verifies that data is exactly one JSON object (RFC 8259) in
// valid UTF-8, with no duplicate member names at any level (compared after
// unescaping), nested at most maxDepth deep, and, when top is not nil, whose
// top-level members are exactly those of top (every required one present, no
// other). encoding/json alone keeps the last of duplicate members and
// matches names case-insensitively, so the same bytes could mean two things
// to two readers.
func checkJSON(data []byte, maxDepth int, top members) error {
	return scanJSON(data, maxDepth, top, nil)
}

// scanJSON is checkJSON calling visit with each top-level member name and
// the exact bytes of its value. It makes one pass with bounded recursion
// (maxDepth) and allocates only for escaped names and large objects.
func scanJSON(data []byte, maxDepth int, top members, visit func(name string, value []byte) error) error {
	if !utf8.Valid(data) {
		return errJSONUTF8
	}
	s := scanner{data: data, maxDepth: maxDepth}
	s.ws()
	if !s.at('{') {
		return errJSONSyntax
	}
	if err := s.object(1, top, visit); err != nil {
		return err
	}
	s.ws()
	if s.pos != len(s.data) {
		return errJSONSyntax
	}
	return nil
}

// scanner is a strict RFC 8259 validator over one buffer.
type scanner struct {
	data     []byte
	pos      int
	maxDepth int
}

func (s *scanner) at(c byte) bool { return s.pos < len(s.data) && s.data[s.pos] == c }

func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// value scans one value inside containers depth deep.
func (s *scanner) value(depth int) error {
	if s.pos >= len(s.data) {
		return errJSONSyntax
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return s.object(depth+1, nil, nil)
	case c == '[':
		return s.array(depth + 1)
	case c == '"':
		_, _, err := s.str()
		return err
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || isDigit(c):
		return s.number()
	}
	return errJSONSyntax
}

// object scans an object at depth (1 = top level), s.pos on '{'.
func (s *scanner) object(depth int, top members, visit func(string, []byte) error) error {
	if depth > s.maxDepth {
		return errJSONDepth
	}
	s.pos++
	var names nameSet
	s.ws()
	if s.at('}') {
		s.pos++
		return names.required(top)
	}
	for {
		s.ws()
		name, err := s.name()
		if err != nil {
			return err
		}
		if top != nil {
			if _, ok := top[string(name)]; !ok {
				return errJSONUnknown
			}
		}
		if !names.add(name) {
			return errJSONDuplicate
		}
		s.ws()
		if !s.at(':') {
			return errJSONSyntax
		}
		s.pos++
		s.ws()
		start := s.pos
		if err := s.value(depth); err != nil {
			return err
		}
		if visit != nil {
			if err := visit(string(name), s.data[start:s.pos:s.pos]); err != nil {
				return err
			}
		}
		s.ws()
		switch {
		case s.at(','):
			s.pos++
		case s.at('}'):
			s.pos++
			return names.required(top)
		default:
			return errJSONSyntax
		}
	}
}

// array scans an array at depth, s.pos on '['.
func (s *scanner) array(depth int) error {
	if depth > s.maxDepth {
		return errJSONDepth
	}
	s.pos++
	s.ws()
	if s.at(']') {
		s.pos++
		return nil
	}
	for {
		s.ws()
		if err := s.value(depth); err != nil {
			return err
		}
		s.ws()
		switch {
		case s.at(','):
			s.pos++
		case s.at(']'):
			s.pos++
			return nil
		default:
			return errJSONSyntax
		}
	}
}

// name scans a member name and returns it unescaped.
func (s *scanner) name() ([]byte, error) {
	if !s.at('"') {
		return nil, errJSONSyntax
	}
	start := s.pos
	raw, escaped, err := s.str()
	if err != nil || !escaped {
		return raw, err
	}
	var name string
	if err := json.Unmarshal(s.data[start:s.pos], &name); err != nil {
		return nil, errJSONSyntax
	}
	return []byte(name), nil
}

// str scans a string, s.pos on its opening quote, and returns its raw
// content and whether it holds escapes.
func (s *scanner) str() (raw []byte, escaped bool, err error) {
	s.pos++
	start := s.pos
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			return s.data[start : s.pos-1], escaped, nil
		case c < 0x20:
			return nil, false, errJSONSyntax
		case c == '\\':
			escaped = true
			if err := s.escape(); err != nil {
				return nil, false, err
			}
			continue
		}
		s.pos++
	}
	return nil, false, errJSONSyntax
}

// escape scans one escape sequence, s.pos on the backslash.
func (s *scanner) escape() error {
	if s.pos+1 >= len(s.data) {
		return errJSONSyntax
	}
	switch s.data[s.pos+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.pos += 2
		return nil
	case 'u':
		if s.pos+6 > len(s.data) {
			return errJSONSyntax
		}
		for _, h := range s.data[s.pos+2 : s.pos+6] {
			if !isDigit(h) && !('a' <= h && h <= 'f') && !('A' <= h && h <= 'F') {
				return errJSONSyntax
			}
		}
		s.pos += 6
		return nil
	}
	return errJSONSyntax
}

func (s *scanner) literal(lit string) error {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(lit)) {
		return errJSONSyntax
	}
	s.pos += len(lit)
	return nil
}

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func (s *scanner) number() error {
	if s.at('-') {
		s.pos++
	}
	switch {
	case s.at('0'):
		s.pos++
	case s.pos < len(s.data) && '1' <= s.data[s.pos] && s.data[s.pos] <= '9':
		s.digits()
	default:
		return errJSONSyntax
	}
	if s.at('.') {
		s.pos++
		if s.digits() == 0 {
			return errJSONSyntax
		}
	}
	if s.at('e') || s.at('E') {
		s.pos++
		if s.at('+') || s.at('-') {
			s.pos++
		}
		if s.digits() == 0 {
			return errJSONSyntax
		}
	}
	return nil
}

func (s *scanner) digits() int {
	n := 0
	for s.pos < len(s.data) && isDigit(s.data[s.pos]) {
		s.pos++
		n++
	}
	return n
}

// nameSet holds the member names of one object: a slice while small (no
// allocation for unescaped names, which alias the input), a map beyond.
type nameSet struct {
	list [][]byte
	big  map[string]struct{}
}

const nameSetSmall = 16

// add records name and reports whether it was new.
func (n *nameSet) add(name []byte) bool {
	if n.big != nil {
		if _, dup := n.big[string(name)]; dup {
			return false
		}
		n.big[string(name)] = struct{}{}
		return true
	}
	for _, x := range n.list {
		if bytes.Equal(x, name) {
			return false
		}
	}
	if len(n.list) < nameSetSmall {
		n.list = append(n.list, name)
		return true
	}
	n.big = make(map[string]struct{}, 2*nameSetSmall)
	for _, x := range n.list {
		n.big[string(x)] = struct{}{}
	}
	n.big[string(name)] = struct{}{}
	n.list = nil
	return true
}

func (n *nameSet) has(name string) bool {
	if n.big != nil {
		_, ok := n.big[name]
		return ok
	}
	for _, x := range n.list {
		if string(x) == name {
			return true
		}
	}
	return false
}

// required checks that every required member of top was seen.
func (n *nameSet) required(top members) error {
	for name, req := range top {
		if req && !n.has(name) {
			return errJSONMissing
		}
	}
	return nil
}

// decodeStrict checks data with checkJSON and then decodes it into v,
// refusing fields v does not declare. For small objects (headers, receipts).
func decodeStrict(data []byte, maxDepth int, top members, v any) error {
	if err := checkJSON(data, maxDepth, top); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
