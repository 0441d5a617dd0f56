package outbound

import (
	"container/list"
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
)

// DefaultRelayedHold is how long a relayed event waits in memory for the
// write of the peer's first receipt to carry it; past it (checked every
// quarter of it) the event is written alone, so a message to a slow or
// absent peer shows relayed about this late. The receipts of a peer at
// ease come within milliseconds, but a peer flat out queues what it was
// relayed: measured with cmx bench, 4 to 10 s from relay to receipt, when a
// 2 s hold carried a fifth of the events and 10 s all of them.
const DefaultRelayedHold = 10 * time.Second

// RelayedConfig configures a Relayed. Fields must not change after NewRelayed.
type RelayedConfig struct {
	Hold    time.Duration  // 0 means DefaultRelayedHold
	Max     int            // events held at once; 0 means 16384. Past it an event is written at once.
	Workers int            // concurrent writes of events written alone; 0 means 4
	Recent  *ledger.Recent // records written last, to update without a read; nil means none
	Logger  *slog.Logger   // nil discards
}

// Relayed records the relayed events of the messages we sent (the peer's
// PubAck for the envelope) with as few writes as it can: it holds each event
// in memory for Hold, and the write of the peer's first receipt for that
// message carries it (the receipts acceptor asks Held and reports Carried).
// An event no receipt write carried within Hold is written alone, as one
// arriving when Max events are held is at once, so memory stays bounded
// whatever the peer does.
//
// Held events are in memory only. After a crash the ones not yet written are
// lost: the outbox item was acknowledged on the PubAck, so nothing relays it
// again, and the message's timeline goes from accepted straight to the
// peer's receipts (received, delivered or rejected), or stays accepted until
// they come. Its status is still right: a record's status is its
// highest-ranked event and relayed ranks below every receipt; nothing
// decides on relayed (the reconciler resends on the absence of received).
// On an orderly stop, Run writes what is held first.
//
// Safe for concurrent use.
type Relayed struct {
	cfg   RelayedConfig
	sent  *ledger.Store
	write chan relayedAt // events to write alone, to the workers of Run

	mu     sync.Mutex
	byID   map[string]*list.Element // of *heldEvent
	order  *list.List               // oldest first, so by deadline
	closed bool                     // Run has stopped holding
}

type relayedAt struct {
	id string
	at time.Time
}

type heldEvent struct {
	relayedAt
	due time.Time // when it is written alone
}

// relayedShutdownFlush bounds how long Run spends writing held events when
// it stops.
const relayedShutdownFlush = 3 * time.Second

// NewRelayed returns a Relayed writing to sent. Run must run for events to
// be written alone.
func NewRelayed(cfg RelayedConfig, sent *ledger.Store) *Relayed {
	if cfg.Hold <= 0 {
		cfg.Hold = DefaultRelayedHold
	}
	if cfg.Max <= 0 {
		cfg.Max = 16384
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Relayed{cfg: cfg, sent: sent, write: make(chan relayedAt, 1024),
		byID: map[string]*list.Element{}, order: list.New()}
}

// Note holds the relayed event of message id, relayed at at. An event
// already held for id is kept (it is the earlier one). When Max events are
// held, the event is handed to Run's writers instead, which blocks while
// they are behind, until ctx ends: back-pressure on the forwarder rather
// than unbounded memory. After Run stopped, Note writes the event itself.
func (r *Relayed) Note(ctx context.Context, id string, at time.Time) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.mark(ctx, relayedAt{id, at})
		return
	}
	if _, ok := r.byID[id]; ok {
		r.mu.Unlock()
		return
	}
	if len(r.byID) < r.cfg.Max {
		r.byID[id] = r.order.PushBack(&heldEvent{relayedAt: relayedAt{id, at}, due: time.Now().Add(r.cfg.Hold)})
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	select {
	case r.write <- relayedAt{id, at}:
	case <-ctx.Done():
	}
}

// Held returns the relayed time held for message id, if any.
func (r *Relayed) Held(id string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.byID[id]; ok {
		return e.Value.(*heldEvent).at, true
	}
	return time.Time{}, false
}

// Carried tells that a durable write of id's record holds its relayed
// event: the event is no longer held.
func (r *Relayed) Carried(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.byID[id]; ok {
		r.order.Remove(e)
		delete(r.byID, id)
	}
}

// Len is the number of events held.
func (r *Relayed) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

// Run writes the events held past Hold, and those Note hands over, until
// ctx ends; then it writes what it still holds, for at most a few seconds.
func (r *Relayed) Run(ctx context.Context) error {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Go(func() { r.writeLoop(wctx, stop) })
	}
	tick := time.NewTicker(max(r.cfg.Hold/4, time.Millisecond))
	defer tick.Stop()
	var left []relayedAt // taken but not handed when ctx ended
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case now := <-tick.C:
			left = r.hand(ctx, r.take(func(e *heldEvent) bool { return !e.due.After(now) }))
		}
	}
	// Stopping: from now on Note writes itself; write what is held.
	flush := time.AfterFunc(relayedShutdownFlush, cancel)
	defer flush.Stop()
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.hand(wctx, append(left, r.take(func(*heldEvent) bool { return true })...))
	close(stop)
	wg.Wait()
	return nil
}

// take removes and returns the held events, oldest first, up to the first
// one that is not ready.
func (r *Relayed) take(ready func(*heldEvent) bool) []relayedAt {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []relayedAt
	for e := r.order.Front(); e != nil && ready(e.Value.(*heldEvent)); e = r.order.Front() {
		h := e.Value.(*heldEvent)
		r.order.Remove(e)
		delete(r.byID, h.id)
		out = append(out, h.relayedAt)
	}
	return out
}

// hand gives events to the writers until ctx ends, and returns those it
// could not give.
func (r *Relayed) hand(ctx context.Context, events []relayedAt) []relayedAt {
	for i, e := range events {
		select {
		case r.write <- e:
		case <-ctx.Done():
			return events[i:]
		}
	}
	return nil
}

// writeLoop writes events until stop is closed and nothing is left.
func (r *Relayed) writeLoop(ctx context.Context, stop <-chan struct{}) {
	for {
		select {
		case e := <-r.write:
			r.mark(ctx, e)
		case <-stop:
			for {
				select {
				case e := <-r.write:
					r.mark(ctx, e)
				default:
					return
				}
			}
		}
	}
}

func (r *Relayed) mark(ctx context.Context, e relayedAt) {
	if err := MarkRelayed(ctx, r.sent, r.cfg.Recent, e.id, e.at); err != nil && ctx.Err() == nil {
		r.cfg.Logger.WarnContext(ctx, "relayed status not recorded", slog.String("msg_id", e.id), slog.Any("err", err))
	}
}

// MarkRelayed records the relayed event of an outbound message in its own
// write, starting from the copy of the record in recent if there is one
// (recent may be nil) and keeping the result there.
func MarkRelayed(ctx context.Context, sent *ledger.Store, recent *ledger.Recent, id string, at time.Time) error {
	r, err := sent.UpdateFrom(ctx, id, recent.Get(id), func(r *ledger.Record) bool {
		return r.AddEvent(ledger.Event(api.StatusRelayed, at, ""))
	})
	if errors.Is(err, ledger.ErrNotFound) {
		return nil // the ingress crashed between publish and record: nothing to annotate
	}
	if err == nil {
		recent.Put(r)
	}
	return err
}
