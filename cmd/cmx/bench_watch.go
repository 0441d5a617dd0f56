package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
)

// Phase 1 needs only the moment the last message was delivered, not each
// message's, so it does not read statuses while it runs: it watches the
// sending gateways' counter of delivered outbound messages in GET /metrics
// (cmx_messages_total{direction="outbound",status="delivered"}, counted
// when the ledger records the verified delivered receipt), a few reads per
// second whatever the load. After the measured window, every message's
// status is read once to check that it is delivered.

// scrapeGap is the time between two scrapes of the delivered counters: the
// resolution of phase 1's end, under 1 % of a run of 10 s or more.
const scrapeGap = 100 * time.Millisecond

var errNoCounter = errors.New("no cmx_messages_total delivered counter in /metrics")

// deliveredCount reads the side's count of outbound messages delivered.
func (b *benchSide) deliveredCount(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.url+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := b.poll.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	var n int64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "cmx_messages_total{") || !strings.Contains(line, `direction="outbound"`) ||
			!strings.Contains(line, `status="delivered"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("GET /metrics: %q: %w", line, err)
		}
		n, found = n+int64(v), true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, errNoCounter
	}
	return n, nil
}

// delivered sums the delivered counters of the sending sides.
func (b *bench) delivered(ctx context.Context) (int64, error) {
	var total int64
	for i, s := range b.st.sides {
		if i == 1 && !b.o.both {
			break
		}
		n, err := s.deliveredCount(ctx)
		if errors.Is(err, errNoCounter) {
			n, err = 0, nil // nothing delivered that way yet
		}
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// watchDelivered scrapes the delivered counters until they have grown by
// every message accepted (known once submitted is closed), and returns the
// time of that scrape and the number of scrapes.
func (b *bench) watchDelivered(ctx context.Context, t *tracker, submitted <-chan struct{}, base int64) (time.Time, int, error) {
	tick := time.NewTicker(scrapeGap)
	defer tick.Stop()
	scrapes, last, progress := 0, int64(-1), time.Now()
	for {
		select {
		case <-ctx.Done():
			return time.Time{}, scrapes, ctx.Err()
		case <-tick.C:
		}
		n, err := b.delivered(ctx)
		now := time.Now()
		scrapes++
		if err != nil {
			return time.Time{}, scrapes, err
		}
		if n != last {
			last, progress = n, now
		}
		select {
		case <-submitted:
			t.mu.Lock()
			accepted := int64(len(t.all))
			t.mu.Unlock()
			if n-base >= accepted {
				return now, scrapes, nil
			}
		default:
		}
		if now.Sub(progress) > b.o.stall {
			return time.Time{}, scrapes, fmt.Errorf("delivered count stuck at %d for %s", n-base, b.o.stall)
		}
	}
}

// verify reads the status of every accepted message once at its sender,
// again every 100 ms while it is not final, until stall has passed; it
// records the final statuses.
func (t *tracker) verify(ctx context.Context, stall time.Duration) error {
	t.mu.Lock()
	msgs := append([]*msgState(nil), t.all...)
	t.mu.Unlock()
	deadline := time.Now().Add(stall)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(msgs) && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				t.settle(ctx, msgs[i], deadline)
			}
		})
	}
	wg.Wait()
	t.mu.Lock()
	defer t.mu.Unlock()
	bad := 0
	for _, m := range msgs {
		if m.status != api.StatusDelivered {
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d messages not delivered", bad, len(msgs))
	}
	return ctx.Err()
}

// settle reads m's status until it is final or deadline passes.
func (t *tracker) settle(ctx context.Context, m *msgState, deadline time.Time) {
	for {
		status, err := t.st.sides[m.side].messageStatus(ctx, m.id)
		if err == nil && terminal(status) {
			t.mu.Lock()
			m.status = status
			t.mu.Unlock()
			return
		}
		if time.Now().After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// scrapeCost measures the CPU one GET /metrics costs the US gateway.
func (b *bench) scrapeCost(ctx context.Context, n int) (float64, error) {
	s0, err := b.st.sample()
	if err != nil {
		return 0, err
	}
	for range n {
		if _, err := b.st.sides[0].deliveredCount(ctx); err != nil {
			return 0, err
		}
	}
	s1, err := b.st.sample()
	if err != nil {
		return 0, err
	}
	return round3((s1.cpu[0] - s0.cpu[0]).Seconds() * 1000 / float64(n)), nil
}
