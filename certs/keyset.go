package certs

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// DefaultOutageBudget is the outage budget NewKeySet uses for 0: how long a
// retired decryption key still decrypts messages that were in flight.
const DefaultOutageBudget = 7 * 24 * time.Hour

// maxKIDLen bounds a kid before it is used as a map key. A cmx kid is 43
// characters (base64url SHA-256).
const maxKIDLen = 64

// KeySet is our set of live decryption keys during rotation, selected by
// the JWE kid. It is immutable and safe for concurrent use.
type KeySet struct {
	budget  time.Duration
	byKID   map[string]*DecryptionKey
	current *DecryptionKey
}

// NewKeySet builds a key set. budget is the outage budget (0 = 7 days): a
// key retired at R still decrypts until R+budget. At least one key must be
// non-retired, and KIDs must be unique. A key with an empty KID gets
// KID(Cert); a KID that differs from KID(Cert) is an error.
func NewKeySet(budget time.Duration, keys ...*DecryptionKey) (*KeySet, error) {
	if budget < 0 {
		return nil, errors.New("certs: key set: negative outage budget")
	}
	if budget == 0 {
		budget = DefaultOutageBudget
	}
	ks := &KeySet{budget: budget, byKID: make(map[string]*DecryptionKey, len(keys))}
	for i, k := range keys {
		if k == nil || k.Cert == nil || k.Key == nil {
			return nil, fmt.Errorf("certs: key set: key %d has no certificate or key", i)
		}
		k = copyKey(k)
		if _, dup := ks.byKID[k.KID]; dup {
			return nil, fmt.Errorf("certs: key set: duplicate kid %s", k.KID)
		}
		if k.KID != KID(k.Cert) {
			return nil, fmt.Errorf("certs: key set: key %d: kid does not match its certificate", i)
		}
		ks.byKID[k.KID] = k
		if k.RetiredAt.IsZero() && newer(k, ks.current) {
			ks.current = k
		}
	}
	if ks.current == nil {
		return nil, errors.New("certs: key set: no current (non-retired) key")
	}
	return ks, nil
}

func copyKey(k *DecryptionKey) *DecryptionKey {
	c := *k
	if c.KID == "" {
		c.KID = KID(c.Cert)
	}
	return &c
}

// newer orders keys by certificate NotBefore, then by KID for determinism.
func newer(a, b *DecryptionKey) bool {
	if b == nil {
		return true
	}
	if !a.Cert.NotBefore.Equal(b.Cert.NotBefore) {
		return a.Cert.NotBefore.After(b.Cert.NotBefore)
	}
	return a.KID > b.KID
}

// Current is the key to advertise to peers: the newest non-retired key.
func (ks *KeySet) Current() *DecryptionKey { return ks.current }

// Budget is the outage budget of ks.
func (ks *KeySet) Budget() time.Duration { return ks.budget }

// Keys returns every key of ks, current first then by KID.
func (ks *KeySet) Keys() []*DecryptionKey {
	out := []*DecryptionKey{ks.current}
	for _, k := range ks.byKID {
		if k != ks.current {
			out = append(out, k)
		}
	}
	slices.SortFunc(out[1:], func(a, b *DecryptionKey) int { return strings.Compare(a.KID, b.KID) })
	return out
}

// Lookup returns the key named by kid (a foreign header value). A kid that
// is too long or not base64url is ErrUnknownKey without further use; a key
// retired more than the budget before now is ErrKeyRetired.
func (ks *KeySet) Lookup(kid string, now time.Time) (*DecryptionKey, error) {
	if len(kid) == 0 || len(kid) > maxKIDLen || !isBase64URL(kid) {
		return nil, ErrUnknownKey
	}
	k, ok := ks.byKID[kid]
	if !ok {
		return nil, ErrUnknownKey
	}
	if !k.RetiredAt.IsZero() && now.After(k.RetiredAt.Add(ks.budget)) {
		return nil, fmt.Errorf("%w: kid %s retired at %s", ErrKeyRetired, kid, k.RetiredAt.UTC().Format(time.RFC3339))
	}
	return k, nil
}

func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
