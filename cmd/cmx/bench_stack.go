package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cmx-exchange/cmx/gateway"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/client"
	"github.com/cmx-exchange/cmx/gateway/pair"
)

// stack is the system under test: two cmxd processes started from the
// configs pair.Prepare wrote, and one webhook receiver standing for the
// receiving agencies (US:USTR and JP:METI), which answers 204 at once.
type stack struct {
	dir   string
	pair  *pair.Pair
	procs [2]*gwProc // US, JP
	recv  *receiver
	sides [2]*benchSide
}

// benchSide is what the load generator needs of one sending side.
type benchSide struct {
	party, peer, agency string
	url, token          string
	submit              []byte // the JSON request, encoded once
	poll                *client.Client
}

// gwProc is one running cmxd.
type gwProc struct {
	party string
	cmd   *exec.Cmd
	done  chan error
}

// buildCmxd builds the gateway binary into dir with the go tool.
func buildCmxd(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "cmxd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/cmx-exchange/cmx/cmd/cmxd")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build cmxd (run from the module, or pass --cmxd): %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// startStack prepares the pair under dir and starts JP (which accepts the
// leafnode), then US, each as its own cmxd process, and waits until both are
// ready and linked. profileDir, if set, receives each gateway's CPU profile,
// its heap profile near its peak resident set and that peak's memory figures.
func startStack(ctx context.Context, cmxd, dir, profileDir string, body []byte, outBytes int64) (*stack, error) {
	recv, err := startReceiver()
	if err != nil {
		return nil, err
	}
	s := &stack{dir: dir, recv: recv}
	s.pair, err = pair.Prepare(pair.Options{Dir: dir, Webhooks: map[string]string{"JP:METI": recv.url(), "US:USTR": recv.url()},
		Tune: func(c *gateway.Config) { c.Limits.MaxOutBytes = outBytes }})
	if err != nil {
		recv.close()
		return nil, err
	}
	for i, side := range []*pair.Side{s.pair.US, s.pair.JP} {
		if s.sides[i], err = newBenchSide(side, body); err != nil {
			s.stop()
			return nil, err
		}
	}
	for _, i := range []int{1, 0} { // JP listens for the leafnode: start it first
		side := []*pair.Side{s.pair.US, s.pair.JP}[i]
		prof := ""
		if profileDir != "" {
			prof = filepath.Join(profileDir, strings.ToLower(side.Party))
		}
		if s.procs[i], err = startGateway(cmxd, side, dir, prof); err != nil {
			s.stop()
			return nil, err
		}
		if err := s.waitReady(ctx, i, time.Minute); err != nil {
			s.stop()
			return nil, err
		}
	}
	if err := s.waitLinked(ctx, time.Minute); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func newBenchSide(side *pair.Side, body []byte) (*benchSide, error) {
	agency := pair.AgencyFor(side.Party, benchType)
	req, err := submitBytes(side.Peer, body)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	return &benchSide{
		party: side.Party, peer: side.Peer, agency: agency, url: side.URL, token: side.Tokens[agency], submit: req,
		poll: &client.Client{BaseURL: side.URL, Token: side.Tokens[agency], HTTP: hc},
	}, nil
}

// startGateway starts cmxd on side's config; its logs go to <party>.log.
// profile, if set, is the path prefix of its profiles.
func startGateway(cmxd string, side *pair.Side, dir, profile string) (*gwProc, error) {
	log, err := os.Create(filepath.Join(dir, strings.ToLower(side.Party)+".log"))
	if err != nil {
		return nil, err
	}
	defer log.Close() // the child holds its own descriptor
	args := []string{"--config", side.ConfigPath}
	if profile != "" {
		args = append(args, "--cpuprofile", profile+"-cpu.pprof", "--memprofile", profile+"-heap.pprof")
	}
	cmd := exec.Command(cmxd, args...)
	cmd.Stdout, cmd.Stderr, cmd.Dir = log, log, dir
	cmd.Env = gatewayEnv()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s gateway: %w", side.Party, err)
	}
	g := &gwProc{party: side.Party, cmd: cmd, done: make(chan error, 1)}
	go func() { g.done <- cmd.Wait() }()
	return g, nil
}

// gatewayEnv is our environment without CMX_* variables, which would
// override the written configs, and without OTEL_* ones: tracing runs as
// shipped (spans sampled, no exporter) whatever the caller's shell says.
func gatewayEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CMX_") && !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitReady polls side i's /readyz until it answers 200.
func (s *stack) waitReady(ctx context.Context, i int, timeout time.Duration) error {
	c := &client.Client{BaseURL: s.sides[i].url}
	return pollUntil(ctx, timeout, s.procs[i], func() (bool, error) { return c.Ready(ctx) == nil, nil },
		fmt.Sprintf("%s gateway not ready (log: %s.log)", s.sides[i].party, strings.ToLower(s.sides[i].party)))
}

