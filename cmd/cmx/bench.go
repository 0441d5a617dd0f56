package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// benchOpts are the flags of cmx bench.
type benchOpts struct {
	size              int
	count, p2count    int
	conc, reps        int
	rate              float64
	both, idem, quick bool
	floorTime, stall  time.Duration
	out, cmxd, dir    string
	profile           string
	args              []string
}

func parseBenchFlags(args []string, stderr io.Writer) (*benchOpts, error) {
	fs := flag.NewFlagSet("cmx bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &benchOpts{args: args}
	size := fs.String("size", "1KiB", "message body size: 1KiB, 16KiB, 256KiB or a byte count")
	fs.IntVar(&o.count, "count", 0, "phase 1 messages per repetition (0: by size, about 10 s each here)")
	fs.IntVar(&o.p2count, "p2-count", 0, "phase 2 messages (0: 20 s at the offered rate, at most --count)")
	fs.IntVar(&o.conc, "concurrency", 64, "concurrent submitting clients")
	fs.IntVar(&o.reps, "reps", 3, "repetitions of crypto floor + phase 1 (median and spread)")
	fs.Float64Var(&o.rate, "rate", 0, "phase 2 offered load in messages/s (0: half the median phase 1 throughput)")
	fs.BoolVar(&o.both, "both", false, "send in both directions (US→JP and JP→US alternately) instead of US→JP")
	fs.BoolVar(&o.idem, "idempotency", false, "send an Idempotency-Key with every submission")
	fs.BoolVar(&o.quick, "quick", false, "a tiny run for tests: 20 messages, 1 repetition, short floor")
	fs.DurationVar(&o.floorTime, "floor-time", 2*time.Second, "duration of one crypto floor measurement")
	fs.DurationVar(&o.stall, "stall", 30*time.Second, "give up on a phase after this long without progress")
	fs.StringVar(&o.out, "out", filepath.Join("bench", "results"), "directory of the JSON results")
	fs.StringVar(&o.cmxd, "cmxd", "", "cmxd binary to run (default: build ./cmd/cmxd with the go tool)")
	fs.StringVar(&o.dir, "dir", "", "working directory, kept afterwards (default: a temporary one, removed)")
	fs.StringVar(&o.profile, "profile", "", "write each gateway's CPU and peak heap profiles of one phase 1 run into `DIR` (one repetition, no phase 2)")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	var err error
	if o.size, err = parseSize(*size); err != nil {
		return nil, err
	}
	o.defaults()
	if o.count < 1 || o.conc < 1 || o.reps < 1 || o.rate < 0 || o.p2count < 0 {
		return nil, fmt.Errorf("%w: --count, --concurrency and --reps must be positive, --rate and --p2-count not negative", errUsage)
	}
	return o, nil
}

func (o *benchOpts) defaults() {
	if o.quick {
		o.count, o.reps, o.floorTime = cmpOr(o.count, 20), 1, min(o.floorTime, 300*time.Millisecond)
		o.p2count = cmpOr(o.p2count, 20)
	}
	if o.profile != "" {
		o.reps = 1
	}
	if o.count == 0 {
		switch {
		case o.size <= 4<<10:
			o.count = 3000
		case o.size <= 64<<10:
			o.count = 1500
		default:
			o.count = 400
		}
	}
}

func cmpOr(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseBenchFlags(args, stderr)
	if err != nil {
		return err
	}
	b, err := newBench(ctx, o, stderr)
	if err != nil {
		return err
	}
	res, runErr := b.run(ctx)
	stopErr := b.close()
	if res == nil {
		return errors.Join(runErr, stopErr)
	}
	path, err := writeResult(o, res)
	if err != nil {
		return errors.Join(runErr, err)
	}
	printResult(stdout, res, path)
	return errors.Join(runErr, stopErr)
}

// bench is one run of the benchmark.
type bench struct {
	o      *benchOpts
	log    io.Writer
	body   []byte
	kit    *floorKit
	st     *stack
	sub    *submitter
	tmpDir string   // removed at close
	last   *tracker // of the last phase 1 run, for readCost
	phase  int      // phase 1 runs so far (the warm-up is 1)
	// byMetrics: phase 1 watches the delivered counters of GET /metrics
	// instead of reading each message's status while it runs.
	byMetrics bool
}

// timeline keeps the per-message times of a phase in the working
// directory when it is kept (--dir).
func (b *bench) timeline(name string, t *tracker) {
	if b.o.dir == "" {
		return
	}
	if err := writeTimeline(filepath.Join(b.o.dir, name+".csv"), t); err != nil {
		b.logf("timeline %s: %v", name, err)
	}
}

func newBench(ctx context.Context, o *benchOpts, log io.Writer) (*bench, error) {
	body, err := benchBody(o.size)
	if err != nil {
		return nil, err
	}
	b := &bench{o: o, log: log, body: body, sub: newSubmitter(o.conc, o.idem)}
	if b.kit, err = newFloorKit(body); err != nil {
		return nil, err
	}
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "cmx-bench-"); err != nil {
			return nil, err
		}
		b.tmpDir = dir
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cmxd := o.cmxd
	if cmxd == "" {
		b.logf("building cmxd")
		if cmxd, err = buildCmxd(ctx, dir); err != nil {
			b.close()
			return nil, err
		}
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			b.close()
			return nil, err
		}
		if o.profile, err = filepath.Abs(o.profile); err != nil {
			b.close()
			return nil, err
		}
	}
	b.logf("starting two gateways (separate cmxd processes, embedded NATS, sync always, leafnode)")
	if b.st, err = startStack(ctx, cmxd, dir, o.profile, body, outboxBytes(o, len(body))); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

