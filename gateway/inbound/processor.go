package inbound

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"golang.org/x/sync/errgroup"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/receipts"
	"github.com/cmx-exchange/cmx/gateway/transport"
)

// Opener opens envelopes (an *envelope.Opener).
type Opener interface {
	Open(env []byte, now time.Time) (*envelope.Opened, error)
}

// Issuer issues our receipts (a *receipts.Issuer).
type Issuer interface {
	// Issue signs r, stores the token with store (which returns the bytes
	// stored first for that receipt) and sends the stored bytes.
	Issue(ctx context.Context, r *envelope.Receipt, hdr nats.Header, store receipts.Store) ([]byte, error)
	IssueConflict(ctx context.Context, r *envelope.Receipt, hdr nats.Header) ([]byte, error)
	IssueUnopened(ctx context.Context, r *envelope.Receipt, hdr nats.Header) ([]byte, error)
	// Send sends a stored receipt again under its own id (the outbox drops a repeat).
	Send(ctx context.Context, msgID, status string, token []byte) error
	// Resend sends stored receipts (by status) as the answer to a duplicate copy.
	Resend(ctx context.Context, msgID, trigger string, stored map[string]string, hdr nats.Header) (int, error)
}

// Acceptor accepts the peer's receipts (a *receipts.Acceptor).
type Acceptor interface {
	Accept(ctx context.Context, token []byte) (*envelope.VerifiedReceipt, error)
}

// Outcome is the result of one delivery attempt.
type Outcome struct {
	Pull       bool          // placed in the agency's pull inbox; delivered when the agency acks
	Err        error         // nil: the agency answered 2xx
	Permanent  bool          // with Err: retrying cannot help (4xx, redirect, TLS trust)
	RetryAfter time.Duration // with Err: the agency's (capped) Retry-After
}

// Deliverer hands a verified message to one of our agencies.
type Deliverer interface {
	Deliver(ctx context.Context, agency string, d *api.Delivery, hdr nats.Header) Outcome
}

// Directory knows our agencies and local policy.
type Directory interface {
	// Resolve returns the agency (party-local name) that receives a message
	// of type t for the signed recipient ("JP:MHLW", or "" for the type's
	// default agency), or false when no agency of ours takes it.
	Resolve(t envelope.Type, recipient string) (string, bool)
	// MarkingAllowed reports whether local policy accepts the marking.
	MarkingAllowed(marking string) bool
}

// Config configures a Processor.
type Config struct {
	Party, Peer string // our and the peer's party codes; required
	Workers     int    // concurrent messages per consumer; 0 means 4 × GOMAXPROCS
	// ReceiptPermanent classifies an Acceptor error: true means Term (the
	// receipt can never be accepted), false means retry later.
	ReceiptPermanent func(err error, attempt uint64) bool
	// Backoff is the redelivery delay for JetStream delivery attempt n
	// (1-based), at least the agency's retryAfter (the gateway passes
	// delivery.Backoff); nil means max(1 s, retryAfter).
	Backoff func(n uint64, retryAfter time.Duration) time.Duration
	Now     func() time.Time
	Logger  *slog.Logger
	Tracing transport.Tracing // zero means no tracing; Border decides if the peer\'s context is continued
}

// Processor consumes CMX_IN.
type Processor struct {
	cfg       Config
	js        jetstream.JetStream
	seen      *ledger.Store
	opener    Opener
	issuer    Issuer
	acceptor  Acceptor
	deliverer Deliverer
	dir       Directory
	locks     [64]sync.Mutex // per message id (striped): no concurrent work on one id
}

