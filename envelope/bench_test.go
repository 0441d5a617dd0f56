package envelope

import (
	"encoding/json"
	"strings"
	"testing"
)

// benchSizes are the body sizes of the sub-benchmarks.
var benchSizes = []struct {
	name string
	n    int
}{{"1KiB", 1 << 10}, {"16KiB", 16 << 10}, {"256KiB", 256 << 10}}

// benchClaims returns valid claims whose body is n bytes of JSON.
func benchClaims(n int) *Claims {
	c := testClaims()
	c.Body = json.RawMessage(`{"data":"` + strings.Repeat("x", n-len(`{"data":""}`)) + `"}`)
	return c
}

func BenchmarkSeal(b *testing.B) {
	f := newFixture(b)
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			c := benchClaims(sz.n)
			b.ReportAllocs()
			b.SetBytes(int64(sz.n))
			for b.Loop() {
				if _, err := Seal(c, f.us.Signing, f.jp.Encryption.Cert); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	f := newFixture(b)
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			env := f.seal(b, benchClaims(sz.n)).Envelope
			b.ReportAllocs()
			b.SetBytes(int64(sz.n))
			for b.Loop() {
				if _, err := f.jpOpener.Open(env, testNow); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Receipts carry digests, not bodies: their cost does not depend on the
// message size, so they have no size sub-benchmarks.
func BenchmarkIssueReceipt(b *testing.B) {
	f := newFixture(b)
	r := testReceipt(StatusDelivered)
	b.ReportAllocs()
	for b.Loop() {
		r.ID = ""
		if _, err := IssueReceipt(r, f.jp.Signing); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyReceipt(b *testing.B) {
	f := newFixture(b)
	tok, err := IssueReceipt(testReceipt(StatusDelivered), f.jp.Signing)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.usReceipt.Verify(tok, testNow); err != nil {
			b.Fatal(err)
		}
	}
}
