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
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			percent, limit := memoryPolicy(target, tc.live, tc.nonHeap)
			if percent != tc.wantPercent || limit != tc.wantLimit {
				t.Errorf("memoryPolicy(%d MiB live, %d MiB other) = %d%%, %.2f MiB; want %d%%, %.2f MiB", tc.live/mib, tc.nonHeap/mib,
					percent, float64(limit)/mib, tc.wantPercent, float64(tc.wantLimit)/mib)
			}
		})
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

// TestMemoryGovernor: the governor sets the limit at start, follows a live
// heap that outgrows the target after the next collections, comes back when
// it shrinks, and stop restores the runtime's settings.
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
	waitFor(t, "the target as limit", func() bool { runtime.GC(); return debug.SetMemoryLimit(-1) == target })

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

	waitFor(t, "the target again", func() bool { runtime.GC(); return debug.SetMemoryLimit(-1) == target })

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
