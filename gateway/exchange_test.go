package gateway_test

// End-to-end fault tests of the exchange (DESIGN.md §3, §8; catalogue §2.4
// and §3): two real gateways with embedded NATS joined by a mutual-TLS
// leafnode, real HTTP, real crypto. Only the agencies are fakes
// (agencytest), so that faults can be programmed and effects counted.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/client"
	"github.com/cmx-exchange/cmx/gateway/pair"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// TestMain fails the package if a test leaves goroutines behind. The pairs
// stop everything they start (gateways, embedded nats-servers, proxy, sample
// agencies); nats-server 2.15.2 leaves nothing of its own after Shutdown, so
// nothing is ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	labor  = envelope.LaborEnforcementNotice
	nonMkt = envelope.NonMarketPracticeReport
	invest = envelope.InvestmentReviewBestPractice
)

// TestIdempotentRetry: a client retry with the same Idempotency-Key and body
// gets the original id and causes no second message (H-11, H-19).
func TestIdempotentRetry(t *testing.T) {
	x := start(t, pair.Options{})
	key := envelope.NewID()
	first := x.send(labor, key)
	again := x.send(labor, key)
	if again.ID != first.ID {
		t.Fatalf("same key and body: ids %s and %s", first.ID, again.ID)
	}
	x.wait(first, api.StatusDelivered, 20*time.Second)
	if late := x.send(labor, key); late.ID != first.ID {
		t.Fatalf("retry after delivery: id %s, want %s", late.ID, first.ID)
	}
	a := x.jp[labor]
	effects(t, a, first.ID, 1)
	if a.Hits() != 1 {
		t.Errorf("agency hits %d, want 1", a.Hits())
	}
	if rs := x.sameReceipts(first); statuses(rs) != "accepted,delivered" {
		t.Errorf("receipts %s, want accepted,delivered", statuses(rs))
	}
}

// TestRedeliveryIsNotRedelivered: JetStream redelivers the message on the
// receiving side (a nak after a failed webhook call; a restart of the JP
// gateway between the accepted and the delivered receipt). There is one
// recorded delivery and one accepted receipt, the bytes the sender stored
// (N-11, F-09, F-02).
func TestRedeliveryIsNotRedelivered(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart bool
	}{
		{name: "nak_after_agency_503"},
		{name: "JP_restart_between_accepted_and_delivered", restart: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := start(t, pair.Options{})
			a := x.jp[labor]
			a.SetDown(503)
			m := x.send(labor, "")
			x.wait(m, api.StatusReceived, 20*time.Second)
			transporttest.WaitFor(t, 10*time.Second, func() bool { return a.Attempts(m.ID) >= 1 }, "first webhook call")
			accepted := x.receipts(x.US, m.Agency, m.ID)
			if tc.restart {
				if err := x.JP.Restart(x.ctx); err != nil {
					t.Fatalf("restart JP: %v", err)
				}
			}
			a.SetUp()
			x.wait(m, api.StatusDelivered, 20*time.Second)
			if a.Attempts(m.ID) < 2 {
				t.Fatalf("webhook calls %d: no redelivery happened", a.Attempts(m.ID))
			}
			effects(t, a, m.ID, 4)
			rs := x.sameReceipts(m)
			if statuses(rs) != "accepted,delivered" {
				t.Fatalf("receipts %s, want accepted,delivered", statuses(rs))
			}
			if len(accepted) != 1 || string(rs[0].Token) != accepted[0] {
				t.Errorf("accepted receipt changed across the redelivery:\nbefore %q\nafter  %q", accepted, rs[0].Token)
			}
		})
	}
}

// TestLinkCutAndRestore: the leafnode is cut in the middle of traffic. Both
// sides keep answering 202 (durable locally); after the link heals every
// message is delivered once, and JP's inbound stream holds each exactly once
// (F-05).
func TestLinkCutAndRestore(t *testing.T) {
	x := start(t, pair.Options{Proxy: true})
	var (
		mu       sync.Mutex
		sent     []*pair.Sent
		accepted atomic.Int32
	)
	add := func(m *pair.Sent) {
		mu.Lock()
		sent = append(sent, m)
		mu.Unlock()
		accepted.Add(1)
	}
	errc := make(chan error, 1)
	go func() { // the first 20, while the link is cut under them
		for i := range 20 {
			m, err := x.Send(x.ctx, "US", envelope.Types[i%3], "")
			if err != nil {
				errc <- err
				return
			}
			add(m)
		}
		errc <- nil
	}()
	transporttest.WaitFor(t, 10*time.Second, func() bool { return accepted.Load() >= 10 }, "10 messages accepted")
	x.Proxy.Cut()
	if err := <-errc; err != nil {
		t.Fatalf("send during the cut: %v", err)
	}
	transporttest.WaitFor(t, 10*time.Second, func() bool {
		return !x.US.Node.LeafConnected() && !x.JP.Node.LeafConnected()
	}, "leafnode down on both sides")
	for i := range 20 {
		add(x.send(envelope.Types[i%3], ""))
	}
	x.Proxy.Restore()
	for _, m := range sent {
		x.wait(m, api.StatusDelivered, 40*time.Second)
	}
	for _, m := range sent {
		effects(t, x.jp[m.Type], m.ID, 1)
	}
	total := 0
	for _, a := range x.jp {
		total += a.Hits()
	}
	if total != len(sent) {
		t.Errorf("agencies saw %d requests for %d messages", total, len(sent))
	}
	if n := x.inboundMessages(); n != uint64(len(sent)) {
		t.Errorf("JP's CMX_IN holds %d messages for %d sent: gaps or duplicates", n, len(sent))
	}
}