// outboxBytes sizes each gateway's outbox for the run. The outbox keeps
// every envelope with its signed message for the outage budget (evidence),
// so a run of large messages would fill the 1 GiB default and measure 503
// outbox-full answers instead of the exchange: the messages of the whole
// run, at about four times the body each (both JOSE layers are base64 of
// base64), twice over.
func outboxBytes(o *benchOpts, body int) int64 {
	msgs := int64(50 + o.reps*o.count + max(o.p2count, o.count)) // warm-up, phase 1, phase 2
	return max(1<<30, 2*msgs*int64(4*body+16<<10))
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: "+format+"\n", args...)
}

func (b *bench) close() error {
	var err error
	if b.st != nil {
		err = b.st.stop()
		b.st = nil
	}
	if b.tmpDir != "" {
		_ = os.RemoveAll(b.tmpDir)
		b.tmpDir = ""
	}
	return err
}

// run measures: a warm-up, reps × (crypto floor, phase 1), then phase 2.
func (b *bench) run(ctx context.Context) (*benchResult, error) {
	res := newResult(b.o, len(b.body))
	b.logf("warm-up: %d messages", min(50, b.o.count))
	if _, err := b.phase1(ctx, min(50, b.o.count)); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	if _, err := b.st.sides[0].deliveredCount(ctx); err != nil {
		b.logf("phase 1 completion by status polling: %v", err)
	} else {
		b.byMetrics = true
		res.Setup.Completion = "metrics"
	}
	var errs []error
	for r := range b.o.reps {
		if err := b.repetition(ctx, r, res); err != nil {
			if res.Phase1.Runs == nil {
				return nil, err
			}
			errs = append(errs, err)
			break
		}
	}
	res.summarise()
	if len(errs) == 0 && b.o.profile == "" {
		p2, err := b.phase2(ctx, res.Phase1.Throughput.Median)
		res.Phase2 = p2
		if err != nil {
			errs = append(errs, fmt.Errorf("phase 2: %w", err))
		}
	}
	errs = append(errs, b.finish(ctx, res)...)
	return res, errors.Join(errs...)
}

