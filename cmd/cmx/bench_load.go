package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
)

// msgState is what the benchmark learns about one message. Times are of
// this process's monotonic clock.
type msgState struct {
	id      string
	side    int       // index of the sending side in stack.sides
	start   time.Time // request started
	acked   time.Time // 202 read
	arrived time.Time // the receiving agency's webhook was called
	done    time.Time // the sender's status read delivered
	status  string    // the sender's final status
	reads   int       // status reads spent on it
	tries   int       // polls so far, for the backoff
}

// pollPolicy spaces the status reads of one message. The first read comes
// after the delivery reached the agency, a fraction firstLeg of the recent
// mean time from there to delivered (at least first); then the gap starts
// at a fraction gapLeg of that mean (at least first) and doubles. No gap
// exceeds max, which bounds the error of a completion time.
type pollPolicy struct {
	first, max       time.Duration
	firstLeg, gapLeg float64
	workers          int // status reads in flight at once
}

// tracker follows the messages of one phase from submission to the
// delivered status at their sender. Completion is observed on the sender's
// API (GET /v1/messages/{id}), the figure of merit; to keep that cheap a
// message is read only after its delivery reached the receiving agency,
// which must happen first, and then with backoff.
type tracker struct {
	st     *stack
	policy pollPolicy

	mu         sync.Mutex
	byID       map[string]*msgState
	all        []*msgState
	expected   int // messages accepted or still being submitted
	finished   int
	submitErrs []string
	progress   time.Time // last arrival or completion
	doneCh     chan struct{}

	leg   time.Duration // moving mean of arrived → delivered at the sender
	ready chan *msgState
	reads atomic.Int64
}

func newTracker(st *stack, n int, policy pollPolicy) *tracker {
	return &tracker{st: st, policy: policy, byID: make(map[string]*msgState, n), expected: n,
		doneCh: make(chan struct{}), ready: make(chan *msgState, n+16), progress: time.Now()}
}

// run consumes webhook arrivals and drives the pollers until ctx ends.
func (t *tracker) run(ctx context.Context) {
	for range t.policy.workers {
		go t.poller(ctx)
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case a := <-t.st.recv.arrive:
				t.arrived(a)
			}
		}
	}()
}

func (t *tracker) arrived(a arrival) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.byID[a.id]
	if m == nil { // the webhook came before the 202 was read
		m = &msgState{id: a.id}
		t.byID[a.id] = m
	}
	if !m.arrived.IsZero() {
		return
	}
	m.arrived, t.progress = a.at, a.at
	if !m.acked.IsZero() {
		t.schedule(m)
	}
}

// accepted records a 202; err records a failed submission.
func (t *tracker) accepted(id string, side int, start, acked time.Time, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.submitErrs = append(t.submitErrs, err.Error())
		t.expected--
		t.checkDone()
		return
	}
	m := t.byID[id]
	if m == nil {
		m = &msgState{id: id}
		t.byID[id] = m
	}
	m.side, m.start, m.acked = side, start, acked
	t.all = append(t.all, m)
	if !m.arrived.IsZero() {
		t.schedule(m)
	}
}

// schedule queues the next status read of m; t.mu is held.
func (t *tracker) schedule(m *msgState) {
	leg := float64(t.leg)
	d := max(t.policy.first, time.Duration(leg*t.policy.firstLeg))
	if m.tries > 0 {
		d = max(t.policy.first, time.Duration(leg*t.policy.gapLeg)) << min(m.tries-1, 16)
	}
	m.tries++
	time.AfterFunc(min(d, t.policy.max), func() { t.ready <- m })
}

func (t *tracker) poller(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-t.ready:
			t.mu.Lock()
			side := m.side
			t.mu.Unlock()
			status, err := t.st.sides[side].messageStatus(ctx, m.id)
			now := time.Now()
			t.reads.Add(1)
			t.mu.Lock()
			m.reads++
			if err == nil && terminal(status) {
				m.done, m.status, t.progress = now, status, now
				t.finished++
				t.leg += (now.Sub(m.arrived) - t.leg) / 8
				t.checkDone()
			} else if ctx.Err() == nil {
				t.schedule(m)
			}
			t.mu.Unlock()
		}
	}
}

// checkDone closes doneCh once every accepted message is final; t.mu is held.
func (t *tracker) checkDone() {
	if t.finished >= t.expected {
		select {
		case <-t.doneCh:
		default:
			close(t.doneCh)
		}
	}
}

// wait returns when every message is final, or when nothing progressed for
// stall (then some messages are left incomplete), or when ctx ends.
func (t *tracker) wait(ctx context.Context, stall time.Duration) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-t.doneCh:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			t.mu.Lock()
			idle := time.Since(t.progress)
			t.mu.Unlock()
			if idle > stall {
				return fmt.Errorf("no progress for %s", stall)
			}
		}
	}
}

// submitter sends submissions over keep-alive connections, as many agency
// clients at once would.
type submitter struct {
	hc   *http.Client
	idem bool
}

func newSubmitter(conc int, idem bool) *submitter {
	tr := &http.Transport{MaxIdleConnsPerHost: conc, DisableCompression: true}
	return &submitter{hc: &http.Client{Timeout: time.Minute, Transport: tr}, idem: idem}
}

// submit posts the side's prepared request and returns the message id.
func (s *submitter) submit(ctx context.Context, b *benchSide) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url+"/v1/messages", bytes.NewReader(b.submit))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+b.token)
	req.Header.Set("Traceparent", traceparent())
	if s.idem {
		req.Header.Set("Idempotency-Key", randHex(16))
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("submit: %d %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	var out api.SubmitResponse
	if err := json.Unmarshal(body, &out); err != nil || out.ID == "" {
		return "", fmt.Errorf("submit: bad 202 body %q", body)
	}
	return out.ID, nil
}

// traceparent is a fresh sampled W3C trace context, as an instrumented
// agency client would send.
func traceparent() string { return "00-" + randHex(16) + "-" + randHex(8) + "-01" }

func randHex(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return hex.EncodeToString(b)
}

// sideOf is the sending side of message i: US, or alternately US and JP.
func sideOf(i int, both bool) int {
	if both {
		return i % 2
	}
	return 0
}

// flatOut submits n messages from conc workers, each sending its next
// message as soon as the previous one was answered.
func flatOut(ctx context.Context, t *tracker, sub *submitter, n, conc int, both bool) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				side := sideOf(i, both)
				start := time.Now()
				id, err := sub.submit(ctx, t.st.sides[side])
				t.accepted(id, side, start, time.Now(), err)
			}
		})
	}
	wg.Wait()
}

// paced submits n messages at rate per second (open loop: each at its
// scheduled time, whatever the answers to earlier ones) through conc
// workers. It returns how many were dispatched more than 5 ms late, because
// no worker was free or this process was not scheduled in time.
func paced(ctx context.Context, t *tracker, sub *submitter, n, conc int, rate float64, both bool) int {
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for i := range jobs {
				side := sideOf(i, both)
				start := time.Now()
				id, err := sub.submit(ctx, t.st.sides[side])
				t.accepted(id, side, start, time.Now(), err)
			}
		})
	}
	late := 0
	t0 := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		at := t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			time.Sleep(d) // pacing, not synchronisation
		}
		jobs <- i
		if time.Since(at) > 5*time.Millisecond {
			late++
		}
	}
	close(jobs)
	wg.Wait()
	return late
}
