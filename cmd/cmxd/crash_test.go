package main

// Crash tests with real processes (catalogue F-01, F-02; DESIGN.md §8
// invariants 1 to 4). Each gateway runs as its own cmxd with its embedded
// NATS server (sync_interval always), so SIGKILL stops the gateway and its
// JetStream store at once, like a power cut of that host; the same process
// is then started again on the same config and store. The test lives next
// to main because it tests this command as a binary: it builds it, runs
// it, kills it.

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/client"
)

// crashClients is how many agency clients submit at the same time.
const crashClients = 4

// submission is one message a client submitted under its own
// Idempotency-Key (which is also its correlation id).
type submission struct {
	key   string
	sb    *submitter
	id    string // from the 202
	first error  // the first attempt's error; nil if it was answered 202
}

// TestCrash runs a pair of cmxd processes and kills the receiver (F-02),
// then the sender (F-01), while messages are submitted concurrently.
//
// A message that a killed gateway had pulled from a stream but not acked is
// redelivered after the consumer's AckWait (10 s), and an idempotency
// record left in flight by a killed gateway can be taken over after
// IdemInFlightTimeout (30 s): the sender phase therefore takes about 30 s.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmxd and kills it mid-traffic")
	}
	s := startCrashStack(t)
	t.Run("F-02_receiver_crash", s.receiverCrash)
	t.Run("F-01_sender_crash", s.senderCrash)
}

// receiverCrash: 40 messages US→JP from 4 clients; JP's cmxd is killed once
// 10 are delivered, the other 20 are submitted while it is down (US answers
// 202: local durability), then JP starts again on the same store. Every
// message ends delivered at US with exactly the accepted and delivered
// receipts, each recorded once by JP's agency; a second webhook call is
// allowed only for a message the killed JP had already delivered.
func (s *crashStack) receiverCrash(t *testing.T) {
	all := s.submitAcrossJPKill(t)
	before := s.settled(t, all)
	t.Logf("JP killed with %d of %d messages called at the agency; restarting it", len(before), len(all))
	s.start(t, "JP")
	s.waitLinked(t)
	s.sent = append(s.sent, all...)
	s.waitDelivered(t, all, 90*time.Second)
	s.checkDeliveries(t, all, before)
	s.checkEvidence(t, all)
	s.waitIdle(t)
	twice := slices.DeleteFunc(slices.Clone(all), func(sub *submission) bool { return s.jp[sub.sb.typ].Attempts(sub.id) < 2 })
	t.Logf("%d messages were called twice at the agency (2xx before the kill, not yet recorded)", len(twice))
}

