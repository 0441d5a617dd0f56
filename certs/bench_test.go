package certs_test

import (
	"testing"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/certs/certstest"
)

// BenchmarkVerify measures one chain check per message: "cached" is the
// steady state (the peer sends the same chain every time), "uncached" the
// first message after a restart or a rollover.
func BenchmarkVerify(b *testing.B) {
	us := certstest.NewPKI(b, "US")
	opts := certs.VerifyOptions{Role: certs.RoleSigning, Now: certstest.Now, SignedAt: certstest.Now}
	chain := us.Signing.Chain
	header := x5c(chain)
	b.Run("cached", func(b *testing.B) {
		bundle := certstest.Bundle(b, "US")
		for b.Loop() {
			if err := bundle.Verify(chain, opts); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached_x5c", func(b *testing.B) {
		bundle := certstest.Bundle(b, "US")
		for b.Loop() {
			if _, err := bundle.VerifyX5C(header, opts); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("uncached", func(b *testing.B) {
		for b.Loop() {
			bundle, err := certs.NewBundle("US", us.Root)
			if err != nil {
				b.Fatal(err)
			}
			if err := bundle.Verify(chain, opts); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("uncached_x5c", func(b *testing.B) {
		for b.Loop() {
			bundle, err := certs.NewBundle("US", us.Root)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := bundle.VerifyX5C(header, opts); err != nil {
				b.Fatal(err)
			}
		}
	})
}
