package main

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"

	"github.com/cmx-exchange/cmx/gateway"
)

// The governor's constants.
const (
	minGCPercent = 25  // the heap may always grow a quarter over what is live
	maxGCPercent = 100 // Go's default: never more headroom than without a target
	// maxGCShare is the share of the process's busy CPU the collector may
	// take (averaged over recent cycles) before the governor gives it more
	// headroom. In the benchmark it takes 3–5 % with GOGC=100; holding the
	// target takes 5–9 % at 1 KiB bodies, 10–13 % at 16 KiB, up to 19 % at
	// 256 KiB.
	maxGCShare = 0.12
	maxRelax   = 4    // headroom is multiplied by at most this much
	shareAlpha = 0.2  // weight of the last cycle in the average GC share
	relaxStep  = 1.25 // relax grows or shrinks by this factor per cycle
)

// memoryGovernor keeps the Go runtime's memory near a target (the soft
// target limits.memory_bytes) without letting the collector eat the CPU.
// After every garbage collection it sets the soft memory limit and the GC
// percentage from the heap that collection found live (memoryPolicy):
//
//   - live heap up to the target: GOGC=100 under a memory limit of the
//     target, raised to 1.25 × live + the runtime's other memory when that is
//     more. The heap is collected more often, and freed pages go back to the
//     OS, rather than the heap grow to twice its live size. Under a backlog
//     of 1 KiB bodies the live heap is 60–90 MiB, mostly the JetStream
//     store's block caches (8 MiB per stream, 4 MiB per bucket), and
//     GOGC=100 let the heap reach 180 MiB.
//   - above the target: no memory limit, and a GC percentage from 25 at the
//     target to Go's 100 at 1.5 times the target. A limit that follows a
//     live heap several times larger than any small target (256 KiB bodies)
//     returns pages to the OS only to fault them back in: that cost 20–30 %
//     of the throughput.
//
// Whatever the heap, when the collector's share of the busy CPU (averaged
// over recent cycles) passes maxGCShare, the headroom over the live heap is
// multiplied by relax, up to maxRelax, and shrinks back once the share is
// under half that: memory is traded for CPU only while it is cheap. (A fast
// stream of 16 KiB bodies allocates enough that holding the target cost
// 10 % of the throughput, 256 KiB bodies 5–15 %.)
type memoryGovernor struct {
	target      int64
	prevPercent int   // the GC percentage before the governor started
	prevLimit   int64 // the memory limit before
	stopped     atomic.Bool

	// Owned by adjust, which runs on one goroutine at a time (the first call
	// before arm, the others each from the cleanup the previous one armed).
	relax        float64 // ≥ 1: the multiplier of the policy's headroom
	gcShare      float64 // moving average of the GC's share of busy CPU
	lastGC, last float64 // GC and busy CPU-seconds at the previous adjust
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
	g := &memoryGovernor{target: target, relax: 1, prevPercent: debug.SetGCPercent(maxGCPercent), prevLimit: debug.SetMemoryLimit(-1)}
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
	// The collector's CPU that other work could have used: not the mark
	// workers that run on otherwise idle processors.
	"/cpu/classes/gc/mark/assist:cpu-seconds",
	"/cpu/classes/gc/mark/dedicated:cpu-seconds",
	"/cpu/classes/gc/pause:cpu-seconds",
	"/cpu/classes/scavenge/total:cpu-seconds",
	"/cpu/classes/user:cpu-seconds",
}

func (g *memoryGovernor) adjust() {
	s := make([]metrics.Sample, len(memGovernorMetrics))
	for i, name := range memGovernorMetrics {
		s[i].Name = name
	}
	metrics.Read(s)
	u := func(i int) uint64 { return s[i].Value.Uint64() }
	f := func(i int) float64 { return s[i].Value.Float64() }
	heap := u(2) + u(3) + u(4) + u(5)
	nonHeap := uint64(0)
	if total := u(1); total > heap {
		nonHeap = total - heap
	}
	gc := f(6) + f(7) + f(8) + f(9)
	g.relax = g.nextRelax(gc, gc+f(10))
	percent, limit := memoryPolicy(g.target, u(0), nonHeap, g.relax)
	debug.SetGCPercent(percent)
	debug.SetMemoryLimit(limit)
}

// nextRelax updates the average GC share with the CPU-seconds the GC and
// the whole process spent since the previous call, and returns the relax
// factor for it.
func (g *memoryGovernor) nextRelax(gc, busy float64) float64 {
	dGC, dBusy := gc-g.lastGC, busy-g.last
	g.lastGC, g.last = gc, busy
	if dBusy > 0 && dGC >= 0 {
		g.gcShare = (1-shareAlpha)*g.gcShare + shareAlpha*min(dGC/dBusy, 1)
	}
	switch {
	case g.gcShare > maxGCShare:
		return min(g.relax*relaxStep, maxRelax)
	case g.gcShare < maxGCShare*0.8:
		return max(g.relax/relaxStep, 1)
	default:
		return g.relax
	}
}

// memoryPolicy is the GC percentage and the soft memory limit for a live
// heap of live bytes, with nonHeap bytes of runtime memory besides the heap
// (stacks, metadata), governed towards target, the headroom over the live
// heap multiplied by relax (≥ 1).
func memoryPolicy(target int64, live, nonHeap uint64, relax float64) (percent int, limit int64) {
	l, t := float64(live), float64(target)
	if l <= t {
		goal := max(t-float64(nonHeap), l*(1+minGCPercent/100.0)) // the heap's size at the next GC
		need := l + (goal-l)*relax + float64(nonHeap)
		if need >= 1<<62 {
			return maxGCPercent, math.MaxInt64
		}
		return maxGCPercent, int64(need)
	}
	// From 25 % headroom at the target to Go's default at 1.5 times it.
	p := (minGCPercent + (maxGCPercent-minGCPercent)*(l-t)/(t/2)) * relax
	return int(min(math.Ceil(p), maxGCPercent)), math.MaxInt64
}
