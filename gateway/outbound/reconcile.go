package outbound

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/transport"
)

// ReconcilerConfig configures a Reconciler.
type ReconcilerConfig struct {
	Interval    time.Duration // sweep period; 0 means 30s
	ResendAfter time.Duration // no accepted receipt this long after acceptance: resend; 0 means 5 min, doubling per resend
	MaxResends  int           // 0 means 8
	Leeway      time.Duration // past exp before failing a message; 0 means 2 min
	Now         func() time.Time
	Logger      *slog.Logger
}

// Reconciler closes the loop on every message we sent (invariant 2,
// catalogue F-10, F-17): a message with no accepted receipt after
// ResendAfter is sent to the peer again — same envelope, same id — and the
// peer answers a duplicate with its stored receipts; a message with no
// terminal receipt when its exp passes is marked failed with an alert.
//
// It follows cmx_status with a KV watch and keeps only the messages still
// open in memory, so its memory is bounded by the messages in flight.
type Reconciler struct {
	cfg  ReconcilerConfig
	kv   jetstream.KeyValue
	sent *ledger.Store
	fwd  *Forwarder
	// open is written by track (Run's goroutine) and Sweep, always under
	// mu, so that Sweep and Awaiting may be called from other goroutines.
	mu   sync.RWMutex
	open map[string]*openMsg
}

type openMsg struct {
	rec      *ledger.Record
	resends  int
	nextSend time.Time
}

// NewReconciler returns a Reconciler over the cmx_status bucket.
func NewReconciler(cfg ReconcilerConfig, kv jetstream.KeyValue, sent *ledger.Store, fwd *Forwarder) *Reconciler {
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.ResendAfter <= 0 {
		cfg.ResendAfter = 5 * time.Minute
	}
	if cfg.MaxResends <= 0 {
		cfg.MaxResends = 8
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = 2 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{cfg: cfg, kv: kv, sent: sent, fwd: fwd, open: map[string]*openMsg{}}
}

// Run follows the ledger and sweeps until ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	w, err := r.kv.Watch(ctx, "out.>")
	if err != nil {
		return fmt.Errorf("outbound: reconcile watch: %w", err)
	}
	defer func() { _ = w.Stop() }()
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			r.track(e)
		case <-tick.C:
			r.Sweep(ctx)
		}
	}
}

func (r *Reconciler) track(e jetstream.KeyValueEntry) {
	if e == nil { // end of the initial replay
		return
	}
	id := strings.TrimPrefix(e.Key(), "out.")
	if e.Operation() != jetstream.KeyValuePut {
		r.forget(id)
		return
	}
	// Only what the sweep needs is decoded: every status change of every
	// sent message passes here, and the records also carry the receipts.
	var t struct {
		Seq      uint64      `json:"seq"`
		Expiry   int64       `json:"exp"`
		Timeline []api.Event `json:"timeline"`
	}
	rec := ledger.Record{}
	if json.Unmarshal(e.Value(), &t) != nil {
		r.forget(id)
		return
	}
	rec.Seq, rec.Expiry, rec.Timeline = t.Seq, t.Expiry, t.Timeline
	if rec.Terminal() {
		r.forget(id)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.open[id]
	if !ok {
		o = &openMsg{nextSend: r.acceptedAt(&rec).Add(r.cfg.ResendAfter)}
		r.open[id] = o
	}
	o.rec = &rec
}

func (r *Reconciler) acceptedAt(rec *ledger.Record) time.Time {
	for _, e := range rec.Timeline {
		if e.Status == api.StatusAccepted {
			return e.At
		}
	}
	return r.cfg.Now()
}

// Sweep fails expired messages and resends those still without an accepted
// receipt. Run calls it every Interval; it is exported for tests and safe to
// call while Run runs.
func (r *Reconciler) Sweep(ctx context.Context) {
	now := r.cfg.Now()
	expired, resends := r.due(now)
	for _, id := range expired {
		r.fail(ctx, id, now)
	}
	for _, s := range resends {
		if err := r.fwd.Resend(ctx, s.seq, s.id, s.n); err != nil {
			// The link is down: a resend that never left is not one of the
			// MaxResends, and the next try comes without doubling the delay.
			r.uncount(s.id, now)
			r.cfg.Logger.WarnContext(ctx, "resend failed", slog.String("msg_id", s.id), slog.Any("err", err))
			continue
		}
		r.cfg.Logger.WarnContext(ctx, "no receipt yet; message sent again", slog.String("msg_id", s.id), slog.Int("resend", s.n))
	}
}

// resend is one resend that Sweep decided on.
type resend struct {
	id  string
	seq uint64
	n   int
}

// due picks, under the lock, the open messages past exp + leeway and those
// due for a resend, counting and scheduling each resend; Sweep does the
// I/O afterwards, outside the lock.
func (r *Reconciler) due(now time.Time) (expired []string, resends []resend) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, o := range r.open {
		switch {
		case o.rec.Expiry > 0 && now.After(time.Unix(o.rec.Expiry, 0).Add(r.cfg.Leeway)):
			expired = append(expired, id)
		case !o.rec.Has(api.StatusReceived) && now.After(o.nextSend) && o.resends < r.cfg.MaxResends:
			o.resends++
			o.nextSend = now.Add(r.cfg.ResendAfter << o.resends)
			resends = append(resends, resend{id: id, seq: o.rec.Seq, n: o.resends})
		}
	}
	return expired, resends
}

