package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"
)

// memSample is where the process's memory was at one moment: the resident
// set from /proc/self/status and the Go runtime's own accounts of it.
type memSample struct {
	at         time.Duration // since the profiler started
	rssKiB     int64         // VmRSS
	fileKiB    int64         // RssFile: mapped file pages (the binary's code and data)
	live       uint64        // heap marked live by the last GC
	values     []metrics.Sample
	goroutines uint64
}

// memClasses are the runtime/metrics read at every sample, in report order.
// Together they explain the mapped memory of a pure-Go process; RSS is that
// less what is mapped but not touched.
var memClasses = []string{
	"/memory/classes/heap/objects:bytes",         // live and not yet swept heap objects
	"/memory/classes/heap/unused:bytes",          // heap spans' free slots
	"/memory/classes/heap/free:bytes",            // free pages not yet returned to the OS
	"/memory/classes/heap/released:bytes",        // returned to the OS (not resident)
	"/memory/classes/heap/stacks:bytes",          // goroutine stacks
	"/memory/classes/os-stacks:bytes",            // OS thread stacks
	"/memory/classes/metadata/other:bytes",       // GC metadata and the like
	"/memory/classes/metadata/mspan/inuse:bytes", // span structures
	"/memory/classes/profiling/buckets:bytes",    // profiling
	"/memory/classes/other:bytes",                // everything else the runtime maps
	"/memory/classes/total:bytes",                // all mapped by the runtime
	"/gc/heap/live:bytes",                        // heap marked live by the last GC
	"/gc/heap/goal:bytes",                        // heap size the next GC aims at
	"/gc/gomemlimit:bytes",                       // the soft memory limit in force
	"/gc/gogc:percent",                           // the GC percentage in force
	"/gc/cycles/total:gc-cycles",                 // GC cycles so far
	"/cpu/classes/gc/total:cpu-seconds",          // CPU the GC took (runtime's estimate)
	"/cpu/classes/gc/mark/idle:cpu-seconds",      // of which on otherwise idle processors
	"/cpu/classes/scavenge/total:cpu-seconds",    // CPU returning memory to the OS
	"/cpu/classes/user:cpu-seconds",              // CPU running Go code (estimate)
}

// memProfiler samples memory every interval. Each time the live heap
// passes its previous peak by more than 5 %, it writes the heap profile to
// path: the file left at the end shows what was live at (nearly) the
// largest live heap of the run. At stop it writes path+".txt": the sample
// at the peak resident set, the one at the peak live heap and the last one.
type memProfiler struct {
	path     string
	start    time.Time
	peakRSS  memSample
	peakLive memSample
	wrote    uint64 // live heap when the last profile was written
	err      error
}

// startMemProfile starts sampling; stop ends it, writes the summary and
// returns the first error met.
func startMemProfile(path string, interval time.Duration) (stop func() error, err error) {
	f, err := os.Create(path) // fail now, not at the end, on a bad path
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	p := &memProfiler{path: path, start: time.Now()}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.sampleLoop(ctx, interval) })
	return func() error {
		cancel()
		wg.Wait()
		return p.writeSummary(p.sample())
	}, nil
}

func (p *memProfiler) sampleLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s := p.sample()
		if s.rssKiB > p.peakRSS.rssKiB {
			p.peakRSS = s
		}
		if s.live > p.peakLive.live {
			p.peakLive = s
		}
		if p.err == nil && s.live > p.wrote+p.wrote/20 {
			p.err = p.writeHeap()
			p.wrote = s.live
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *memProfiler) sample() memSample {
	s := memSample{at: time.Since(p.start)}
	s.rssKiB, s.fileKiB = procRSSKiB()
	s.values = make([]metrics.Sample, len(memClasses)+1)
	for i, name := range memClasses {
		s.values[i].Name = name
	}
	s.values[len(memClasses)].Name = "/sched/goroutines:goroutines"
	metrics.Read(s.values)
	s.goroutines = s.values[len(memClasses)].Value.Uint64()
	s.values = s.values[:len(memClasses)]
	for _, v := range s.values {
		if v.Name == "/gc/heap/live:bytes" {
			s.live = v.Value.Uint64()
		}
	}
	return s
}

// writeHeap replaces the profile file atomically, so a reader never sees
// half of one.
func (p *memProfiler) writeHeap() error {
	tmp := p.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, p.path)
}

func (p *memProfiler) writeSummary(last memSample) error {
	var b strings.Builder
	for _, s := range []struct {
		what string
		s    memSample
	}{{"peak RSS", p.peakRSS}, {"peak live heap (profile)", p.peakLive}, {"at shutdown", last}} {
		fmt.Fprintf(&b, "%s: at %.1fs, VmRSS %.1f MiB (RssFile %.1f MiB), %d goroutines\n",
			s.what, s.s.at.Seconds(), float64(s.s.rssKiB)/1024, float64(s.s.fileKiB)/1024, s.s.goroutines)
		for _, v := range s.s.values {
			if v.Value.Kind() == metrics.KindFloat64 {
				fmt.Fprintf(&b, "  %-46s %10.2f\n", v.Name, v.Value.Float64())
				continue
			}
			n := v.Value.Uint64()
			switch {
			case !strings.HasSuffix(v.Name, ":bytes"):
				fmt.Fprintf(&b, "  %-46s %10d\n", v.Name, n)
			case n >= 1<<62:
				fmt.Fprintf(&b, "  %-46s %10s\n", v.Name, "none")
			default:
				fmt.Fprintf(&b, "  %-46s %10.1f MiB\n", v.Name, float64(n)/(1<<20))
			}
		}
	}
	err := os.WriteFile(p.path+".txt", []byte(b.String()), 0o644)
	if p.err != nil {
		return p.err
	}
	return err
}

// procRSSKiB is this process's resident set size and the file-backed part
// of it, in KiB, from /proc/self/status; zeros where unknown (not Linux).
func procRSSKiB() (rss, file int64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	kib := func(v string) int64 {
		n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		return n
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			rss = kib(v)
		} else if v, ok := strings.CutPrefix(sc.Text(), "RssFile:"); ok {
			file = kib(v)
		}
	}
	return rss, file
}