// TestWebhookDownThenUp: the agency answers 503 with Retry-After: 1. The
// sender's status stays received (never delivered) while it is down; once
// it is up the message is delivered once, and the delivered receipt is not
// dated before the agency could answer 2xx (F-11, R-12).
func TestWebhookDownThenUp(t *testing.T) {
	x := start(t, pair.Options{})
	a := x.jp[labor]
	a.SetRetryAfter("1")
	a.SetDown(503)
	m := x.send(labor, "")
	x.wait(m, api.StatusReceived, 20*time.Second)
	// Down for two seconds at least, and until JetStream redelivered once.
	downUntil := time.Now().Add(2 * time.Second)
	transporttest.WaitFor(t, 10*time.Second, func() bool {
		if st := x.status(m); st != api.StatusReceived {
			t.Fatalf("status %s while the agency is down, want received", st)
		}
		return a.Attempts(m.ID) >= 2 && time.Now().After(downUntil)
	}, "agency down: redelivered, never delivered")
	if a.Effects(m.ID) != 0 {
		t.Fatalf("recorded a delivery while down")
	}
	upAt := time.Now()
	a.SetUp()
	x.wait(m, api.StatusDelivered, 20*time.Second)
	effects(t, a, m.ID, 5)
	rs := x.sameReceipts(m)
	if statuses(rs) != "accepted,delivered" {
		t.Fatalf("receipts %s, want accepted,delivered", statuses(rs))
	}
	d := rs[1]
	if d.DeliveredAt < upAt.Unix() || d.IssuedAt < upAt.Unix() {
		t.Errorf("delivered receipt dated %d (iat %d), before the agency came up at %d", d.DeliveredAt, d.IssuedAt, upAt.Unix())
	}
	if d.Recipient != "JP:MHLW" {
		t.Errorf("delivered to %q, want JP:MHLW", d.Recipient)
	}
}

// TestRestartMidTraffic: 30 messages are submitted concurrently while the JP
// gateway and then the US gateway restart. Clients retry with the same
// Idempotency-Key; every message ends delivered, each recorded once (F-02,
// F-03, H-19).
func TestRestartMidTraffic(t *testing.T) {
	x := start(t, pair.Options{})
	s := x.startSenders(10)
	transporttest.WaitFor(t, 20*time.Second, func() bool { return s.accepted.Load() >= 5 }, "5 messages accepted")
	if err := x.JP.Restart(x.ctx); err != nil {
		t.Fatalf("restart JP: %v", err)
	}
	transporttest.WaitFor(t, 20*time.Second, func() bool { return s.accepted.Load() >= 15 }, "15 messages accepted")
	if err := x.US.Restart(x.ctx); err != nil {
		t.Fatalf("restart US: %v", err)
	}
	sent := s.wait(t)
	if len(sent) != 30 {
		t.Fatalf("%d messages accepted, want 30", len(sent))
	}
	// A message that reaches a gateway's stream while that gateway stops
	// (pipeline drained, embedded server still up) is delivered by JetStream
	// but never handled, and stays pending for one AckWait (30 s) after the
	// restart: late, never lost.
	ids := map[string]bool{}
	for _, m := range sent {
		ids[m.ID] = true
		x.wait(m, api.StatusDelivered, 60*time.Second)
	}
	if len(ids) != 30 {
		t.Fatalf("%d distinct ids for 30 submissions", len(ids))
	}
	for _, m := range sent {
		effects(t, x.jp[m.Type], m.ID, 3) // a crash between 2xx and record may repeat the call (F-02)
		if rs := x.sameReceipts(m); statuses(rs) != "accepted,delivered" {
			t.Errorf("%s: receipts %s", m.ID, statuses(rs))
		}
	}
}

// senders submit messages concurrently, one goroutine per US sending agency.
type senders struct {
	accepted atomic.Int32 // 202s so far
	wg       sync.WaitGroup
	errs     chan error
	mu       sync.Mutex
	sent     []*pair.Sent
}

