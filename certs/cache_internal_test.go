package certs

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"
)

func TestPathCache(t *testing.T) {
	now := time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)
	us, err := NewPKI("US", PKIOptions{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	jp, err := NewPKI("JP", PKIOptions{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBundle("US", us.Root)
	if err != nil {
		t.Fatal(err)
	}
	opts := VerifyOptions{Role: RoleSigning, Now: now}
	if err := b.Verify(jp.Signing.Chain, opts); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("foreign chain: %v", err)
	}
	if n := b.cacheLen(); n != 0 {
		t.Fatalf("a failed path build was cached (%d entries)", n)
	}
	for range 3 {
		if err := b.Verify(us.Signing.Chain, opts); err != nil {
			t.Fatal(err)
		}
	}
	if n := b.cacheLen(); n != 1 {
		t.Fatalf("cache has %d entries after verifying one chain, want 1", n)
	}
	// The DER form of the same chain hits the same entry.
	if _, err := b.VerifyRaw([][]byte{us.Signing.Cert.Raw, us.Intermediate.Raw}, opts); err != nil {
		t.Fatal(err)
	}
	if n := b.cacheLen(); n != 1 {
		t.Fatalf("cache has %d entries, want 1", n)
	}
	// A longer presented chain is another key.
	if err := b.Verify([]*x509.Certificate{us.Signing.Cert, us.Intermediate, us.Root}, opts); err != nil {
		t.Fatal(err)
	}
	if n := b.cacheLen(); n != 2 {
		t.Fatalf("cache has %d entries, want 2", n)
	}
}

func TestPathCacheBounded(t *testing.T) {
	var b Bundle
	for i := range 3 * maxCachedPaths {
		var key [32]byte
		key[0], key[1] = byte(i), byte(i>>8)
		b.store(key, &pathEntry{})
	}
	if n := b.cacheLen(); n != maxCachedPaths {
		t.Fatalf("cache holds %d entries, want the bound %d", n, maxCachedPaths)
	}
}

// chainKey must not be fooled by moving bytes between certificates.
func TestChainKeyIsLengthPrefixed(t *testing.T) {
	a := chainKey([][]byte{[]byte("ab"), []byte("c")})
	b := chainKey([][]byte{[]byte("a"), []byte("bc")})
	if a == b {
		t.Fatal("different chains share a cache key")
	}
}