// repetition measures the crypto floor just before and just after one
// phase 1 run, and their ratio.
func (b *bench) repetition(ctx context.Context, r int, res *benchResult) error {
	idle0, err := b.st.sample()
	if err != nil {
		return err
	}
	before, err := b.kit.measure(ctx, b.o.floorTime/2)
	if err != nil {
		return err
	}
	idle1, err := b.st.sample()
	if err != nil {
		return err
	}
	b.logf("rep %d/%d: phase 1: %d messages flat out", r+1, b.o.reps, b.o.count)
	p1, err := b.phase1(ctx, b.o.count)
	after, ferr := b.kit.measure(ctx, b.o.floorTime/2)
	if ferr != nil {
		return errors.Join(err, ferr)
	}
	fr := before.merge(after)
	res.Floor.Runs = append(res.Floor.Runs, *fr)
	if p1 != nil {
		p1.FloorMsgsPerSec = round3(fr.MsgsPerSec)
		p1.Ratio = round3(p1.Throughput / fr.MsgsPerSec)
		p1.IdleCPUMsPerSec = round3((idle1.cpu[0] + idle1.cpu[1] - idle0.cpu[0] - idle0.cpu[1]).Seconds() * 1000 / before.Seconds)
		if g := p1.CPUMsPerMsg["gateways"]; g > 0 {
			p1.CPURatio = round3(fr.CPUMsPerMsg / g)
		}
		res.Phase1.Runs = append(res.Phase1.Runs, *p1)
		b.logf("rep %d/%d: %.1f msg/s delivered, crypto floor %.0f msg/s, ratio %.3f", r+1, b.o.reps, p1.Throughput, fr.MsgsPerSec, p1.Ratio)
	}
	if err != nil {
		return fmt.Errorf("phase 1 rep %d: %w", r+1, err)
	}
	return nil
}

// finish records peak memory and, unless profiling (the profiles should
// show the phase, not the calibrations), what the measurement itself costs.
func (b *bench) finish(ctx context.Context, res *benchResult) []error {
	var errs []error
	if s, err := b.st.sample(); err == nil {
		res.PeakRSSMiB = map[string]float64{"us": mib(s.hwm[0]), "jp": mib(s.hwm[1]), "bench": mib(s.hwm[2])}
	}
	res.Machine.LoadAvgEnd = loadAvg()
	if b.o.profile != "" {
		res.Profiles = map[string]string{}
		for _, party := range []string{"us", "jp"} {
			res.Profiles[party] = filepath.Join(b.o.profile, party+"-cpu.pprof")
			res.Profiles[party+"-heap"] = filepath.Join(b.o.profile, party+"-heap.pprof")
		}
		return nil
	}
	if cost, err := b.readCost(ctx, 2000); err == nil {
		res.StatusReadCPUMs = cost
	} else {
		errs = append(errs, err)
	}
	if b.byMetrics {
		if cost, err := b.scrapeCost(ctx, 200); err == nil {
			res.ScrapeCPUMs = cost
		} else {
			errs = append(errs, err)
		}
	}
	return errs
}

func mib(b int64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }

// phase1 sends n messages flat out and measures throughput and CPU.
func (b *bench) phase1(ctx context.Context, n int) (*phase1Run, error) {
	if _, err := b.st.waitQuiet(ctx, 10*time.Second); err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	policy := pollPolicy{first: 2 * time.Millisecond, max: 200 * time.Millisecond, firstLeg: 1, gapLeg: 0.5, workers: 8}
	if b.byMetrics {
		policy.workers = 0 // no status reads while measuring
	}
	t := newTracker(b.st, n, policy)
	t.run(pctx)
	var base int64
	var err error
	if b.byMetrics {
		if base, err = b.delivered(pctx); err != nil {
			return nil, err
		}
	}
	s0, err := b.st.sample()
	if err != nil {
		return nil, err
	}
	submitted := make(chan struct{})
	go func() {
		flatOut(pctx, t, b.sub, n, b.o.conc, b.o.both)
		close(submitted)
	}()
	var end time.Time
	var scrapes int
	var waitErr error
	if b.byMetrics {
		end, scrapes, waitErr = b.watchDelivered(pctx, t, submitted, base)
	} else {
		<-submitted
		waitErr = t.wait(pctx, b.o.stall)
	}
	s1, err := b.st.sample()
	if err != nil {
		return nil, err
	}
	<-submitted
	if b.byMetrics && waitErr == nil {
		waitErr = t.verify(pctx, b.o.stall) // outside the measured window
	}
	cancel()
	b.last = t
	b.phase++
	b.timeline(fmt.Sprintf("phase1-%d", b.phase), t)
	p := phase1Of(t, s0, s1, end)
	p.MetricsScrapes = scrapes
	return p, waitErr
}

