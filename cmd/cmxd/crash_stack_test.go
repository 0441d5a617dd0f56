package main

// The stack of the crash tests: two cmxd processes started from the configs
// pair.Prepare wrote, killed with SIGKILL and started again on the same
// stores, and the programmable JP agencies that count every webhook call.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/client"
	"github.com/cmx-exchange/cmx/gateway/delivery/agencytest"
	"github.com/cmx-exchange/cmx/gateway/pair"
)

// crashTypes are the message types the crash tests send: both have a
// webhook agency at JP (METI, MHLW).
var crashTypes = []envelope.Type{envelope.NonMarketPracticeReport, envelope.LaborEnforcementNotice}

// crashStack is a prepared pair run as two cmxd processes.
type crashStack struct {
	pair  *pair.Pair
	gw    map[string]*gwProc                   // by party
	jp    map[envelope.Type]*agencytest.Agency // JP's receiving agency per type
	roots *certs.Bundle                        // JP's pinned roots, as US verifies JP's receipts
	sent  []*submission                        // every submission of the phases so far
}

// gwProc is one party's cmxd. Its output of every run is appended to one
// log file in the test's directory.
type gwProc struct {
	party, bin, dir, config, log string
	runs                         int
	cmd                          *exec.Cmd
	exited                       chan struct{} // closed when the running process has exited
	killed                       bool          // the test killed it: its exit is expected
}

// startCrashStack builds cmxd, prepares a pair in t.TempDir() with
// agencytest webhooks for JP's receiving agencies, and starts JP (which
// accepts the leafnode), then US. At cleanup it kills both processes and, if
// t failed, prints their warnings, errors and last lines.
func startCrashStack(t *testing.T) *crashStack {
	t.Helper()
	dir := t.TempDir()
	bin := buildCmxd(t, t.TempDir())
	s := &crashStack{gw: map[string]*gwProc{}, jp: map[envelope.Type]*agencytest.Agency{}}
	hooks := map[string]string{}
	for _, typ := range crashTypes {
		s.jp[typ] = agencytest.New(t)
		hooks["JP:"+pair.AgencyFor("JP", typ)] = s.jp[typ].URL()
	}
	p, err := pair.Prepare(pair.Options{Dir: dir, Webhooks: hooks})
	if err != nil {
		t.Fatalf("prepare pair: %v", err)
	}
	s.pair = p
	t.Cleanup(func() { _ = p.Stop() })
	b, err := os.ReadFile(filepath.Join(p.JP.PKIDir, "bundle.pem"))
	if err == nil {
		s.roots, err = certs.ParseBundle("JP", b)
	}
	if err != nil {
		t.Fatalf("JP trust bundle: %v", err)
	}
	for _, side := range []*pair.Side{p.JP, p.US} {
		g := &gwProc{party: side.Party, bin: bin, dir: dir, config: side.ConfigPath,
			log: filepath.Join(dir, strings.ToLower(side.Party)+".log")}
		s.gw[side.Party] = g
		t.Cleanup(func() { g.stop(t) })
	}
	t.Cleanup(func() {
		if t.Failed() {
			s.gw["US"].dump(t, 60)
			s.gw["JP"].dump(t, 60)
		}
	})
	s.start(t, "JP")
	s.start(t, "US")
	s.waitLinked(t)
	return s
}

// start starts party's cmxd and waits until its /readyz answers.
func (s *crashStack) start(t *testing.T, party string) {
	t.Helper()
	g := s.gw[party]
	if err := g.start(); err != nil {
		t.Fatal(err)
	}
	c := &client.Client{BaseURL: s.pair.Side(party).URL, HTTP: &http.Client{Timeout: 2 * time.Second}}
	s.eventually(t, 60*time.Second, party+" ready", func() bool { return c.Ready(t.Context()) == nil })
}

// kill sends SIGKILL to party's cmxd, which takes its embedded NATS server
// down with it, and waits until it has exited.
func (s *crashStack) kill(t *testing.T, party string) {
	t.Helper()
	g := s.gw[party]
	g.killed = true
	if err := g.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill %s: %v", party, err)
	}
	select {
	case <-g.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s cmxd still running 10s after SIGKILL", party)
	}
}

// waitLinked waits until both sides report the leafnode up.
func (s *crashStack) waitLinked(t *testing.T) {
	t.Helper()
	for _, side := range []*pair.Side{s.pair.US, s.pair.JP} {
		ops := side.Client("OPS")
		s.eventually(t, 30*time.Second, side.Party+" linked to its peer", func() bool {
			ps, err := ops.Peers(t.Context())
			return err == nil && len(ps) == 1 && ps[0].Link == "up"
		})
	}
}

