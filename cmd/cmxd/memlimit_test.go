package main

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"

	"github.com/cmx-exchange/cmx/gateway"
)

const mib = 1 << 20

func TestMemoryPolicy(t *testing.T) {
	const target = 112 * mib
	tests := []struct {
		name        string
		live        uint64
		nonHeap     uint64
		relax       float64
		wantPercent int
		wantLimit   int64
	}{
		{name: "nothing collected yet", live: 0, nonHeap: 0, wantPercent: 100, wantLimit: target},
		{name: "small live heap: the target", live: 20 * mib, nonHeap: 8 * mib, wantPercent: 100, wantLimit: target},
		{name: "live heap near the target: a quarter of headroom", live: 88 * mib, nonHeap: 8 * mib, wantPercent: 100, wantLimit: 118 * mib},
		{name: "live heap at the target", live: target, nonHeap: 0, wantPercent: 100, wantLimit: 140 * mib},
		{name: "just above: no limit, GOGC=27", live: target + mib, nonHeap: 8 * mib, wantPercent: 27, wantLimit: math.MaxInt64},
		{name: "1.25 times the target", live: 140 * mib, nonHeap: 8 * mib, wantPercent: 63, wantLimit: math.MaxInt64},
		{name: "1.5 times the target: Go's default", live: 168 * mib, nonHeap: 8 * mib, wantPercent: 100, wantLimit: math.MaxInt64},
		{name: "far above", live: 2 << 30, nonHeap: 8 * mib, wantPercent: 100, wantLimit: math.MaxInt64},
		{name: "relaxed, small live heap: headroom to the target doubled", live: 20 * mib, nonHeap: 8 * mib, relax: 2, wantPercent: 100, wantLimit: 196 * mib},
		{name: "relaxed near the target: half of live as headroom", live: 88 * mib, nonHeap: 8 * mib, relax: 2, wantPercent: 100, wantLimit: 140 * mib},
		{name: "relaxed above the target", live: 140 * mib, nonHeap: 8 * mib, relax: 1.5, wantPercent: 94, wantLimit: math.MaxInt64},
		{name: "fully relaxed above the target: Go's default", live: target + mib, nonHeap: 8 * mib, relax: maxRelax, wantPercent: 100, wantLimit: math.MaxInt64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.relax == 0 {
				tc.relax = 1
			}
			percent, limit := memoryPolicy(target, tc.live, tc.nonHeap, tc.relax)
			if percent != tc.wantPercent || limit != tc.wantLimit {
				t.Errorf("memoryPolicy(%d MiB live, %d MiB other) = %d%%, %.2f MiB; want %d%%, %.2f MiB", tc.live/mib, tc.nonHeap/mib,
					percent, float64(limit)/mib, tc.wantPercent, float64(tc.wantLimit)/mib)
			}
		})
	}
}

// TestMemoryRelax: while the collector takes more than maxGCShare of the
// busy CPU, the headroom grows cycle by cycle up to maxRelax; it is held
// while the share stays within 80 % of the cap, and shrinks back to 1 below.
func TestMemoryRelax(t *testing.T) {
	g := &memoryGovernor{relax: 1}
	var gc, busy float64
	cycle := func(gcShare float64) {
		gc, busy = gc+gcShare, busy+1
		g.relax = g.nextRelax(gc, busy)
	}
	cycle(0.02)
	if g.relax != 1 {
		t.Fatalf("relax %v after a cheap cycle, want 1", g.relax)
	}
	for range 30 {
		cycle(0.30)
	}
	if g.relax != maxRelax {
		t.Fatalf("relax %v after 30 cycles at 30 %% GC, want %v", g.relax, maxRelax)
	}
	for range 40 {
		cycle(0.11) // between 80 % of the cap and the cap: held
	}
	if g.relax != maxRelax {
		t.Fatalf("relax %v after 40 cycles at 11 %% GC, want it held at %v", g.relax, maxRelax)
	}
	for range 60 {
		cycle(0.01)
	}
	if g.relax != 1 {
		t.Fatalf("relax %v after 60 cycles at 1 %% GC, want 1", g.relax)
	}
}

func TestMemoryTarget(t *testing.T) {
	tests := []struct {
		name       string
		memory     int64
		env        map[string]string
		wantTarget int64
		wantOK     bool
	}{
		{name: "default", wantTarget: gateway.DefaultMemoryBytes, wantOK: true},
		{name: "configured", memory: 256 * mib, wantTarget: 256 * mib, wantOK: true},
		{name: "configured wins over GOMEMLIMIT", memory: 256 * mib, env: map[string]string{"GOMEMLIMIT": "1GiB"}, wantTarget: 256 * mib, wantOK: true},
		{name: "off", memory: -1},
		{name: "GOGC in the environment", env: map[string]string{"GOGC": "50"}},
		{name: "GOMEMLIMIT in the environment", env: map[string]string{"GOMEMLIMIT": "1GiB"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target, ok := memoryTarget(gateway.LimitsConfig{MemoryBytes: tc.memory}, func(k string) string { return tc.env[k] })
			if target != tc.wantTarget || ok != tc.wantOK {
				t.Errorf("memoryTarget = %d, %v; want %d, %v", target, ok, tc.wantTarget, tc.wantOK)
			}
		})
	}
}

// TestMemoryGovernor: the governor sets the limit at start, lifts it for a
// live heap that outgrows the target after the next collections, sets one
// again when the heap shrinks, and stop restores the runtime's settings.
func TestMemoryGovernor(t *testing.T) {
	const target = 32 * mib
	prevLimit, prevPercent := debug.SetMemoryLimit(-1), gcPercent()
	stop := startMemoryGovernor(target)
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	// Forced collections in a process doing nothing else are all GC CPU: the
	// governor relaxes, so the limit is the target or more, never less.
	limited := func() bool {
		runtime.GC()
		l := debug.SetMemoryLimit(-1)
		return l >= target && l < math.MaxInt64
	}
	if got := debug.SetMemoryLimit(-1); got < target || got == math.MaxInt64 {
		t.Errorf("limit at start %d, want the target %d or a little more", got, int64(target))
	}

	ballast := make([]byte, 3*target) // live heap 1.5 × target and more: no limit, GOGC=100
	for i := range ballast {
		ballast[i] = byte(i)
	}
	waitFor(t, "no limit and GOGC=100 over a large live heap", func() bool {
		runtime.GC()
		return debug.SetMemoryLimit(-1) == math.MaxInt64 && gcPercent() == maxGCPercent
	})
	runtime.KeepAlive(ballast)
	ballast = nil

	waitFor(t, "a limit again", limited)

	stop()
	stopped = true
	if got := debug.SetMemoryLimit(-1); got != prevLimit {
		t.Errorf("after stop: memory limit %d, want %d", got, prevLimit)
	}
	if got := gcPercent(); got != prevPercent {
		t.Errorf("after stop: GC percent %d, want %d", got, prevPercent)
	}
}

func gcPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}