// readCost measures the CPU one status read costs the sending gateway (the
// measurement's own load): n reads of messages phase 1 delivered, from as
// many workers as phase 2 polls with, against the US gateway's CPU time.
func (b *bench) readCost(ctx context.Context, n int) (float64, error) {
	var ids []string
	if b.last != nil {
		b.last.mu.Lock()
		for _, m := range b.last.all {
			if m.side == 0 && m.status != "" {
				ids = append(ids, m.id)
			}
		}
		b.last.mu.Unlock()
	}
	if len(ids) == 0 {
		return 0, errors.New("status read cost: no delivered message to read")
	}
	s0, err := b.st.sample()
	if err != nil {
		return 0, err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(n) && ctx.Err() == nil; i = next.Add(1) - 1 {
				_, _ = b.st.sides[0].messageStatus(ctx, ids[int(i)%len(ids)])
			}
		})
	}
	wg.Wait()
	s1, err := b.st.sample()
	if err != nil {
		return 0, err
	}
	return round3((s1.cpu[0] - s0.cpu[0]).Seconds() * 1000 / float64(n)), nil
}

// phase2 offers a fixed load and measures latency.
func (b *bench) phase2(ctx context.Context, p1 float64) (*phase2Result, error) {
	rate := b.o.rate
	if rate == 0 {
		rate = p1 / 2
	}
	if rate <= 0 {
		return nil, errors.New("no phase 1 throughput to derive the offered rate from; pass --rate")
	}
	n := b.o.p2count
	if n == 0 {
		n = min(b.o.count, max(10, int(rate*20)))
	}
	b.logf("phase 2: %d messages at %.1f msg/s offered", n, rate)
	if waited, err := b.st.waitQuiet(ctx, 10*time.Second); err != nil {
		return nil, err
	} else if waited > time.Second {
		b.logf("phase 2: waited %.1f s for the gateways to finish earlier work", waited.Seconds())
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	poll := pollPolicy{first: time.Millisecond, max: 4 * time.Millisecond, firstLeg: 0.8, gapLeg: 0.25, workers: 8}
	t := newTracker(b.st, n, poll)
	t.run(pctx)
	s0, err := b.st.sample()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	late := paced(pctx, t, b.sub, n, b.o.conc, rate, b.o.both)
	sendSecs := time.Since(start).Seconds()
	waitErr := t.wait(pctx, b.o.stall)
	s1, err := b.st.sample()
	cancel()
	if err != nil {
		return nil, err
	}
	b.timeline("phase2", t)
	p2 := phase2Of(t, s0, s1, poll)
	p2.OfferedRate, p2.LateDispatches = round3(rate), late
	p2.AchievedRate = round3(float64(p2.Messages) / sendSecs)
	return p2, waitErr
}

// machineInfo says where the figures were measured.
type machineInfo struct {
	NProc        int    `json:"nproc"`
	CPUModel     string `json:"cpu_model"`
	Go           string `json:"go"`
	OS           string `json:"os"`
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
}

func machine() machineInfo {
	m := machineInfo{NProc: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH, LoadAvgStart: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// loadAvg is the 1, 5 and 15 minute load averages: the machine is shared.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// writeResult writes the JSON result into o.out and returns its path.
func writeResult(o *benchOpts, res *benchResult) (string, error) {
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return "", err
	}
	name := res.StartedAt.UTC().Format("20060102T150405Z") + "-" + sizeName(o.size)
	if o.profile != "" {
		name += "-profile"
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(o.out, name+".json")
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}
