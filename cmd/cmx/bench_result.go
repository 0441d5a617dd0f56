package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
)

// benchResult is the JSON file of one run (bench/results/<time>-<size>.json).
type benchResult struct {
	Format    string      `json:"format"` // "cmx.bench.v1"
	StartedAt time.Time   `json:"started_at"`
	Command   string      `json:"command"`
	Machine   machineInfo `json:"machine"`
	Setup     setupInfo   `json:"setup"`
	Floor     struct {
		Runs       []floorRun `json:"runs"`
		MsgsPerSec spread     `json:"msgs_per_sec"`
	} `json:"crypto_floor"`
	Phase1 struct {
		Runs       []phase1Run `json:"runs"`
		Throughput spread      `json:"throughput"`     // delivered msg/s
		Ratio      spread      `json:"ratio"`          // throughput / crypto floor of the same repetition
		CPURatio   spread      `json:"cpu_ratio"`      // JOSE CPU per message / both gateways' CPU per message
		CPUPerMsg  spread      `json:"cpu_ms_per_msg"` // both gateways
	} `json:"phase1"`
	Phase2     *phase2Result      `json:"phase2,omitempty"`
	PeakRSSMiB map[string]float64 `json:"peak_rss_mib"` // VmHWM of each process over the whole run
	// StatusReadCPUMs is the US gateway's CPU per status read, measured
	// apart: the measurement's own load is status_reads_per_msg times this.
	StatusReadCPUMs float64 `json:"status_read_cpu_ms"`
	// ScrapeCPUMs is the US gateway's CPU per GET /metrics, measured apart.
	ScrapeCPUMs float64           `json:"metrics_scrape_cpu_ms,omitempty"`
	Profiles    map[string]string `json:"profiles,omitempty"`
}

// setupInfo is what ran.
type setupInfo struct {
	BodyBytes   int    `json:"body_bytes"`
	Type        string `json:"type"`
	Direction   string `json:"direction"`
	Count       int    `json:"count"`
	Concurrency int    `json:"concurrency"`
	Reps        int    `json:"reps"`
	Idempotency bool   `json:"idempotency_key"`
	Completion  string `json:"phase1_completion"` // "metrics" or "status polling"
	Stack       string `json:"stack"`
	Measurement string `json:"measurement"`
}

// phase1Run is one flat-out run.
type phase1Run struct {
	Messages     int `json:"messages"` // accepted (202)
	Delivered    int `json:"delivered"`
	SubmitErrors int `json:"submit_errors"`
	Incomplete   int `json:"incomplete"` // accepted but not final when the phase ended
	// Throughput is delivered messages over the time from the first
	// submission to the last delivered status. IngressRate is 202s per
	// second while submitting: flat out, the ingress runs ahead of the
	// pipeline and the outbox absorbs the difference.
	WallSeconds     float64 `json:"wall_seconds"`
	Throughput      float64 `json:"throughput"`
	IngressRate     float64 `json:"ingress_rate"`
	FloorMsgsPerSec float64 `json:"floor_msgs_per_sec"`
	Ratio           float64 `json:"ratio"`
	// CPURatio is the floor's CPU per message over both gateways' CPU per
	// message: the share of the gateways' work that is the JOSE work itself.
	// It hardly depends on what else the machine runs.
	CPURatio          float64            `json:"cpu_ratio"`
	CPUSeconds        map[string]float64 `json:"cpu_seconds"`
	CPUMsPerMsg       map[string]float64 `json:"cpu_ms_per_msg"`
	StatusReadsPerMsg float64            `json:"status_reads_per_msg"` // while measuring
	MetricsScrapes    int                `json:"metrics_scrapes"`      // while measuring
	Ingress           latency            `json:"ingress"`
	// IdleCPUMsPerSec is both gateways' CPU while nothing was sent (during
	// the floor measurement before this run), in ms per second.
	IdleCPUMsPerSec float64 `json:"idle_cpu_ms_per_s"`
}