// uncount takes back a resend that could not be sent.
func (r *Reconciler) uncount(id string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if o, ok := r.open[id]; ok && o.resends > 0 {
		o.resends--
		o.nextSend = now.Add(r.cfg.ResendAfter)
	}
}

func (r *Reconciler) fail(ctx context.Context, id string, now time.Time) {
	failed := false
	_, err := r.sent.Update(ctx, id, func(rec *ledger.Record) bool {
		if rec.Terminal() {
			return false // a receipt came in meanwhile: no alarm
		}
		failed = rec.AddEvent(ledger.Event(api.StatusFailed, now, "no_terminal_receipt_before_expiry"))
		return failed
	})
	if err != nil {
		r.cfg.Logger.WarnContext(ctx, "could not mark message failed", slog.String("msg_id", id), slog.Any("err", err))
		return
	}
	if failed {
		r.cfg.Logger.ErrorContext(ctx, "ALERT message failed: no terminal receipt before expiry", slog.String("msg_id", id))
	}
	r.forget(id)
}

func (r *Reconciler) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.open, id)
}

// Awaiting reports how many sent messages still wait for the peer's
// accepted receipt, and when the oldest of them was accepted (zero if none):
// the receipt lag operators watch. Safe to call while Run runs.
func (r *Reconciler) Awaiting() (n int, oldest time.Time) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, o := range r.open {
		if o.rec.Has(api.StatusReceived) {
			continue
		}
		n++
		if at := r.acceptedAt(o.rec); oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
	}
	return n, oldest
}

// Resend publishes the outbox item at seq to the peer again under
// Nats-Msg-Id "<id>.resend.<n>", so the peer's stream does not drop it as a
// duplicate while its application-level dedup answers with the stored
// receipts.
func (f *Forwarder) Resend(ctx context.Context, seq uint64, id string, n int) error {
	s, err := f.local.Stream(ctx, transport.StreamOut)
	if err != nil {
		return err
	}
	raw, err := s.GetMsg(ctx, seq)
	if err != nil {
		return err
	}
	out, err := f.peerSubject(raw.Subject)
	if err != nil {
		return err
	}
	env, _, err := transport.SplitOutboxItem(raw.Header, raw.Data)
	if err != nil {
		return err
	}
	m := nats.NewMsg(out)
	m.Data = env
	m.Header.Set(jetstream.MsgIDHeader, id+".resend."+strconv.Itoa(n))
	ctx, span := f.cfg.Tracing.StartSend(f.cfg.Tracing.Extract(ctx, raw.Header), m.Header, m.Subject, id, true, typeAttr(m.Subject)...)
	defer span.End()
	_, err = f.border.PublishMsg(ctx, m, jetstream.WithExpectStream(transport.StreamIn))
	return err
}
