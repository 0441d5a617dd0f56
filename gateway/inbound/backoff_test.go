package inbound_test

import (
	"math"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/gateway/inbound"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		name       string
		n          uint64
		retryAfter time.Duration
		want       time.Duration
	}{
		{name: "attempt 0 counts as the first", n: 0, want: time.Second},
		{name: "first", n: 1, want: time.Second},
		{name: "second", n: 2, want: 5 * time.Second},
		{name: "third", n: 3, want: 30 * time.Second},
		{name: "fourth", n: 4, want: 2 * time.Minute},
		{name: "fifth", n: 5, want: 10 * time.Minute},
		{name: "sixth", n: 6, want: 30 * time.Minute},
		{name: "past the steps", n: 1000, want: 30 * time.Minute},
		{name: "largest count", n: math.MaxUint64, want: 30 * time.Minute},
		{name: "count past the int range", n: 1<<63 + 1, want: 30 * time.Minute},
		{name: "retryAfter raises", n: 1, retryAfter: 42 * time.Second, want: 42 * time.Second},
		{name: "retryAfter below the step", n: 3, retryAfter: time.Second, want: 30 * time.Second},
		{name: "retryAfter capped at an hour", n: 2, retryAfter: 3 * time.Hour, want: time.Hour},
		{name: "negative retryAfter ignored", n: 2, retryAfter: -time.Minute, want: 5 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := inbound.Backoff(tc.n, tc.retryAfter); got != tc.want {
				t.Fatalf("Backoff(%d, %v) = %v, want %v", tc.n, tc.retryAfter, got, tc.want)
			}
		})
	}
}

// TestBackoffMonotone checks that the delay never shrinks as attempts grow
// and stays within (0, 1h], for any retryAfter.
func TestBackoffMonotone(t *testing.T) {
	counts := []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 100, math.MaxUint32, 1 << 62, 1 << 63, 1<<63 + 1, math.MaxUint64}
	for _, retryAfter := range []time.Duration{0, time.Second, 3 * time.Minute, 2 * time.Hour} {
		prev := time.Duration(0)
		for _, n := range counts {
			d := inbound.Backoff(n, retryAfter)
			if d < prev || d <= 0 || d > time.Hour {
				t.Fatalf("Backoff(%d, %v) = %v after %v: not monotone within (0, 1h]", n, retryAfter, d, prev)
			}
			if d < retryAfter && d != time.Hour {
				t.Fatalf("Backoff(%d, %v) = %v: below retryAfter", n, retryAfter, d)
			}
			prev = d
		}
	}
}