// phase2Result is the fixed-load run.
type phase2Result struct {
	OfferedRate    float64 `json:"offered_rate"`
	AchievedRate   float64 `json:"achieved_rate"` // submissions per second actually sent
	Messages       int     `json:"messages"`
	Delivered      int     `json:"delivered"`
	SubmitErrors   int     `json:"submit_errors"`
	Incomplete     int     `json:"incomplete"`
	LateDispatches int     `json:"late_dispatches"` // sent > 5 ms after their scheduled time
	// Latencies from the start of the request: the 202, the webhook call at
	// the receiving agency, and the sender's status reading delivered
	// (resolution: the poll gap, at most PollGapMs).
	Ingress           latency            `json:"ingress"`
	AgencyArrival     latency            `json:"agency_arrival"`
	RoundTrip         latency            `json:"round_trip"`
	PollGapMs         float64            `json:"poll_gap_max_ms"`
	StatusReadsPerMsg float64            `json:"status_reads_per_msg"`
	CPUMsPerMsg       map[string]float64 `json:"cpu_ms_per_msg"`
}

func newResult(o *benchOpts, bodyBytes int) *benchResult {
	dir := "US→JP"
	if o.both {
		dir = "US→JP and JP→US alternately"
	}
	r := &benchResult{Format: "cmx.bench.v1", StartedAt: time.Now().UTC().Truncate(time.Second), Machine: machine(),
		Command: strings.TrimSpace("cmx bench " + strings.Join(o.args, " ")),
		Setup: setupInfo{
			BodyBytes: bodyBytes, Type: string(benchType), Direction: dir, Count: o.count, Concurrency: o.conc, Reps: o.reps, Idempotency: o.idem,
			Stack: "two cmxd processes, embedded NATS JetStream (file store, sync_interval always) joined by a mutual-TLS leafnode; " +
				"accepted and delivered receipts; webhook agencies answering 204 at once; tracing as shipped (spans sampled, no exporter; clients send a sampled traceparent)",
			Completion: "status polling",
			Measurement: "delivered = the sender's status is delivered (its delivered receipt verified). Phase 1 ends at the " +
				"first 100 ms scrape of the senders' GET /metrics whose cmx_messages_total{direction=outbound,status=delivered} " +
				"has grown by every accepted message; each message's status is read once afterwards to check it. Phase 2 reads " +
				"each message's status (GET /v1/messages/{id}) from when the receiving agency's webhook saw it, with gaps of at " +
				"most 4 ms. CPU from /proc/<pid>/stat (utime+stime) over the phase, peak RSS from VmHWM",
		},
	}
	return r
}

// summarise fills the medians and spreads.
func (r *benchResult) summarise() {
	var floor, thr, ratio, cpuRatio, cpu []float64
	for _, f := range r.Floor.Runs {
		floor = append(floor, f.MsgsPerSec)
	}
	for _, p := range r.Phase1.Runs {
		thr, ratio, cpu = append(thr, p.Throughput), append(ratio, p.Ratio), append(cpu, p.CPUMsPerMsg["gateways"])
		cpuRatio = append(cpuRatio, p.CPURatio)
	}
	r.Phase1.CPURatio = spreadOf(cpuRatio)
	r.Floor.MsgsPerSec, r.Phase1.Throughput, r.Phase1.Ratio, r.Phase1.CPUPerMsg = spreadOf(floor), spreadOf(thr), spreadOf(ratio), spreadOf(cpu)
}

// counts is what every phase reports about completion.
type counts struct {
	messages, delivered, incomplete, reads int
	first, last, lastAck                   time.Time // first request, last delivered, last 202
}

func countsOf(t *tracker) counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := counts{messages: len(t.all), reads: int(t.reads.Load())}
	for _, m := range t.all {
		if c.first.IsZero() || m.start.Before(c.first) {
			c.first = m.start
		}
		if m.acked.After(c.lastAck) {
			c.lastAck = m.acked
		}
		switch {
		case m.status == api.StatusDelivered:
			c.delivered++
			if m.done.After(c.last) {
				c.last = m.done
			}
		case m.status == "":
			c.incomplete++
		}
	}
	return c
}

// cpuPerMsg is CPU milliseconds per delivered message of each process.
func cpuPerMsg(s0, s1 procSample, n int) (secs, perMsg map[string]float64) {
	secs, perMsg = map[string]float64{}, map[string]float64{}
	names := [3]string{"us", "jp", "bench"}
	for i, name := range names {
		d := (s1.cpu[i] - s0.cpu[i]).Seconds()
		secs[name] = round3(d)
		if n > 0 {
			perMsg[name] = round3(d * 1000 / float64(n))
		}
	}
	if n > 0 {
		perMsg["gateways"] = round3(perMsg["us"] + perMsg["jp"])
	}
	return secs, perMsg
}