// submitAcrossJPKill has each client submit 5 messages, kills JP once 10
// are delivered, then has each client submit 5 more while JP is down. Every
// submission must be answered 202.
func (s *crashStack) submitAcrossJPKill(t *testing.T) []*submission {
	t.Helper()
	const perClient, beforeKill = 10, 5
	ctx := t.Context()
	killed := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(killed) }) }
	subs := make([][]*submission, crashClients)
	var g errgroup.Group
	defer func() { release(); _ = g.Wait() }()
	for c := range crashClients {
		sb := s.submitter(crashTypes[c%len(crashTypes)])
		g.Go(func() error {
			for j := range perClient {
				if j == beforeKill {
					select {
					case <-killed:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				sub := &submission{key: fmt.Sprintf("f02-%d-%d", c, j), sb: sb}
				resp, err := sb.c.Submit(ctx, sb.request(sub.key), sub.key)
				if err != nil {
					return fmt.Errorf("submission %s: %w", sub.key, err)
				}
				sub.id = resp.ID
				subs[c] = append(subs[c], sub)
			}
			return nil
		})
	}
	// Polled often (the agency is in this process), so that the kill falls
	// among the deliveries, not after the last one.
	s.poll(t, 30*time.Second, time.Millisecond, "10 deliveries at JP", func() bool { return len(s.delivered()) >= 10 })
	s.kill(t, "JP")
	release()
	if err := g.Wait(); err != nil {
		t.Fatalf("US must answer 202 whether JP is up or not: %v", err)
	}
	return slices.Concat(subs...)
}

// senderCrash: 4 clients submit without pause; US's cmxd is killed once 12
// have been answered. Every submission answered 202 ends delivered. Every
// submission that got no answer is retried by its client with the same
// Idempotency-Key after US is back, and ends as exactly one message (one id
// delivered at JP for that key, the id the retry was answered with).
func (s *crashStack) senderCrash(t *testing.T) {
	all := s.submitUntilUSKill(t)
	unanswered := slices.DeleteFunc(slices.Clone(all), func(sub *submission) bool { return sub.first == nil })
	if len(unanswered) == 0 {
		t.Fatalf("no submission was in flight when US was killed (%d answered)", len(all))
	}
	t.Logf("US killed: %d submissions answered 202, %d without an answer", len(all)-len(unanswered), len(unanswered))
	s.start(t, "US")
	s.waitLinked(t)
	s.retry(t, unanswered)
	t.Logf("US took over %d idempotency records left in flight; %d retries found their message already in the outbox",
		s.gw["US"].count(`"msg":"idempotency record taken over"`), s.gw["US"].count(`"duplicate":true`))
	ids := map[string]string{}
	for _, sub := range all {
		if k, dup := ids[sub.id]; dup {
			t.Fatalf("submissions %s and %s were answered with the same id %s", k, sub.key, sub.id)
		}
		ids[sub.id] = sub.key
	}
	s.sent = append(s.sent, all...)
	s.waitDelivered(t, all, 90*time.Second)
	s.checkDeliveries(t, all, nil)
	s.checkEvidence(t, all)
	s.waitIdle(t)
}

// submitUntilUSKill has the clients submit new messages without pause and
// kills US once 12 are answered. It returns every submission with its
// first attempt's outcome: an id (202) or the error of no answer; any
// other answer fails t.
func (s *crashStack) submitUntilUSKill(t *testing.T) []*submission {
	t.Helper()
	const acceptedBeforeKill, maxPerClient = 12, 100
	ctx := t.Context()
	var stopped atomic.Bool
	var accepted atomic.Int32
	subs := make([][]*submission, crashClients)
	var g errgroup.Group
	defer func() { stopped.Store(true); _ = g.Wait() }()
	for c := range crashClients {
		sb := s.submitter(crashTypes[c%len(crashTypes)])
		g.Go(func() error {
			for j := 0; j < maxPerClient && !stopped.Load(); j++ {
				sub := &submission{key: fmt.Sprintf("f01-%d-%d", c, j), sb: sb}
				subs[c] = append(subs[c], sub)
				resp, err := sb.c.Submit(ctx, sb.request(sub.key), sub.key)
				switch {
				case err == nil:
					sub.id = resp.ID
					accepted.Add(1)
				case client.StatusOf(err) != 0: // an answer, but not 202
					return fmt.Errorf("submission %s: %w", sub.key, err)
				default: // no answer: the gateway died under it
					sub.first = err
				}
			}
			return nil
		})
	}
	s.eventually(t, 30*time.Second, "12 submissions accepted", func() bool { return accepted.Load() >= acceptedBeforeKill })
	stopped.Store(true) // no new submission from now on; those in flight stay in flight
	s.kill(t, "US")
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return slices.Concat(subs...)
}

// retry resubmits each unanswered submission, with its key and body, until
// it is answered 202: several at once, as the clients would.
func (s *crashStack) retry(t *testing.T, subs []*submission) {
	t.Helper()
	var g errgroup.Group
	for _, sub := range subs {
		g.Go(func() error {
			// 409 until the record of the killed attempt is older than
			// IdemInFlightTimeout (30 s): then the same id is taken over.
			id, err := sub.sb.submitUntilAccepted(t.Context(), sub.key, 60*time.Second)
			sub.id = id
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("retry after the restart: %v", err)
	}
}

// delivered returns the ids JP's agencies have recorded.
func (s *crashStack) delivered() map[string]api.Delivery {
	out := map[string]api.Delivery{}
	for _, typ := range crashTypes {
		for _, d := range s.jp[typ].Deliveries() {
			out[d.ID] = d
		}
	}
	return out
}

// settled waits until no webhook call for subs is being answered (the
// killed gateway's last calls have finished at the agency) and returns the
// ids the killed gateway had called: recorded, or cut off mid-request by the
// kill (a request whose body never fully arrived is no delivery, but the
// restarted gateway rightly calls again).
func (s *crashStack) settled(t *testing.T, subs []*submission) map[string]bool {
	t.Helper()
	s.eventually(t, 10*time.Second, "no webhook call in flight", func() bool {
		return !slices.ContainsFunc(subs, func(sub *submission) bool { return s.jp[sub.sb.typ].InFlight(sub.id) > 0 })
	})
	out := map[string]bool{}
	for _, sub := range subs {
		if s.jp[sub.sb.typ].Attempts(sub.id) > 0 {
			out[sub.id] = true
		}
	}
	return out
}

// waitDelivered waits until every submission is delivered at US; a
// rejected or failed message fails t at once.
func (s *crashStack) waitDelivered(t *testing.T, subs []*submission, timeout time.Duration) {
	t.Helper()
	status := map[string]string{}
	defer logPending(t, subs, status)
	s.eventually(t, timeout, "every message delivered", func() bool {
		done := true
		for _, sub := range subs {
			if status[sub.id] == api.StatusDelivered {
				continue
			}
			m, err := sub.sb.c.Message(t.Context(), sub.id)
			if err != nil {
				status[sub.id] = err.Error()
				done = false
				continue
			}
			status[sub.id] = m.Status
			if m.Status == api.StatusRejected || m.Status == api.StatusFailed {
				t.Fatalf("%s (%s) ended %s: %+v", sub.id, sub.key, m.Status, m.Timeline)
			}
			done = done && m.Status == api.StatusDelivered
		}
		return done
	})
}

func logPending(t *testing.T, subs []*submission, status map[string]string) {
	if !t.Failed() {
		return
	}
	var pending []string
	for _, sub := range subs {
		if st := status[sub.id]; st != api.StatusDelivered {
			pending = append(pending, sub.key+" "+sub.id+": "+st)
		}
	}
	t.Logf("not delivered at US:\n%s", strings.Join(pending, "\n"))
}

// checkDeliveries checks JP's agencies: every submission recorded exactly
// once, under the id its client was answered with and under no other
// (invariant 3); one webhook call per id, or two for an id the killed
// gateway had already delivered (the 2xx-then-crash window, F-02), never
// two at a time; and no call with any other key.
func (s *crashStack) checkDeliveries(t *testing.T, subs []*submission, before map[string]bool) {
	t.Helper()
	byKey := map[string][]string{}
	for _, typ := range crashTypes {
		for _, d := range s.jp[typ].Deliveries() {
			byKey[d.CorrelationID] = append(byKey[d.CorrelationID], d.ID)
		}
	}
	for _, sub := range subs {
		if got := byKey[sub.key]; len(got) != 1 || got[0] != sub.id {
			t.Errorf("submission %s: JP recorded messages %v, want exactly [%s]", sub.key, got, sub.id)
		}
		a := s.jp[sub.sb.typ]
		switch n := a.Attempts(sub.id); {
		case n == 1:
		case n == 2 && before[sub.id]:
		default:
			t.Errorf("%s (%s): %d webhook calls (called before the kill: %v)", sub.id, sub.key, n, before[sub.id])
		}
		if n := a.MaxConcurrent(sub.id); n > 1 {
			t.Errorf("%s: %d concurrent webhook calls", sub.id, n)
		}
	}
	hits, calls := 0, 0
	for _, typ := range crashTypes {
		hits += s.jp[typ].Hits()
	}
	for _, sub := range s.sent {
		calls += s.jp[sub.sb.typ].Attempts(sub.id)
	}
	if hits != calls {
		t.Errorf("JP's agencies got %d webhook calls, %d of them for the messages sent", hits, calls)
	}
}

// checkEvidence checks the receipts (invariant 4): US holds exactly the
// accepted and delivered receipts of each message, byte for byte those JP
// issued, each verifying against JP's pinned roots; and JP recorded one
// delivery of each.
func (s *crashStack) checkEvidence(t *testing.T, subs []*submission) {
	t.Helper()
	ctx := t.Context()
	ops := s.pair.JP.Client("OPS")
	for _, sub := range subs {
		// Receipts may be applied out of order: an accepted receipt that
		// came before the message's record (a sender killed in between) is
		// retried while the delivered one is already applied.
		var us *api.Receipts
		s.eventually(t, 30*time.Second, "both receipts of "+sub.id+" at US", func() bool {
			var err error
			us, err = sub.sb.c.Receipts(ctx, sub.id)
			return err == nil && len(us.Receipts) >= 2
		})
		jp, err := ops.Receipts(ctx, sub.id)
		if err != nil {
			t.Fatalf("receipts of %s at JP: %v", sub.id, err)
		}
		if !slices.Equal(us.Receipts, jp.Receipts) {
			t.Errorf("%s: receipts at US differ from those JP issued:\nUS %q\nJP %q", sub.id, us.Receipts, jp.Receipts)
		}
		var got []string
		for _, tok := range us.Receipts {
			vr, err := (&envelope.ReceiptVerifier{Self: "US", Peer: s.roots}).Verify([]byte(tok), time.Now())
			if err != nil {
				t.Fatalf("%s: receipt does not verify: %v", sub.id, err)
			}
			if vr.Msg != sub.id {
				t.Errorf("receipt of %s names message %s", sub.id, vr.Msg)
			}
			got = append(got, string(vr.Status))
		}
		if want := []string{"accepted", "delivered"}; !slices.Equal(got, want) {
			t.Errorf("%s: receipts at US %v, want %v", sub.id, got, want)
		}
		// JP records delivered just after it publishes the delivered receipt;
		// a JP killed in between records it on the redelivery, which may come
		// after US already holds the receipt.
		var m *api.Message
		s.eventually(t, 30*time.Second, sub.id+" delivered at JP", func() bool {
			var err error
			m, err = ops.Message(ctx, sub.id)
			return err == nil && m.Status == api.StatusDelivered
		})
		if n := countStatus(m.Timeline, api.StatusDelivered); m.Status != api.StatusDelivered || n != 1 {
			t.Errorf("%s at JP: status %s with %d delivered events, want delivered once", sub.id, m.Status, n)
		}
	}
}

func countStatus(tl []api.Event, status string) int {
	n := 0
	for _, e := range tl {
		if e.Status == status {
			n++
		}
	}
	return n
}

// waitIdle waits until both outboxes are empty and US awaits no receipt.
func (s *crashStack) waitIdle(t *testing.T) {
	t.Helper()
	for _, party := range []string{"US", "JP"} {
		ops := s.pair.Side(party).Client("OPS")
		s.eventually(t, 30*time.Second, party+" idle (outbox forwarded, no receipt awaited)", func() bool {
			ps, err := ops.Peers(t.Context())
			return err == nil && len(ps) == 1 && ps[0].Backlog == 0 && ps[0].AwaitingReceipt == 0
		})
	}
}

// count counts the lines of the gateway's log that contain s.
func (g *gwProc) count(s string) int {
	b, err := os.ReadFile(g.log)
	if err != nil {
		return -1
	}
	return strings.Count(string(b), s)
}
