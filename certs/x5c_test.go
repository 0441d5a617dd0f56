package certs_test

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/certs/certstest"
)

// TestVerifyX5C checks the caps and the decoding of a foreign x5c header.
// Count is capped before size, and both before any decoding or parsing.
func TestVerifyX5C(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	peer := certstest.Bundle(t, "US")
	good := x5c(us.Signing.Chain)
	big := certstest.Leaf(t, us, bloat(9<<10))
	garbage := strings.Repeat("!", 20)

	tests := []struct {
		name      string
		x5c       []string
		want      error
		wantCheck string
	}{
		{name: "valid", x5c: good},
		{name: "C-11_five_certificates_not_parsed", x5c: []string{garbage, garbage, garbage, garbage, garbage}, want: certs.ErrChainTooLong, wantCheck: certs.CheckChain},
		{name: "C-11_hundred_certificates", x5c: repeat(good[0], 100), want: certs.ErrChainTooLong, wantCheck: certs.CheckChain},
		{name: "C-11_count_before_size", x5c: []string{strings.Repeat("A", 1<<20), good[1], good[1], good[1], good[1]}, want: certs.ErrChainTooLong},
		{name: "C-11_empty", x5c: nil, want: certs.ErrMalformed, wantCheck: certs.CheckChain},
		{name: "C-11_9kB_certificate", x5c: x5c(big.Chain), want: certs.ErrCertTooLarge, wantCheck: certs.CheckSize},
		{name: "C-11_1MB_not_decoded", x5c: []string{strings.Repeat("!", 1<<20)}, want: certs.ErrCertTooLarge, wantCheck: certs.CheckSize},
		{name: "C-11_9kB_garbage_not_decoded", x5c: []string{base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x30}, 9<<10))}, want: certs.ErrCertTooLarge},
		{name: "C-11_duplicate_certificate", x5c: []string{good[0], good[0]}, want: certs.ErrMalformed, wantCheck: certs.CheckDecode},
		{name: "C-11_loop", x5c: []string{good[0], good[1], good[0]}, want: certs.ErrMalformed},
		{name: "garbage_base64", x5c: []string{garbage}, want: certs.ErrMalformed, wantCheck: certs.CheckDecode},
		{name: "empty_string", x5c: []string{""}, want: certs.ErrMalformed},
		{name: "base64url_alphabet", x5c: []string{toURL(good[0]), good[1]}, want: certs.ErrMalformed},
		{name: "unpadded", x5c: []string{unpadded(t, us.Signing.Chain), good[1]}, want: certs.ErrMalformed},
		{name: "line_break", x5c: []string{good[0][:64] + "\n" + good[0][64:], good[1]}, want: certs.ErrMalformed},
		{name: "not_DER", x5c: []string{base64.StdEncoding.EncodeToString([]byte("not a certificate"))}, want: certs.ErrMalformed},
		{name: "trailing_data_after_DER", x5c: []string{base64.StdEncoding.EncodeToString(append(bytes.Clone(us.Signing.Cert.Raw), 0)), good[1]}, want: certs.ErrMalformed},
		{name: "bad_intermediate", x5c: []string{good[0], garbage}, want: certs.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := peer.VerifyX5C(tt.x5c, certs.VerifyOptions{Role: certs.RoleSigning, Now: certstest.Now})
			checkVerifyErr(t, err, tt.want, tt.wantCheck)
			if tt.want == nil && (len(chain) != len(tt.x5c) || !chain[0].Equal(us.Signing.Cert)) {
				t.Fatalf("returned chain does not match x5c")
			}
		})
	}
}

// VerifyRaw is the DER form (TLS handshakes); it caps the same way.
func TestVerifyRaw(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	peer := certstest.Bundle(t, "US")
	opts := certs.VerifyOptions{Role: certs.RoleTLSClient, Now: certstest.Now}
	raw := [][]byte{us.TLSClient.Cert.Raw, us.Intermediate.Raw}
	chain, err := peer.VerifyRaw(raw, opts)
	if err != nil || !chain[0].Equal(us.TLSClient.Cert) {
		t.Fatalf("VerifyRaw = %v, %v", chain, err)
	}
	// The returned slice is the caller's: changing it does not change the cache.
	chain[0] = nil
	if _, err := peer.VerifyRaw(raw, opts); err != nil {
		t.Fatalf("second VerifyRaw: %v", err)
	}
	if _, err := peer.VerifyRaw([][]byte{make([]byte, certs.MaxCertBytes+1)}, opts); !errors.Is(err, certs.ErrCertTooLarge) {
		t.Fatalf("oversized: err = %v", err)
	}
	if _, err := peer.VerifyRaw(make([][]byte, certs.MaxChainLen+1), opts); !errors.Is(err, certs.ErrChainTooLong) {
		t.Fatalf("too many: err = %v", err)
	}
}

func FuzzVerifyX5C(f *testing.F) {
	us := certstest.NewPKI(f, "US")
	peer := certstest.Bundle(f, "US")
	good := x5c(us.Signing.Chain)
	f.Add(good[0], good[1], "")
	f.Add(good[0], "", "")
	f.Add(good[0], good[0], "")
	f.Add("!!!", "", "")
	f.Add(good[0][:100], good[1], "")
	f.Add(toURL(good[0]), good[1], good[1])
	f.Fuzz(func(t *testing.T, a, b, c string) {
		var in []string
		for _, s := range []string{a, b, c} {
			if s != "" {
				in = append(in, s)
			}
		}
		chain, err := peer.VerifyX5C(in, certs.VerifyOptions{Role: certs.RoleSigning, Now: certstest.Now})
		if err != nil {
			var ve *certs.VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T is not a *VerifyError", err)
			}
			return
		}
		if !chain[0].Equal(us.Signing.Cert) {
			t.Fatalf("accepted a leaf that is not the US signing certificate: %s", chain[0].Subject)
		}
	})
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func toURL(std string) string {
	return strings.NewReplacer("+", "-", "/", "_").Replace(std)
}

// unpadded returns the leaf's base64 without '=' padding; it picks a
// certificate whose length needs padding.
func unpadded(t *testing.T, chain []*x509.Certificate) string {
	t.Helper()
	us := certstest.NewPKI(t, "US")
	for i := 0; i < 50; i++ {
		c := chain[0]
		if i > 0 {
			c = certstest.Leaf(t, us, nil).Cert
		}
		if s := base64.StdEncoding.EncodeToString(c.Raw); strings.HasSuffix(s, "=") {
			return strings.TrimRight(s, "=")
		}
	}
	t.Fatal("no certificate with padded base64 found")
	return ""
}