func phase1Of(t *tracker, s0, s1 procSample, end time.Time) *phase1Run {
	c := countsOf(t)
	if !end.IsZero() {
		c.last = end
	}
	p := &phase1Run{Messages: c.messages, Delivered: c.delivered, Incomplete: c.incomplete, SubmitErrors: len(t.submitErrs)}
	if c.delivered > 0 {
		wall := c.last.Sub(c.first).Seconds()
		p.WallSeconds, p.Throughput = round3(wall), round3(float64(c.delivered)/wall)
		if c.lastAck.After(c.first) {
			p.IngressRate = round3(float64(c.messages) / c.lastAck.Sub(c.first).Seconds())
		}
		p.StatusReadsPerMsg = round3(float64(c.reads) / float64(c.delivered))
	}
	p.CPUSeconds, p.CPUMsPerMsg = cpuPerMsg(s0, s1, c.delivered)
	p.Ingress = latencyOf(durations(t, func(m *msgState) (time.Time, time.Time) { return m.start, m.acked }))
	return p
}

func phase2Of(t *tracker, s0, s1 procSample, poll pollPolicy) *phase2Result {
	c := countsOf(t)
	p := &phase2Result{Messages: c.messages, Delivered: c.delivered, Incomplete: c.incomplete, SubmitErrors: len(t.submitErrs),
		PollGapMs: ms(poll.max)}
	if c.delivered > 0 {
		p.StatusReadsPerMsg = round3(float64(c.reads) / float64(c.delivered))
	}
	_, p.CPUMsPerMsg = cpuPerMsg(s0, s1, c.delivered)
	p.Ingress = latencyOf(durations(t, func(m *msgState) (time.Time, time.Time) { return m.start, m.acked }))
	p.AgencyArrival = latencyOf(durations(t, func(m *msgState) (time.Time, time.Time) { return m.start, m.arrived }))
	p.RoundTrip = latencyOf(durations(t, func(m *msgState) (time.Time, time.Time) {
		if m.status != api.StatusDelivered {
			return m.start, time.Time{}
		}
		return m.start, m.done
	}))
	return p
}

// durations collects to-from of every accepted message where both are set.
func durations(t *tracker, span func(*msgState) (time.Time, time.Time)) []time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	var d []time.Duration
	for _, m := range t.all {
		if from, to := span(m); !from.IsZero() && !to.IsZero() {
			d = append(d, to.Sub(from))
		}
	}
	return d
}

