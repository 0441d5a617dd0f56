package certs_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/certs/certstest"
)

// newEncryptionKey issues an encryption key valid from at-1min.
func newEncryptionKey(t *testing.T, p *certs.PKI, at time.Time) *certs.DecryptionKey {
	t.Helper()
	id, err := p.IssueEncryption(certs.PKIOptions{Now: at})
	if err != nil {
		t.Fatal(err)
	}
	dk, err := certs.ParseDecryptionKey(certs.EncodeCertificates(id.Chain...), mustEncodeKey(t, id))
	if err != nil {
		t.Fatal(err)
	}
	return dk
}

func mustEncodeKey(t *testing.T, id *certs.Identity) []byte {
	t.Helper()
	b, err := certs.EncodePrivateKey(id.Key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// C-14: a message in flight across a rotation is encrypted to the retired
// key. It still decrypts while the key is inside the outage budget, and is
// ErrKeyRetired after.
func TestKeySet_C14_retired_key(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	budget := 7 * 24 * time.Hour
	retiredAt := certstest.Now.Add(30 * 24 * time.Hour)
	old := newEncryptionKey(t, us, certstest.Now)
	old.RetiredAt = retiredAt
	cur := newEncryptionKey(t, us, retiredAt)
	ks, err := certs.NewKeySet(0, old, cur)
	if err != nil {
		t.Fatal(err)
	}
	if ks.Current().KID != cur.KID {
		t.Fatalf("Current = %s, want the new key", ks.Current().KID)
	}
	if ks.Budget() != budget {
		t.Fatalf("Budget = %v, want the 7-day default", ks.Budget())
	}
	tests := []struct {
		name string
		kid  string
		now  time.Time
		want error
	}{
		{name: "retired_key_just_after_retirement", kid: old.KID, now: retiredAt.Add(time.Second)},
		{name: "retired_key_at_end_of_budget", kid: old.KID, now: retiredAt.Add(budget)},
		{name: "retired_key_after_budget", kid: old.KID, now: retiredAt.Add(budget + time.Second), want: certs.ErrKeyRetired},
		{name: "current_key_long_after", kid: cur.KID, now: retiredAt.Add(10 * budget)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ks.Lookup(tt.kid, tt.now)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Lookup err = %v, want %v", err, tt.want)
			}
			if err == nil {
				assertECDHWorks(t, k)
			}
		})
	}
}

// assertECDHWorks runs one ECDH-ES key agreement against the key's
// certificate, as the JWE layer would: the looked-up key really decrypts.
func assertECDHWorks(t *testing.T, k *certs.DecryptionKey) {
	t.Helper()
	pub, err := k.Cert.PublicKey.(*ecdsa.PublicKey).ECDH()
	if err != nil {
		t.Fatal(err)
	}
	eph, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sent, err := eph.ECDH(pub)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := k.Key.(*ecdsa.PrivateKey).ECDH()
	if err != nil {
		t.Fatal(err)
	}
	got, err := priv.ECDH(eph.PublicKey())
	if err != nil || !bytes.Equal(sent, got) {
		t.Fatalf("ECDH with the looked-up key disagrees (%v)", err)
	}
}

// Lookup treats kid as foreign input: anything but a known base64url kid of
// at most 64 characters is ErrUnknownKey.
func TestKeySetLookupHostileKID(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	k := newEncryptionKey(t, us, certstest.Now)
	ks, err := certs.NewKeySet(time.Hour, k)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		kid  string
	}{
		{name: "path_traversal", kid: "../../etc/passwd"},
		{name: "dot_dot", kid: "../../etc"},
		{name: "10kB", kid: strings.Repeat("A", 10<<10)},
		{name: "65_characters", kid: strings.Repeat("A", 65)},
		{name: "non_utf8", kid: "\xff\xfe\xfd"},
		{name: "empty", kid: ""},
		{name: "nul", kid: k.KID[:10] + "\x00" + k.KID[11:]},
		{name: "std_base64", kid: strings.Repeat("+/", 20)},
		{name: "padded", kid: k.KID + "="},
		{name: "space", kid: " " + k.KID},
		{name: "unknown_well_formed", kid: strings.Repeat("A", 43)},
		{name: "prefix_of_known", kid: k.KID[:42]},
		{name: "case_changed", kid: strings.ToLower(k.KID)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ks.Lookup(tt.kid, certstest.Now)
			if !errors.Is(err, certs.ErrUnknownKey) || got != nil {
				t.Fatalf("Lookup = %v, %v; want ErrUnknownKey", got, err)
			}
		})
	}
	if got, err := ks.Lookup(k.KID, certstest.Now); err != nil || got.KID != k.KID {
		t.Fatalf("Lookup(known) = %v, %v", got, err)
	}
}

