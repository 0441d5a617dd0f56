package receipts

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
)

// The peer's accepted and delivered receipts for a message usually arrive
// within milliseconds of each other and are handled by concurrent workers.
// Written one by one, they cost two fsynced writes of the message's record,
// and the second often loses the compare-and-swap to the first and reads
// the record again. So the writes of one message are grouped: while a write
// for it is being prepared or in flight, receipts that arrive for it join
// the next batch, which is written as one update once the previous one is
// durable. Every caller waits for the write that holds its receipt.

// rcptOp is one verified receipt waiting for its write, and its outcome.
type rcptOp struct {
	vr    *envelope.VerifiedReceipt
	token []byte

	// Set before the batch's done is closed.
	err         error
	second      bool   // a receipt for this status was stored first: kept out
	traceparent string // of the message's record, to link the verify span
}

// rcptBatch is the receipts of one message written together.
type rcptBatch struct {
	id    string
	ops   []*rcptOp     // guarded by coalescer.mu until the batch is closed
	done  chan struct{} // closed when every op has its outcome
	final chan struct{} // closed when a terminal receipt joins: no reason to hold
}

// keyWrites is the state of one message's writes.
type keyWrites struct {
	open     *rcptBatch    // taking receipts; its leader waits for inflight or the hold
	inflight chan struct{} // done of the batch being written; nil if none
}

// coalescer groups the receipt writes per message id.
type coalescer struct {
	mu   sync.Mutex
	keys map[string]*keyWrites
}

// join adds op to the open batch of its message, or opens one. lead is
// true for the caller that opened it, which then writes it once prev (the
// batch in flight before it, nil if none) is done.
func (c *coalescer) join(op *rcptOp) (b *rcptBatch, lead bool, prev chan struct{}) {
	id := op.vr.Msg
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys == nil {
		c.keys = map[string]*keyWrites{}
	}
	k := c.keys[id]
	if k == nil {
		k = &keyWrites{}
		c.keys[id] = k
	}
	if b = k.open; b != nil {
		b.ops = append(b.ops, op)
		if terminal(op.vr.Status) && !terminalIn(b.ops[:len(b.ops)-1]) {
			close(b.final)
		}
		return b, false, nil
	}
	b = &rcptBatch{id: id, ops: []*rcptOp{op}, done: make(chan struct{}), final: make(chan struct{})}
	if terminal(op.vr.Status) {
		close(b.final)
	}
	k.open = b
	return b, true, k.inflight
}

// startWrite ends joining b: from now on it is the batch in flight.
func (c *coalescer) startWrite(b *rcptBatch) []*rcptOp {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.keys[b.id]
	if k.open == b {
		k.open = nil
	}
	k.inflight = b.done
	return b.ops
}

// finish releases the callers of b and the batch waiting behind it.
func (c *coalescer) finish(b *rcptBatch) {
	c.mu.Lock()
	k := c.keys[b.id]
	if k.inflight == b.done {
		k.inflight = nil
	}
	if k.open == nil && k.inflight == nil {
		delete(c.keys, b.id)
	}
	c.mu.Unlock()
	close(b.done)
}

func terminal(s envelope.Status) bool { return s != envelope.StatusAccepted }

func terminalIn(ops []*rcptOp) bool {
	for _, op := range ops {
		if terminal(op.vr.Status) {
			return true
		}
	}
	return false
}

// write stores op in its message's record, in a batch with whatever other
// receipts of that message arrive meanwhile, and returns once the batch is
// written (op.err tells how it went) or ctx ends.
func (a *Acceptor) write(ctx context.Context, op *rcptOp) error {
	b, lead, prev := a.group.join(op)
	if lead {
		a.lead(ctx, b, prev)
		return nil
	}
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		select {
		case <-b.done: // written after all
			return nil
		default:
			return ctx.Err()
		}
	}
}

// lead writes batch b: after the write in flight before it, and after the
// hold when it holds only an accepted receipt.
func (a *Acceptor) lead(ctx context.Context, b *rcptBatch, prev chan struct{}) {
	defer a.group.finish(b)
	if prev != nil {
		select {
		case <-prev:
		case <-ctx.Done():
		}
	}
	rec, err := a.lookup(ctx, b.id)
	if err == nil && ctx.Err() == nil && a.cfg.Hold > 0 && !rec.Terminal() {
		a.hold(ctx, b)
	}
	ops := a.group.startWrite(b)
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = a.commit(ctx, b.id, rec, ops)
	}
	for _, op := range ops {
		if op.err == nil {
			op.err = err
		}
	}
}

// hold waits up to Hold for a terminal receipt to join b, unless HoldMax
// receipts wait already.
func (a *Acceptor) hold(ctx context.Context, b *rcptBatch) {
	defer a.holding.Add(-1)
	if a.holding.Add(1) > int32(a.cfg.HoldMax) {
		return
	}
	t := time.NewTimer(a.cfg.Hold)
	defer t.Stop()
	select {
	case <-b.final:
	case <-t.C:
	case <-ctx.Done():
	}
}

// lookup returns the record of message id: the copy this process wrote
// last if it has one, else the stored one.
func (a *Acceptor) lookup(ctx context.Context, id string) (*ledger.Record, error) {
	if rec := a.cfg.Recent.Get(id); rec != nil {
		return rec, nil
	}
	rec, _, err := a.sent.Get(ctx, id)
	if errors.Is(err, ledger.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrUnknownMessage, id)
	}
	return rec, err
}

// commit matches each receipt to the message we sent and writes the ones
// that match, with the events they attest and the message's held relayed
// event, in one update of its record: the first stored bytes win (R-05:
// ECDSA is randomised, a re-signed receipt differs) and the timeline only
// moves forward. It sets the outcome of each op that does not match and
// returns the write's error.
func (a *Acceptor) commit(ctx context.Context, id string, rec *ledger.Record, ops []*rcptOp) error {
	var match []*rcptOp
	for _, op := range ops {
		op.traceparent = rec.Traceparent
		if op.vr.EnvSHA256 != rec.EnvSHA256 || (op.vr.MsgSHA256 != "" && op.vr.MsgSHA256 != rec.MsgSHA256) {
			_ = a.store.Quarantine(ctx, envelope.Digest(op.token), op.token)
			op.err = fmt.Errorf("%w: %s %s", ErrMismatch, id, op.vr.Status)
			continue
		}
		match = append(match, op)
	}
	if len(match) == 0 {
		return nil
	}
	relayedAt, relayed := a.held(id)
	carried := false
	r, err := a.sent.UpdateFrom(ctx, id, rec, func(r *ledger.Record) bool {
		changed := false
		for _, op := range match {
			stored, put := r.PutReceipt(string(op.vr.Status), op.token)
			op.second = stored != string(op.token)
			changed = r.AddEvent(event(op.vr)) || put || changed
		}
		// The relayed event rides along only with a write made anyway.
		if carried = relayed && changed; carried {
			r.AddEvent(ledger.Event(api.StatusRelayed, relayedAt, ""))
		}
		return changed
	})
	if errors.Is(err, ledger.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrUnknownMessage, id)
	}
	if err != nil {
		return err
	}
	a.cfg.Recent.Put(r)
	if carried {
		a.cfg.Relayed.Carried(id)
	}
	return nil
}

func (a *Acceptor) held(id string) (time.Time, bool) {
	if a.cfg.Relayed == nil {
		return time.Time{}, false
	}
	return a.cfg.Relayed.Held(id)
}
