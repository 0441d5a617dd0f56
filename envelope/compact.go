package envelope

import (
	"encoding/base64"
	"encoding/json"
)

// b64 decodes base64url without padding and refuses non-zero trailing bits,
// so every segment has exactly one accepted byte form (catalogue J-27).
var b64 = base64.RawURLEncoding.Strict()

// b64val maps a base64url alphabet byte to its value, anything else to 0xff.
var b64val = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = byte(i)
	}
	return t
}()

// splitCompact checks the form of a compact token of len(segs) segments and
// fills segs. Every byte must be in the base64url alphabet or a dot, there
// must be exactly len(segs)-1 dots, no segment may be empty (an empty
// encrypted_key is refused here: catalogue J-16), every segment must be
// canonical unpadded base64url, and the first (the protected header) at most
// maxHeader bytes. This runs before any library parses the token, so padding,
// whitespace, JSON serialization and extra dots never reach go-jose
// (catalogue J-07, J-08, J-18, J-27, J-29).
func splitCompact(tok string, segs []string, maxHeader int) *Error {
	n, start := 0, 0
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c == '.' {
			if n == len(segs)-1 {
				return malformed("too many segments")
			}
			segs[n] = tok[start:i]
			n, start = n+1, i+1
			continue
		}
		if b64val[c] == 0xff {
			return malformed("byte outside base64url")
		}
	}
	if n != len(segs)-1 {
		return malformed("too few segments")
	}
	segs[n] = tok[start:]
	for _, s := range segs {
		if !canonical(s) {
			return malformed("empty or non-canonical segment")
		}
	}
	if len(segs[0]) > maxHeader {
		return malformed("protected header too large")
	}
	return nil
}

// canonical reports whether s, already known to be in the alphabet, is a
// non-empty unpadded base64url string whose unused trailing bits are zero.
func canonical(s string) bool {
	if len(s) == 0 {
		return false
	}
	last := b64val[s[len(s)-1]]
	switch len(s) % 4 {
	case 1:
		return false
	case 2:
		return last&0x0f == 0
	case 3:
		return last&0x03 == 0
	}
	return true
}

// jweHeader is the outer protected header: exactly these members.
type jweHeader struct {
	Alg string          `json:"alg"`
	Enc string          `json:"enc"`
	Cty string          `json:"cty"`
	Kid string          `json:"kid"`
	Epk json.RawMessage `json:"epk"`
}

var jweMembers = members{"alg": true, "enc": true, "cty": true, "kid": true, "epk": true}

// jwsHeader is the protected header of a message or a receipt: exactly these
// members. Anything else (jwk, jku, x5u, crit, b64, cty, case variants)
// is refused (catalogue J-04, J-05, J-09, J-11).
type jwsHeader struct {
	Alg string   `json:"alg"`
	Typ string   `json:"typ"`
	Kid string   `json:"kid"`
	X5C []string `json:"x5c"`
}

var jwsMembers = members{"alg": true, "typ": true, "kid": true, "x5c": true}

// maxHeaderDepth: the header object and one level inside it (epk, x5c).
const maxHeaderDepth = 2

// decodeHeader decodes a protected header segment strictly into v.
func decodeHeader(seg string, top members, v any) *Error {
	raw, err := b64.DecodeString(seg)
	if err != nil {
		return malformed("protected header is not base64url")
	}
	if err := decodeStrict(raw, maxHeaderDepth, top, v); err != nil {
		return malformed("protected header: " + err.Error())
	}
	return nil
}

// parseJWSHeader checks the form of a compact JWS and decodes its header,
// requiring the given typ (catalogue J-21, R-04) and alg ES256.
func parseJWSHeader(tok string, typ string) (*jwsHeader, *Error) {
	var segs [3]string
	if e := splitCompact(tok, segs[:], maxInnerHeaderBytes); e != nil {
		return nil, e
	}
	var h jwsHeader
	if e := decodeHeader(segs[0], jwsMembers, &h); e != nil {
		return nil, e
	}
	if h.Typ != typ {
		return nil, malformed("typ is not " + typ)
	}
	if h.Alg != "ES256" {
		// An algorithm outside the allow-list is a signature that cannot
		// verify under the profile (catalogue J-01, J-02).
		return nil, fail(ReasonSignatureInvalid, wrap(ErrCrypto, "alg is not ES256"))
	}
	return &h, nil
}