func TestNewKeySet(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	a := newEncryptionKey(t, us, certstest.Now)
	b := newEncryptionKey(t, us, certstest.Now.Add(time.Hour))
	retired := *a
	retired.RetiredAt = certstest.Now
	wrongKID := *b
	wrongKID.KID = a.KID
	noKID := *b
	noKID.KID = ""

	tests := []struct {
		name        string
		budget      time.Duration
		keys        []*certs.DecryptionKey
		wantErr     string
		wantCurrent string
	}{
		{name: "newest_is_current", keys: []*certs.DecryptionKey{a, b}, wantCurrent: b.KID},
		{name: "order_does_not_matter", keys: []*certs.DecryptionKey{b, a}, wantCurrent: b.KID},
		{name: "retired_is_never_current", keys: []*certs.DecryptionKey{&retired, b}, wantCurrent: b.KID},
		{name: "empty_kid_filled_in", keys: []*certs.DecryptionKey{&noKID}, wantCurrent: b.KID},
		{name: "no_keys", wantErr: "no current"},
		{name: "only_retired", keys: []*certs.DecryptionKey{&retired}, wantErr: "no current"},
		{name: "duplicate_kid", keys: []*certs.DecryptionKey{a, a}, wantErr: "duplicate kid"},
		{name: "kid_not_of_certificate", keys: []*certs.DecryptionKey{&wrongKID}, wantErr: "does not match"},
		{name: "nil_key", keys: []*certs.DecryptionKey{nil}, wantErr: "no certificate"},
		{name: "negative_budget", budget: -time.Hour, keys: []*certs.DecryptionKey{a}, wantErr: "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks, err := certs.NewKeySet(tt.budget, tt.keys...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := ks.Current().KID; got != tt.wantCurrent {
				t.Fatalf("Current = %s, want %s", got, tt.wantCurrent)
			}
			if got := ks.Keys(); len(got) != len(tt.keys) || got[0] != ks.Current() {
				t.Fatalf("Keys = %d keys, current first = %v", len(got), got[0] == ks.Current())
			}
		})
	}
	// The key set copies its input: retiring the caller's struct later does
	// not change it.
	ks, err := certs.NewKeySet(0, a)
	if err != nil {
		t.Fatal(err)
	}
	mutated := *a
	a.RetiredAt = certstest.Now
	defer func() { *a = mutated }()
	if _, err := ks.Lookup(a.KID, certstest.Now.Add(30*24*time.Hour)); err != nil {
		t.Fatalf("Lookup after caller mutation: %v", err)
	}
}

func FuzzKeySetLookup(f *testing.F) {
	us := certstest.NewPKI(f, "US")
	k, err := certs.NewKeySet(0, &certs.DecryptionKey{Cert: us.Encryption.Cert, Key: us.Encryption.Key})
	if err != nil {
		f.Fatal(err)
	}
	kid := us.Encryption.KID
	for _, s := range []string{kid, "", "../../etc", "\xff", strings.Repeat("A", 65), kid + "A"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := k.Lookup(s, certstest.Now)
		if (err == nil) != (s == kid) || (err == nil && got.KID != kid) {
			t.Fatalf("Lookup(%q) = %v, %v", s, got, err)
		}
		if err != nil && !errors.Is(err, certs.ErrUnknownKey) {
			t.Fatalf("Lookup(%q) err = %v, want ErrUnknownKey", s, err)
		}
	})
}