// eventually polls cond every 50 ms until it holds. It fails t after
// timeout, or at once if a gateway the test did not kill has exited.
func (s *crashStack) eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	s.poll(t, timeout, 50*time.Millisecond, what, cond)
}

// poll is eventually with its polling interval.
func (s *crashStack) poll(t *testing.T, timeout, every time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for !cond() {
		for _, g := range s.gw {
			if err := g.unexpectedExit(); err != nil {
				t.Fatalf("waiting for %s: %v", what, err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, timeout)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("waiting for %s: %v", what, t.Context().Err())
		case <-tick.C:
		}
	}
}

// start runs cmxd on the config, appending its output to the log file.
func (g *gwProc) start() error {
	g.runs++
	f, err := os.OpenFile(g.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close() // the child holds its own descriptor
	fmt.Fprintf(f, "=== cmxd %s, run %d ===\n", g.party, g.runs)
	cmd := exec.Command(g.bin, "--config", g.config)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = g.dir, crashEnv(), f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s cmxd: %w", g.party, err)
	}
	g.cmd, g.exited, g.killed = cmd, make(chan struct{}), false
	go func() { // owned: stop and kill wait for exited
		_ = cmd.Wait()
		close(g.exited)
	}()
	return nil
}

// unexpectedExit reports a process that exited without being killed.
func (g *gwProc) unexpectedExit() error {
	if g.cmd == nil || g.killed {
		return nil
	}
	select {
	case <-g.exited:
		return fmt.Errorf("%s cmxd exited (%v); see its log", g.party, g.cmd.ProcessState)
	default:
		return nil
	}
}

// stop kills a running process (cleanup) and waits for it.
func (g *gwProc) stop(t *testing.T) {
	if g.cmd == nil {
		return
	}
	_ = g.cmd.Process.Kill()
	select {
	case <-g.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("%s cmxd (pid %d) did not exit after SIGKILL", g.party, g.cmd.Process.Pid)
	}
}

// dump prints the warnings and errors of every run, anything that is not
// a JSON log line (a panic, the exit error) and the last lines.
func (g *gwProc) dump(t *testing.T, tail int) {
	b, err := os.ReadFile(g.log)
	if err != nil {
		t.Logf("%s log: %v", g.party, err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	var notable []string
	for _, l := range lines {
		warn := strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) || !strings.HasPrefix(l, "{")
		if warn && !strings.Contains(l, "Plaintext passwords") {
			notable = append(notable, l)
		}
	}
	t.Logf("%s cmxd: warnings, errors and other output (%d lines):\n%s", g.party, len(notable),
		strings.Join(notable[max(0, len(notable)-300):], "\n"))
	t.Logf("%s cmxd: last %d log lines:\n%s", g.party, tail, strings.Join(lines[max(0, len(lines)-tail):], "\n"))
}

// crashEnv is our environment without CMX_* variables, which would override
// the written configs, and without OTEL_* ones.
func crashEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CMX_") && !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	return env
}

// submitter is one agency client of the US gateway with its own connections.
type submitter struct {
	c     *client.Client
	typ   envelope.Type
	agent string
}

func (s *crashStack) submitter(typ envelope.Type) *submitter {
	agency := pair.AgencyFor("US", typ)
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{}}
	return &submitter{c: &client.Client{BaseURL: s.pair.US.URL, Token: s.pair.US.Tokens[agency], HTTP: hc}, typ: typ, agent: agency}
}

// request is the submission under key: the type's example body, with the
// key as correlation id, so each delivery at JP names its submission.
func (sb *submitter) request(key string) *api.SubmitRequest {
	return &api.SubmitRequest{Type: string(sb.typ), To: "JP", CorrelationID: key, Body: envelope.Example(sb.typ)}
}

// submitUntilAccepted retries key with the same body and Idempotency-Key
// until the gateway answers 202: after no answer, 409 (still in flight) or
// 503, as a client must. Any other answer is returned as an error.
func (sb *submitter) submitUntilAccepted(ctx context.Context, key string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		resp, err := sb.c.Submit(ctx, sb.request(key), key)
		if err == nil {
			return resp.ID, nil
		}
		last = err
		wait := 200 * time.Millisecond
		switch status := client.StatusOf(err); status {
		case 0, http.StatusConflict, http.StatusServiceUnavailable:
			var p *client.Problem
			if errors.As(err, &p) && p.RetryAfter > 0 {
				wait = p.RetryAfter
			}
		default:
			return "", fmt.Errorf("submission %s: %w", key, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(wait):
		}
	}
	return "", fmt.Errorf("submission %s not accepted within %v: %w", key, timeout, last)
}
