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
	// minHeadroom is the heap growth over the live heap that the limit
	// always leaves (GOGC=25 at worst).
	minHeadroom = 0.25
	// maxOvershoot: when the live heap plus minHeadroom and the runtime's
	// other memory passes the target times this, the work needs more memory
	// than the target and the governor steps aside (no limit, GOGC=100).
	maxOvershoot = 1.25
	// maxGCShare is the share of the process's busy CPU the collector may
	// take (averaged over recent cycles) before the governor gives it more
	// headroom. In the benchmark it takes 3–5 % with no limit; holding the
	// target takes 5–10 % at 1 KiB bodies, 10–13 % at 16 KiB.
	maxGCShare = 0.12
	maxRelax   = 4    // headroom is multiplied by at most this much
	shareAlpha = 0.2  // weight of the last cycle in the average GC share
	relaxStep  = 1.25 // relax grows or shrinks by this factor per cycle
)

// memoryGovernor keeps the Go runtime's memory near a target (the soft
// target limits.memory_bytes) while that is cheap. After every garbage
// collection it sets the soft memory limit from the heap that collection
// found live (memoryPolicy): the target, or the live heap plus a quarter
// and the runtime's other memory if that is more. Under the limit the heap
// is collected more often, and freed pages go back to the OS, rather than
// the heap grow to twice its live size (GOGC=100). Under a backlog of
// 1 KiB bodies the live heap is 60–90 MiB, mostly the JetStream store's
// block caches (8 MiB per stream, 4 MiB per bucket), and GOGC=100 let the
// heap reach 180 MiB.
//
// Two things make it step back, because a limit the work does not fit in
// costs far more CPU than it saves memory (a fixed GOMEMLIMIT of 128 MiB cut
// the throughput at 256 KiB bodies by two thirds):
//
//   - a live heap that needs more than maxOvershoot × the target: no limit;
//   - the collector taking over maxGCShare of the busy CPU: the headroom
//     over the live heap is multiplied by relax, up to maxRelax, and shrinks
//     back once the share is under 80 % of that.
type memoryGovernor struct {
	target    int64
	prevLimit int64 // the memory limit before the governor started
	stopped   atomic.Bool

	// Owned by adjust, which runs on one goroutine at a time (the first call
	// before arm, the others each from the cleanup the previous one armed).
	relax        float64 // ≥ 1: the multiplier of the headroom
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
// restores the memory limit in force before.
func startMemoryGovernor(target int64) (stop func()) {
	g := &memoryGovernor{target: target, relax: 1, prevLimit: debug.SetMemoryLimit(-1)}
	g.adjust()
	g.arm()
	return func() {
		g.stopped.Store(true)
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
	debug.SetMemoryLimit(memoryPolicy(g.target, u(0), nonHeap, g.relax))
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

// memoryPolicy is the soft memory limit for a live heap of live bytes, with
// nonHeap bytes of runtime memory besides the heap (stacks, metadata),
// governed towards target, the headroom over the live heap multiplied by
// relax (≥ 1); math.MaxInt64 is no limit.
func memoryPolicy(target int64, live, nonHeap uint64, relax float64) int64 {
	l, t, nh := float64(live), float64(target), float64(nonHeap)
	if l*(1+minHeadroom)+nh > t*maxOvershoot {
		return math.MaxInt64 // the work needs more than the target: step aside
	}
	goal := max(t-nh, l*(1+minHeadroom)) // the heap's size at the next GC
	if need := l + (goal-l)*relax + nh; need < 1<<62 {
		return int64(need)
	}
	return math.MaxInt64
}
