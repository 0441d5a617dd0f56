package main

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/cmx-exchange/cmx/gateway"
)

const mib = 1 << 20

func TestMemoryPolicy(t *testing.T) {
	const target = 112 * mib
	tests := []struct {
		name      string
		live      uint64
		nonHeap   uint64
		relax     float64
		wantLimit int64
	}{
		{name: "nothing collected yet", live: 0, nonHeap: 0, wantLimit: target},
		{name: "small live heap: the target", live: 20 * mib, nonHeap: 8 * mib, wantLimit: target},
		{name: "live heap near the target: a quarter of headroom", live: 88 * mib, nonHeap: 8 * mib, wantLimit: 118 * mib},
		{name: "the most it holds: 1.25 times the target", live: 104 * mib, nonHeap: 8 * mib, wantLimit: 138 * mib},
		{name: "more: steps aside", live: 106 * mib, nonHeap: 8 * mib, wantLimit: math.MaxInt64},
		{name: "far more", live: 2 << 30, nonHeap: 8 * mib, wantLimit: math.MaxInt64},
		{name: "relaxed, small live heap: headroom to the target doubled", live: 20 * mib, nonHeap: 8 * mib, relax: 2, wantLimit: 196 * mib},
		{name: "relaxed near the target: half of live as headroom", live: 88 * mib, nonHeap: 8 * mib, relax: 2, wantLimit: 140 * mib},
		{name: "relaxed does not move where it steps aside", live: 106 * mib, nonHeap: 8 * mib, relax: maxRelax, wantLimit: math.MaxInt64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.relax == 0 {
				tc.relax = 1
			}
			if got := memoryPolicy(target, tc.live, tc.nonHeap, tc.relax); got != tc.wantLimit {
				t.Errorf("memoryPolicy(%d MiB live, %d MiB other, relax %v) = %.2f MiB; want %.2f MiB",
					tc.live/mib, tc.nonHeap/mib, tc.relax, float64(got)/mib, float64(tc.wantLimit)/mib)
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
	prevLimit := debug.SetMemoryLimit(-1)
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

	func() {
		ballast := make([]byte, 3*target) // a live heap three times the target: no limit
		for i := range ballast {
			ballast[i] = byte(i)
		}
		waitFor(t, "no limit over a large live heap", func() bool {
			runtime.GC()
			return debug.SetMemoryLimit(-1) == math.MaxInt64
		})
		runtime.KeepAlive(ballast)
	}()

	waitFor(t, "a limit again", limited)

	stop()
	stopped = true
	if got := debug.SetMemoryLimit(-1); got != prevLimit {
		t.Errorf("after stop: memory limit %d, want %d", got, prevLimit)
	}
}
