package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
)

// Bundle is the set of pinned roots of ONE party: what a peer's chains must
// end at. It is immutable after NewBundle (a rollover builds a new Bundle)
// and safe for concurrent use. The zero Bundle trusts nothing.
type Bundle struct {
	party string
	roots []*x509.Certificate
	pool  *x509.CertPool // never exposed: Pool returns a clone

	mu    sync.Mutex
	paths map[[32]byte]*pathEntry // successful path builds, keyed by chainKey
}

// pathEntry is a cached successful path build: the parsed presented chain
// and the paths x509 built from it to our roots.
type pathEntry struct {
	certs  []*x509.Certificate
	chains [][]*x509.Certificate
}

// maxCachedPaths bounds the path cache; a full cache drops an arbitrary entry.
const maxCachedPaths = 1024

// NewBundle pins roots for party. Every root must be a self-signed CA
// certificate; at least one is required.
func NewBundle(party string, roots ...*x509.Certificate) (*Bundle, error) {
	if !ValidParty(party) {
		return nil, fmt.Errorf("certs: bundle: party %q is not two upper-case letters", party)
	}
	if len(roots) == 0 {
		return nil, errors.New("certs: bundle: no roots")
	}
	b := &Bundle{party: party, pool: x509.NewCertPool(), paths: make(map[[32]byte]*pathEntry)}
	for i, r := range roots {
		if r == nil {
			return nil, fmt.Errorf("certs: bundle: root %d is nil", i)
		}
		if !r.BasicConstraintsValid || !r.IsCA || !isSelfSigned(r) {
			return nil, fmt.Errorf("certs: bundle: %q is not a self-signed CA certificate", r.Subject.String())
		}
		if r.KeyUsage != 0 && r.KeyUsage&x509.KeyUsageCertSign == 0 {
			return nil, fmt.Errorf("certs: bundle: %q may not sign certificates", r.Subject.String())
		}
		b.roots = append(b.roots, r)
		b.pool.AddCert(r)
	}
	return b, nil
}

// ParseBundle pins every certificate in pemBytes as a root of party.
func ParseBundle(party string, pemBytes []byte) (*Bundle, error) {
	roots, err := ParseCertificates(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("certs: bundle: %w", err)
	}
	return NewBundle(party, roots...)
}

// Party is the party code whose roots b pins.
func (b *Bundle) Party() string { return b.party }

// Roots returns the pinned roots (a copy of the slice; do not modify the
// certificates).
func (b *Bundle) Roots() []*x509.Certificate { return append([]*x509.Certificate(nil), b.roots...) }

// Pool returns a new pool holding exactly the pinned roots, for
// tls.Config.RootCAs or ClientCAs. Changing it does not change b.
func (b *Bundle) Pool() *x509.CertPool {
	if b == nil || b.pool == nil {
		return x509.NewCertPool()
	}
	return b.pool.Clone()
}

func (b *Bundle) cached(key [32]byte) *pathEntry {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.paths[key]
}

func (b *Bundle) store(key [32]byte, e *pathEntry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.paths == nil {
		b.paths = make(map[[32]byte]*pathEntry)
	}
	if len(b.paths) >= maxCachedPaths {
		for k := range b.paths {
			delete(b.paths, k)
			break
		}
	}
	b.paths[key] = e
}

// cacheLen reports the number of cached paths (for tests).
func (b *Bundle) cacheLen() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.paths)
}
