package main

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"

	"github.com/cmx-exchange/cmx/gateway"
)

// Bounds of the GC percentage the governor sets.
const (
	minGCPercent = 25  // the heap may always grow a quarter over what is live
	maxGCPercent = 100 // Go's default: never more headroom than without a target
)

// memoryGovernor keeps the Go runtime's memory near a target (the soft
// limit limits.memory_bytes). After every garbage collection it sets the
// soft memory limit and the GC percentage from the heap that collection
// found live (memoryPolicy):
//
//   - live heap up to the target: GOGC=100 under a memory limit of the
//     target, raised to 1.25 × live + the runtime's other memory when that is
//     more. The heap is collected more often, and freed pages go back to the
//     OS, rather than the heap grow to twice its live size. At 1 KiB bodies
//     under a backlog the live heap is 60–90 MiB, mostly the JetStream
//     store's block caches (8 MiB per stream, 4 MiB per bucket), so GOGC=100
//     let the heap reach 180 MiB.
//   - above the target: no memory limit, and a GC percentage from 25 at the
//     target to Go's 100 at 1.5 times the target. A limit that follows a
//     live heap several times larger than any small target (256 KiB bodies)
//     returns pages to the OS only to fault them back in: it cost 20–30 % of
//     the throughput there; this costs about 5 %.
type memoryGovernor struct {
	target      int64
	prevPercent int   // the GC percentage before the governor started
	prevLimit   int64 // the memory limit before
	stopped     atomic.Bool
}

// gcSentinel is allocated unreachable so that its cleanup runs after the
// next garbage collection. It holds a pointer, so it is never a tiny
// allocation (whose cleanup might never run).
type gcSentinel struct{ _ *int }

// memoryTarget is the target cmxd governs the heap to, from the config and
// the environment; ok is false when the runtime is left as configured by
// GOGC and GOMEMLIMIT.
func memoryTarget(limits gateway.LimitsConfig, env func(string) string) (target int64, ok bool) {
	switch {
	case limits.MemoryBytes < 0:
		return 0, false
	case limits.MemoryBytes > 0:
		return limits.MemoryBytes, true
	case env("GOGC") != "" || env("GOMEMLIMIT") != "":
		return 0, false // the operator tuned the runtime directly
	default:
		return gateway.DefaultMemoryBytes, true
	}
}

// startMemoryGovernor governs the heap towards target until stop, which
// restores the GC percentage and memory limit in force before.
func startMemoryGovernor(target int64) (stop func()) {
	g := &memoryGovernor{target: target, prevPercent: debug.SetGCPercent(maxGCPercent), prevLimit: debug.SetMemoryLimit(-1)}
	g.adjust()
	g.arm()
	return func() {
		g.stopped.Store(true)
		debug.SetGCPercent(g.prevPercent)
		debug.SetMemoryLimit(g.prevLimit)
	}
}

// arm makes the next garbage collection call adjust, and arm again.
func (g *memoryGovernor) arm() {
	runtime.AddCleanup(&gcSentinel{}, func(g *memoryGovernor) {
		if g.stopped.Load() {
			return
		}
		g.adjust()
		g.arm()
	}, g)
}

var memGovernorMetrics = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
}

func (g *memoryGovernor) adjust() {
	s := make([]metrics.Sample, len(memGovernorMetrics))
	for i, name := range memGovernorMetrics {
		s[i].Name = name
	}
	metrics.Read(s)
	v := func(i int) uint64 { return s[i].Value.Uint64() }
	heap := v(2) + v(3) + v(4) + v(5)
	nonHeap := uint64(0)
	if total := v(1); total > heap {
		nonHeap = total - heap
	}
	percent, limit := memoryPolicy(g.target, v(0), nonHeap)
	debug.SetGCPercent(percent)
	debug.SetMemoryLimit(limit)
}

// memoryPolicy is the GC percentage and the soft memory limit for a live
// heap of live bytes, with nonHeap bytes of runtime memory besides the heap
// (stacks, metadata), governed towards target.
func memoryPolicy(target int64, live, nonHeap uint64) (percent int, limit int64) {
	l, t := float64(live), float64(target)
	if l <= t {
		need := l*(1+minGCPercent/100.0) + float64(nonHeap)
		return maxGCPercent, max(target, int64(need))
	}
	// From 25 % headroom at the target to Go's default at 1.5 times it.
	p := minGCPercent + (maxGCPercent-minGCPercent)*(l-t)/(t/2)
	return int(min(math.Ceil(p), maxGCPercent)), math.MaxInt64
}
