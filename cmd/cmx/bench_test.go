package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/envelope"
)

// TestBenchQuick runs the whole benchmark on a tiny count (two cmxd
// processes built from this module) and checks the JSON result is sane. It
// asserts no timing, only that every figure was measured.
func TestBenchQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmxd and runs two gateway processes")
	}
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"bench", "--quick", "--count", "20", "--out", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("cmx bench exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	files, err := filepath.Glob(filepath.Join(out, "*-1KiB.json"))
	if err != nil || len(files) != 1 {
		t.Fatalf("want one result file in %s, have %v (%v)", out, files, err)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var r benchResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	p1, p2 := r.Phase1, r.Phase2
	checks := []struct {
		name string
		ok   bool
	}{
		{"body bytes", r.Setup.BodyBytes == 1024},
		{"one repetition", len(p1.Runs) == 1 && len(r.Floor.Runs) == 1},
		{"all 20 delivered in phase 1", len(p1.Runs) == 1 && p1.Runs[0].Delivered == 20 && p1.Runs[0].Incomplete == 0},
		{"throughput > 0", p1.Throughput.Median > 0},
		{"floor > 0", r.Floor.MsgsPerSec.Median > 0},
		{"ratio > 0", p1.Ratio.Median > 0},
		{"CPU per message > 0", p1.CPUPerMsg.Median > 0},
		{"phase 2 ran", p2 != nil},
		{"phase 2 all delivered", p2 != nil && p2.Delivered == p2.Messages && p2.Messages == 20},
		{"ingress p99 ≥ p50 > 0", p2 != nil && p2.Ingress.P50 > 0 && p2.Ingress.P99 >= p2.Ingress.P50},
		{"round trip p99 ≥ p50 ≥ agency arrival p50", p2 != nil && p2.RoundTrip.P99 >= p2.RoundTrip.P50 && p2.RoundTrip.P50 >= p2.AgencyArrival.P50},
		{"peak RSS of both gateways", r.PeakRSSMiB["us"] > 0 && r.PeakRSSMiB["jp"] > 0},
		{"machine described", r.Machine.NProc > 0 && r.Machine.Go != ""},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: not so in %s", c.name, b)
		}
	}
	if !bytes.Contains(stdout.Bytes(), []byte("RATIO phase 1 / floor")) {
		t.Errorf("summary table missing:\n%s", stdout.String())
	}
}

func TestBenchBody(t *testing.T) {
	tests := []struct {
		name string
		size int
		want error
	}{
		{name: "1KiB", size: 1 << 10},
		{name: "16KiB", size: 16 << 10},
		{name: "20000 bytes, the last all-ASCII size range", size: 20000},
		{name: "64KiB", size: 64 << 10},
		{name: "256KiB", size: 256 << 10},
		{name: "below the smallest valid body", size: 100, want: errBodySize},
		{name: "beyond what the schema allows", size: 1 << 20, want: errBodySize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := benchBody(tt.size)
			if !errors.Is(err, tt.want) {
				t.Fatalf("benchBody(%d): error %v, want %v", tt.size, err, tt.want)
			}
			if tt.want != nil {
				return
			}
			if len(b) != tt.size {
				t.Errorf("len = %d, want %d", len(b), tt.size)
			}
			if err := envelope.ValidateBody(benchType, b); err != nil {
				t.Errorf("body does not validate: %v", err)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int
		err  error
	}{
		{in: "1KiB", want: 1024},
		{in: "256KiB", want: 256 << 10},
		{in: "1500", want: 1500},
		{in: "1MiB", want: 1 << 20},
		{in: "1KB", err: errUsage},
		{in: "0", err: errUsage},
		{in: "-5KiB", err: errUsage},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if !errors.Is(err, tt.err) || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestLatencyAndSpread(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	l := latencyOf(d)
	if l.N != 100 || l.P50 != 50 || l.P90 != 90 || l.P99 != 99 || l.Max != 100 {
		t.Errorf("latencyOf(1..100 ms) = %+v", l)
	}
	if got := latencyOf(nil); got != (latency{}) {
		t.Errorf("latencyOf(nil) = %+v", got)
	}
	s := spreadOf([]float64{3, 1, 2, 10})
	if s.Median != 2.5 || s.Min != 1 || s.Max != 10 || s.RelSpread != 3.6 {
		t.Errorf("spreadOf = %+v", s)
	}
}