// waitLinked polls both sides' /v1/peers until the link is up.
func (s *stack) waitLinked(ctx context.Context, timeout time.Duration) error {
	for i, side := range []*pair.Side{s.pair.US, s.pair.JP} {
		ops := &client.Client{BaseURL: side.URL, Token: side.Tokens["OPS"]}
		up := func() (bool, error) {
			peers, err := ops.Peers(ctx)
			return err == nil && len(peers) == 1 && peers[0].Link == "up", nil
		}
		if err := pollUntil(ctx, timeout, s.procs[i], up, side.Party+": leafnode not up"); err != nil {
			return err
		}
	}
	return nil
}

// pollUntil calls ok every 20 ms until it returns true, the process exits,
// ctx ends or timeout passes.
func pollUntil(ctx context.Context, timeout time.Duration, g *gwProc, ok func() (bool, error), what string) error {
	deadline := time.Now().Add(timeout)
	for {
		done, err := ok()
		if err != nil || done {
			return err
		}
		if time.Now().After(deadline) {
			return errors.New(what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-g.done:
			g.done <- err
			return fmt.Errorf("%s gateway exited: %v", g.party, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop stops the gateways (SIGTERM, so a CPU profile is written; SIGKILL
// after 30 s) and the receiver.
func (s *stack) stop() error {
	var errs []error
	for _, g := range s.procs {
		if g == nil {
			continue
		}
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-g.done:
			if err != nil {
				errs = append(errs, fmt.Errorf("%s gateway: %w", g.party, err))
			}
		case <-time.After(30 * time.Second):
			_ = g.cmd.Process.Kill()
			errs = append(errs, fmt.Errorf("%s gateway did not stop in 30 s", g.party))
		}
	}
	if s.pair != nil {
		errs = append(errs, s.pair.Stop())
	}
	s.recv.close()
	return errors.Join(errs...)
}

// procSample is the CPU time and peak RSS of the two gateways and of this
// process (load generator, pollers and webhook receiver).
type procSample struct {
	cpu [3]time.Duration // US, JP, bench
	hwm [3]int64         // bytes
}

func (s *stack) sample() (procSample, error) {
	var ps procSample
	pids := [3]int{s.procs[0].cmd.Process.Pid, s.procs[1].cmd.Process.Pid, os.Getpid()}
	for i, pid := range pids {
		var err error
		if ps.cpu[i], err = procCPU(pid); err != nil {
			return ps, err
		}
		if ps.hwm[i], err = procHWM(pid); err != nil {
			return ps, err
		}
	}
	return ps, nil
}

// waitQuiet waits until the gateways use less than a tenth of a core over
// 200 ms (leftover work of a previous phase done), at most max; it returns
// how long it waited.
func (s *stack) waitQuiet(ctx context.Context, max time.Duration) (time.Duration, error) {
	start := time.Now()
	prev, err := s.sample()
	for err == nil && time.Since(start) < max {
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		var cur procSample
		if cur, err = s.sample(); err != nil {
			break
		}
		if busy := cur.cpu[0] + cur.cpu[1] - prev.cpu[0] - prev.cpu[1]; busy < 20*time.Millisecond {
			break
		}
		prev = cur
	}
	return time.Since(start), err
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100
// on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procCPU is the user+system CPU time of all threads of pid.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// procHWM is the peak resident set size (VmHWM) of pid in bytes.
func procHWM(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
}

// receiver is the webhook of the receiving agencies. It records the arrival
// of each delivery (Idempotency-Key is the message id) with the tracker of
// the running phase and answers 204 at once, without parsing the body.
type receiver struct {
	srv    *http.Server
	ln     net.Listener
	arrive chan arrival
}

type arrival struct {
	id string
	at time.Time
}

func startReceiver() (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &receiver{ln: ln, arrive: make(chan arrival, 1<<16)}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *receiver) url() string { return "http://" + r.ln.Addr().String() + "/cmx/deliveries" }

func (r *receiver) close() { _ = r.srv.Close() }

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	_, _ = io.Copy(io.Discard, req.Body)
	id := req.Header.Get("Idempotency-Key")
	if req.Method != http.MethodPost || id == "" {
		http.Error(w, "POST with Idempotency-Key", http.StatusBadRequest)
		return
	}
	r.arrive <- arrival{id: id, at: time.Now()}
	w.WriteHeader(http.StatusNoContent)
}

// messageStatus reads a message's status at its sender.
func (b *benchSide) messageStatus(ctx context.Context, id string) (string, error) {
	m, err := b.poll.Message(ctx, id)
	if err != nil {
		return "", err
	}
	return m.Status, nil
}

// terminal reports whether a sender-side status is final.
func terminal(status string) bool {
	return status == api.StatusDelivered || status == api.StatusRejected || status == api.StatusFailed
}