// printResult prints the one-screen summary.
func printResult(w io.Writer, r *benchResult, path string) {
	m, s := r.Machine, r.Setup
	fmt.Fprintf(w, "\ncmx bench — %s body of %s, %s, %d clients\n", sizeName(s.BodyBytes), s.Type, s.Direction, s.Concurrency)
	fmt.Fprintf(w, "machine: %d × %s, %s %s, load %s → %s\n\n", m.NProc, m.CPUModel, m.Go, m.OS, m.LoadAvgStart, m.LoadAvgEnd)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%d × (crypto floor, phase 1 of %d msgs)\tmedian\tmin\tmax\t\n", s.Reps, s.Count)
	row := func(name string, sp spread, format string) {
		fmt.Fprintf(tw, "%s\t"+format+"\t"+format+"\t"+format+"\t\n", name, sp.Median, sp.Min, sp.Max)
	}
	row("crypto floor, msg/s (all cores)", r.Floor.MsgsPerSec, "%.0f")
	row("phase 1 flat out, delivered msg/s", r.Phase1.Throughput, "%.1f")
	row("RATIO phase 1 / floor", r.Phase1.Ratio, "%.3f")
	row("CPU ms per message, both gateways", r.Phase1.CPUPerMsg, "%.2f")
	row("cpu ratio: JOSE CPU / gateways' CPU", r.Phase1.CPURatio, "%.3f")
	tw.Flush()
	if n := len(r.Phase1.Runs); n > 0 {
		last := r.Phase1.Runs[n-1]
		fmt.Fprintf(w, "  last rep: CPU ms/msg US %.2f  JP %.2f  bench %.2f; ingress %.0f msg/s, p50 %.1f ms p99 %.1f ms\n",
			last.CPUMsPerMsg["us"], last.CPUMsPerMsg["jp"], last.CPUMsPerMsg["bench"], last.IngressRate, last.Ingress.P50, last.Ingress.P99)
		fmt.Fprintf(w, "  idle gateways (no load): %.1f ms CPU per second\n", last.IdleCPUMsPerSec)
		load := last.StatusReadsPerMsg*r.StatusReadCPUMs + float64(last.MetricsScrapes)*r.ScrapeCPUMs/float64(max(last.Delivered, 1))
		fmt.Fprintf(w, "  measurement load: %.1f status reads/msg × %.3f ms + %d scrapes of /metrics × %.3f ms = %.1f%% of the gateways' CPU\n",
			last.StatusReadsPerMsg, r.StatusReadCPUMs, last.MetricsScrapes, r.ScrapeCPUMs, share(load, last.CPUMsPerMsg["gateways"]))
		if f := r.Floor.Runs; len(f) > 0 {
			o := f[len(f)-1].OpMicros
			fmt.Fprintf(w, "  floor: %.2f ms CPU per message; per op (µs, all cores busy): seal %.0f  open %.0f  receipt sign %.0f  receipt verify %.0f\n",
				f[len(f)-1].CPUMsPerMsg, o["seal"], o["open"], o["receipt_sign"], o["receipt_verify"])
		}
	}
	fmt.Fprintf(w, "  peak RSS (MiB): US %.1f  JP %.1f  bench %.1f\n", r.PeakRSSMiB["us"], r.PeakRSSMiB["jp"], r.PeakRSSMiB["bench"])
	if p := r.Phase2; p != nil {
		fmt.Fprintf(w, "\nphase 2: %d msgs at %.1f msg/s offered (%.1f sent), %d late dispatches\n", p.Messages, p.OfferedRate, p.AchievedRate, p.LateDispatches)
		if p.SubmitErrors > 0 {
			fmt.Fprintf(w, "  WARNING: %d submissions refused (see the gateways' logs): the latencies below are of the others only\n", p.SubmitErrors)
		}
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "latency, ms\tp50\tp90\tp99\tmax\t")
		for _, l := range []struct {
			name string
			l    latency
		}{{"ingress (202)", p.Ingress}, {"at receiving agency", p.AgencyArrival}, {"round trip (delivered at sender)", p.RoundTrip}} {
			fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t\n", l.name, l.l.P50, l.l.P90, l.l.P99, l.l.Max)
		}
		tw.Flush()
		fmt.Fprintf(w, "  round trip resolution ≤ %.0f ms (status poll gap); %.1f status reads/msg (%.0f%% of gateway CPU); CPU ms/msg US %.2f JP %.2f\n",
			p.PollGapMs, p.StatusReadsPerMsg, share(p.StatusReadsPerMsg*r.StatusReadCPUMs, p.CPUMsPerMsg["gateways"]), p.CPUMsPerMsg["us"], p.CPUMsPerMsg["jp"])
	}
	for _, party := range []string{"us", "jp"} {
		if f := r.Profiles[party]; f != "" {
			fmt.Fprintf(w, "profile %s: go tool pprof -top %s\n", strings.ToUpper(party), f)
		}
		if f := r.Profiles[party+"-heap"]; f != "" {
			fmt.Fprintf(w, "heap at peak RSS %s: go tool pprof -sample_index=inuse_space -top %s (figures: %s.txt)\n", strings.ToUpper(party), f, f)
		}
	}
	fmt.Fprintf(w, "\nresults: %s\n", path)
}

// share is 100·part/whole, 0 when whole is 0.
func share(part, whole float64) float64 {
	if whole <= 0 {
		return 0
	}
	return 100 * part / whole
}

// writeTimeline writes one line per message of a phase: microseconds from
// the phase's first request to its start, 202, webhook arrival and
// delivered status at the sender (-1 when not seen), and its status reads.
func writeTimeline(path string, t *tracker) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var first time.Time
	for _, m := range t.all {
		if first.IsZero() || m.start.Before(first) {
			first = m.start
		}
	}
	us := func(at time.Time) int64 {
		if at.IsZero() {
			return -1
		}
		return at.Sub(first).Microseconds()
	}
	var b strings.Builder
	b.WriteString("id,from,start_us,accepted_us,arrived_us,delivered_us,status,reads\n")
	for _, m := range t.all {
		fmt.Fprintf(&b, "%s,%d,%d,%d,%d,%d,%s,%d\n", m.id, m.side, us(m.start), us(m.acked), us(m.arrived), us(m.done), m.status, m.reads)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