// New returns a Processor. All dependencies are required.
func New(cfg Config, js jetstream.JetStream, seen *ledger.Store, o Opener, i Issuer, a Acceptor, d Deliverer, dir Directory) *Processor {
	if cfg.Workers <= 0 {
		cfg.Workers = 4 * runtime.GOMAXPROCS(0)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Tracing = cfg.Tracing.OrNoop()
	if cfg.Backoff == nil {
		cfg.Backoff = func(_ uint64, retryAfter time.Duration) time.Duration { return max(time.Second, retryAfter) }
	}
	if cfg.ReceiptPermanent == nil {
		cfg.ReceiptPermanent = func(error, uint64) bool { return false }
	}
	return &Processor{cfg: cfg, js: js, seen: seen, opener: o, issuer: i, acceptor: a, deliverer: d, dir: dir}
}

func (p *Processor) lock(id string) func() {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	mu := &p.locks[h.Sum32()%uint32(len(p.locks))]
	mu.Lock()
	return mu.Unlock
}

// Consumer names and filters.
func (p *Processor) consumerConfigs() (msgs, rcpts jetstream.ConsumerConfig) {
	from, to := strings.ToLower(p.cfg.Peer), strings.ToLower(p.cfg.Party)
	base := jetstream.ConsumerConfig{
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait, // kept alive by heartbeats while a message is handled
		MaxDeliver:    -1,
		MaxAckPending: 1024,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	msgs, rcpts = base, base
	msgs.Durable, msgs.FilterSubject = "inbound-msg", "cmx.x."+from+"."+to+".msg.>"
	rcpts.Durable, rcpts.FilterSubject = "inbound-rcpt", transport.XRcptSubject(from, to)
	return msgs, rcpts
}

// Run consumes until ctx ends.
func (p *Processor) Run(ctx context.Context) error {
	mc, rc := p.consumerConfigs()
	msgCons, err := p.js.CreateOrUpdateConsumer(ctx, transport.StreamIn, mc)
	if err != nil {
		return fmt.Errorf("inbound: message consumer: %w", err)
	}
	rcptCons, err := p.js.CreateOrUpdateConsumer(ctx, transport.StreamIn, rc)
	if err != nil {
		return fmt.Errorf("inbound: receipt consumer: %w", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.consume(ctx, msgCons, p.handleMsg) })
	g.Go(func() error { return p.consume(ctx, rcptCons, p.handleRcpt) })
	return g.Wait()
}

// consume feeds one consumer's messages to a bounded pool of workers. On
// shutdown the iterator is drained and every message not yet handled is
// nakked, so a restart gets it back at once instead of after AckWait.
func (p *Processor) consume(ctx context.Context, cons jetstream.Consumer, handle func(context.Context, jetstream.Msg)) error {
	// Pull little ahead: a message waiting in a buffer has no heartbeat, and
	// one that waits past AckWait behind slow webhooks would be handed to
	// another replica while this one still holds it.
	iter, err := cons.Messages(jetstream.PullMaxMessages(p.cfg.Workers))
	if err != nil {
		return fmt.Errorf("inbound: consume: %w", err)
	}
	type held struct {
		m    jetstream.Msg
		stop func() // its heartbeat, running from the moment we took it
	}
	work := make(chan held)
	var wg sync.WaitGroup
	for range p.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := range work {
				if ctx.Err() != nil {
					h.stop()
					_ = h.m.Nak()
					continue
				}
				p.safely(ctx, h.m, handle)
				h.stop()
			}
		}()
	}
	stop := context.AfterFunc(ctx, iter.Drain)
	defer stop()
	for {
		var m jetstream.Msg
		if m, err = iter.Next(); err != nil {
			break
		}
		work <- held{m: m, stop: heartbeat(m)}
	}
	close(work)
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	// The consumer is gone (deleted, connection closed): fail loudly, so the
	// node stops instead of running on without this consumer.
	return fmt.Errorf("inbound: consumer stopped: %w", err)
}

// safely is the recover boundary around one message (catalogue J-16 defence
// in depth): a panic is logged and the message retried later, never lost.
func (p *Processor) safely(ctx context.Context, m jetstream.Msg, handle func(context.Context, jetstream.Msg)) {
	defer func() {
		if r := recover(); r != nil {
			p.cfg.Logger.ErrorContext(ctx, "ALERT panic while processing an inbound message",
				slog.String("subject", m.Subject()), slog.Any("panic", r))
			_ = m.NakWithDelay(time.Minute)
		}
	}()
	handle(ctx, m)
}

// ackWait is short, so that a message a stopped gateway had pulled but not
// handled comes back soon after a restart; heartbeat keeps it from expiring
// while a message is really being handled (a slow webhook: F-09).
const ackWait = 10 * time.Second

// heartbeat tells the server every ackWait/3 that m is still in progress,
// until the returned stop is called.
func heartbeat(m jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	return func() { close(done); <-finished }
}

// handleRcpt accepts one peer receipt.
func (p *Processor) handleRcpt(ctx context.Context, m jetstream.Msg) {
	ctx, span := p.cfg.Tracing.StartProcess(ctx, m.Headers(), m.Subject(), m.Headers().Get(jetstream.MsgIDHeader), true)
	defer span.End()
	meta, _ := m.Metadata()
	attempt := uint64(1)
	if meta != nil {
		attempt = meta.NumDelivered
	}
	vr, err := p.acceptor.Accept(ctx, m.Data())
	switch {
	case err == nil:
		p.cfg.Logger.InfoContext(ctx, "receipt accepted", slog.String("msg_id", vr.Msg), slog.String("status", string(vr.Status)))
		_ = m.Ack()
	case p.cfg.ReceiptPermanent(err, attempt):
		span.SetStatus(codes.Error, "receipt refused")
		p.cfg.Logger.ErrorContext(ctx, "ALERT receipt refused", slog.Any("err", err))
		_ = m.Term()
	default:
		p.cfg.Logger.WarnContext(ctx, "receipt not accepted yet; retrying", slog.Any("err", err))
		_ = m.NakWithDelay(min(p.cfg.Backoff(attempt, 0), maxLocalRetry))
	}
}
