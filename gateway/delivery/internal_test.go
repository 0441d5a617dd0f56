package delivery

import (
	"math"
	"net/http"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const limit = 5 * time.Minute
	for _, tc := range []struct {
		name   string
		value  string
		want   time.Duration
		wantOK bool
	}{
		{name: "absent", value: "", wantOK: false},
		{name: "seconds", value: "120", want: 2 * time.Minute, wantOK: true},
		{name: "zero", value: "0", want: 0, wantOK: true},
		{name: "spaces", value: " 7 ", want: 7 * time.Second, wantOK: true},
		{name: "F-11_86400_capped", value: "86400", want: limit, wantOK: true},
		{name: "overflow_capped", value: "99999999999999999999999999", want: limit, wantOK: true},
		{name: "negative", value: "-5", wantOK: false},
		{name: "fraction", value: "1.5", wantOK: false},
		{name: "garbage", value: "soon", wantOK: false},
		{name: "imf_date", value: now.Add(90 * time.Second).Format(http.TimeFormat), want: 90 * time.Second, wantOK: true},
		{name: "rfc850_date", value: now.Add(time.Minute).Format(time.RFC850), want: time.Minute, wantOK: true},
		{name: "date_capped", value: now.Add(48 * time.Hour).Format(http.TimeFormat), want: limit, wantOK: true},
		{name: "date_past", value: now.Add(-time.Hour).Format(http.TimeFormat), want: 0, wantOK: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseRetryAfter(tc.value, now, limit)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tc.value, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestTransientStatus(t *testing.T) {
	transient := map[int]bool{408: true, 409: true, 421: true, 425: true, 429: true, 0: true, 99: true, 600: true, 999: true}
	for code := 500; code <= 599; code++ {
		transient[code] = code != 501
	}
	for code := 0; code <= 1000; code++ {
		if code >= 200 && code <= 299 {
			continue // success, never classified
		}
		want := transient[code] || code < 100 || code > 599
		if got := transientStatus(code); got != want {
			t.Errorf("transientStatus(%d) = %v, want %v", code, got, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	steps := []struct {
		attempt uint64
		base    time.Duration
	}{
		{0, time.Second}, {1, time.Second}, {2, 5 * time.Second}, {3, 30 * time.Second},
		{4, 2 * time.Minute}, {5, 10 * time.Minute}, {6, 30 * time.Minute}, {7, 30 * time.Minute},
		{1000, 30 * time.Minute}, {math.MaxUint64, 30 * time.Minute},
	}
	prev := time.Duration(0)
	for _, s := range steps {
		if got := backoffStep(s.attempt); got != s.base {
			t.Errorf("backoffStep(%d) = %v, want %v", s.attempt, got, s.base)
		}
		if s.base < prev {
			t.Errorf("backoff not monotone at attempt %d", s.attempt)
		}
		prev = s.base
		for range 200 {
			got := Backoff(s.attempt, 0)
			if lo, hi := s.base-s.base/10, s.base+s.base/10; got < lo || got > hi {
				t.Fatalf("Backoff(%d, 0) = %v outside [%v, %v]", s.attempt, got, lo, hi)
			}
		}
	}
	for _, tc := range []struct {
		name       string
		attempt    uint64
		retryAfter time.Duration
		lo, hi     time.Duration
	}{
		{name: "retry_after_honoured", attempt: 1, retryAfter: 5 * time.Minute, lo: 5 * time.Minute, hi: 5*time.Minute + 30*time.Second},
		{name: "retry_after_shorter_than_step", attempt: 6, retryAfter: time.Second, lo: 27 * time.Minute, hi: 33 * time.Minute},
		{name: "retry_after_capped", attempt: 1, retryAfter: 24 * time.Hour, lo: MaxBackoff, hi: MaxBackoff},
		{name: "retry_after_huge", attempt: 1, retryAfter: math.MaxInt64, lo: MaxBackoff, hi: MaxBackoff},
		{name: "near_cap_not_above", attempt: 9, retryAfter: 59 * time.Minute, lo: 59 * time.Minute, hi: MaxBackoff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 200 {
				if got := Backoff(tc.attempt, tc.retryAfter); got < tc.lo || got > tc.hi {
					t.Fatalf("Backoff(%d, %v) = %v outside [%v, %v]", tc.attempt, tc.retryAfter, got, tc.lo, tc.hi)
				}
			}
		})
	}
}

func TestValidNames(t *testing.T) {
	for _, tc := range []struct {
		agency string
		ok     bool
	}{
		{"MHLW", true}, {"DOL-ILAB", true}, {"0", true}, {"A23456789012345678901234567890123"[:32], true},
		{"A234567890123456789012345678901234", false}, {"", false}, {"-X", false}, {"mhlw", false},
		{"MH.LW", false}, {"*", false}, {">", false}, {"MH LW", false}, {"JP:MHLW", false}, {"MHLW\n", false},
	} {
		if got := validAgency(tc.agency); got != tc.ok {
			t.Errorf("validAgency(%q) = %v, want %v", tc.agency, got, tc.ok)
		}
	}
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"0190f5a2-7b3c-7d4e-8f10-123456789abc", true},
		{"0190F5A2-7B3C-7D4E-8F10-123456789ABC", false},
		{"{0190f5a2-7b3c-7d4e-8f10-123456789abc}", false},
		{"0190f5a27b3c7d4e8f10123456789abc", false},
		{"0190f5a2-7b3c-7d4e-8f10-123456789abc.x", false},
		{"0190f5a2-7b3c-7d4e-8f10-123456789abc\n", false},
		{"*", false}, {"", false},
	} {
		if got := validID(tc.id); got != tc.ok {
			t.Errorf("validID(%q) = %v, want %v", tc.id, got, tc.ok)
		}
	}
}