// startSenders has each US sending agency submit n messages, each retried
// under its own Idempotency-Key until accepted.
func (x *exchange) startSenders(n int) *senders {
	s := &senders{errs: make(chan error, len(envelope.Types))}
	for _, typ := range envelope.Types {
		agency := pair.AgencyFor("US", typ)
		c := x.US.Client(agency) // taken now: a restart rewrites the Side
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for range n {
				id, err := submitRetry(x.ctx, c, typ, 30*time.Second)
				if err != nil {
					s.errs <- err
					return
				}
				s.mu.Lock()
				s.sent = append(s.sent, &pair.Sent{ID: id, From: "US", To: "JP", Agency: agency, Type: typ})
				s.mu.Unlock()
				s.accepted.Add(1)
			}
		}()
	}
	return s
}

// wait waits for the senders and returns what was accepted.
func (s *senders) wait(t *testing.T) []*pair.Sent {
	t.Helper()
	s.wg.Wait()
	close(s.errs)
	for err := range s.errs {
		t.Fatalf("submit: %v", err)
	}
	return s.sent
}

// submitRetry submits an example of typ under one Idempotency-Key until a
// 202 comes, as a client must when the gateway is unreachable or answers
// 5xx (H-16, H-19).
func submitRetry(ctx context.Context, c *client.Client, typ envelope.Type, timeout time.Duration) (string, error) {
	req := &api.SubmitRequest{Type: string(typ), To: "JP", Body: envelope.Example(typ)}
	key := envelope.NewID()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Submit(ctx, req, key)
		if err == nil {
			return resp.ID, nil
		}
		if st := client.StatusOf(err); st >= 400 && st < 500 && st != 409 && st != 429 {
			return "", err
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no 202 after %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestPermanentAgencyFailure: the agency answers 422. The sender gets a
// signed rejected/delivery_failed receipt, the message is not retried, and
// messages to other agencies, and later ones to the same agency, still flow
// (F-22).
func TestPermanentAgencyFailure(t *testing.T) {
	x := start(t, pair.Options{})
	a := x.jp[labor]
	a.SetDown(422)
	poison := x.send(labor, "")
	var others []*pair.Sent
	for _, typ := range []envelope.Type{nonMkt, invest, nonMkt, invest} {
		others = append(others, x.send(typ, ""))
	}
	got := x.wait(poison, api.StatusRejected, 20*time.Second)
	if reason(got) != string(envelope.ReasonDeliveryFailed) {
		t.Errorf("rejected for %q, want delivery_failed", reason(got))
	}
	rs := x.sameReceipts(poison)
	if statuses(rs) != "accepted,rejected" || rs[1].Reason != envelope.ReasonDeliveryFailed {
		t.Fatalf("receipts %s (reason %q), want accepted,rejected/delivery_failed", statuses(rs), rs[len(rs)-1].Reason)
	}
	for _, m := range others {
		x.wait(m, api.StatusDelivered, 20*time.Second)
		effects(t, x.jp[m.Type], m.ID, 1)
	}
	a.SetUp()
	next := x.send(labor, "")
	x.wait(next, api.StatusDelivered, 20*time.Second)
	effects(t, a, next.ID, 1)
	if a.Effects(poison.ID) != 0 || a.Attempts(poison.ID) != 1 {
		t.Errorf("poison message: %d effects, %d calls; want 0 and 1 (a 422 is not retried)", a.Effects(poison.ID), a.Attempts(poison.ID))
	}
	_, js := x.connect(x.JP)
	x.consumerIdle(js, 10*time.Second)
}

// TestUnknownRecipient: a message for an agency JP does not have gets a
// signed rejected/unknown_recipient receipt, and nothing is delivered (J-31).
func TestUnknownRecipient(t *testing.T) {
	x := start(t, pair.Options{})
	agency := pair.AgencyFor("US", labor)
	resp, err := x.US.Client(agency).Submit(x.ctx, &api.SubmitRequest{
		Type: string(labor), To: "JP", Recipient: "JP:NOBODY", Body: envelope.Example(labor),
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	m := &pair.Sent{ID: resp.ID, From: "US", To: "JP", Agency: agency, Type: labor}
	got := x.wait(m, api.StatusRejected, 20*time.Second)
	if reason(got) != string(envelope.ReasonUnknownRecipient) {
		t.Errorf("rejected for %q, want unknown_recipient", reason(got))
	}
	rs := x.sameReceipts(m)
	if statuses(rs) != "rejected" || rs[0].Reason != envelope.ReasonUnknownRecipient {
		t.Fatalf("receipts %s (reason %q), want rejected/unknown_recipient", statuses(rs), rs[0].Reason)
	}
	for typ, a := range x.jp {
		if a.Hits() != 0 {
			t.Errorf("agency for %s called %d times", typ, a.Hits())
		}
	}
}
