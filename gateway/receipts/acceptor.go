package receipts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/transport"
)

var (
	// ErrUnknownMessage means the receipt names a message we have no record
	// of. It may be a race with our own ingress (retry a few times) or a
	// receipt for something we never sent (catalogue R-01).
	ErrUnknownMessage = errors.New("receipts: receipt for an unknown message")
	// ErrMismatch means the receipt verifies but attests an envelope other
	// than the one we sent (catalogue R-02).
	ErrMismatch = errors.New("receipts: receipt does not match the message we sent")
	// ErrInvalid means the receipt does not verify (catalogue ).
	ErrInvalid = errors.New("receipts: receipt does not verify")
)

// AcceptorConfig configures an Acceptor. Fields must not change after NewAcceptor.
type AcceptorConfig struct {
	Verifier *envelope.ReceiptVerifier // pinned to the peer's roots, Self = our party; required
	Now      func() time.Time
	Logger   *slog.Logger
	Tracing  transport.Tracing // zero means no tracing
	// Relayed holds the relayed events not yet written (an
	// *outbound.Relayed): the write of a message's receipt carries the
	// one held for it. nil means none.
	Relayed RelayedEvents
	// Recent holds the records written last: a receipt write starts from
	// the copy there instead of reading the record, and keeps its result
	// there. nil means none.
	Recent *ledger.Recent
	// Hold is how long a receipt that is not terminal (accepted) waits for
	// the same message's terminal one (delivered, rejected) to share its
	// write; the terminal one never waits. 0 means no wait.
	Hold time.Duration
	// HoldMax bounds the receipts waiting at once; past it a receipt is
	// written without waiting. A waiting receipt keeps its caller (a
	// worker of the inbound stage) busy: keep HoldMax well below the
	// callers, so that the terminal receipts they wait for are still taken
	// in. 0 means 1.
	HoldMax int
}

// RelayedEvents holds relayed events that no write carried yet.
type RelayedEvents interface {
	// Held returns the relayed time held for message id, if any.
	Held(id string) (time.Time, bool)
	// Carried tells that a durable write of id's record holds its relayed event.
	Carried(id string)
}

// Acceptor verifies, matches and records the peer's receipts.
type Acceptor struct {
	cfg     AcceptorConfig
	sent    *ledger.Store
	store   *ledger.Receipts
	group   coalescer
	holding atomic.Int32 // receipts waiting for Hold
}

// NewAcceptor returns an Acceptor over the outbound ledger and receipt store.
func NewAcceptor(cfg AcceptorConfig, sent *ledger.Store, store *ledger.Receipts) *Acceptor {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Tracing = cfg.Tracing.OrNoop()
	cfg.HoldMax = max(cfg.HoldMax, 1)
	return &Acceptor{cfg: cfg, sent: sent, store: store}
}

// Accept processes one receipt token. It returns the verified receipt, or an
// error wrapping ErrInvalid, ErrUnknownMessage or ErrMismatch, or a transient
// storage error. It returns once the receipt is durable in the message's
// record: receipts of one message that arrive together share one write.
func (a *Acceptor) Accept(ctx context.Context, token []byte) (*envelope.VerifiedReceipt, error) {
	ctx, span := a.cfg.Tracing.Tracer.Start(ctx, "receipt verify")
	defer span.End()
	vr, err := a.cfg.Verifier.Verify(token, a.cfg.Now())
	if err != nil {
		span.SetStatus(codes.Error, string(envelope.ReasonOf(err)))
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	span.SetAttributes(semconv.MessagingMessageID(vr.Msg), transport.AttrStatus.String(string(vr.Status)))
	op := &rcptOp{vr: vr, token: token}
	if err := a.write(ctx, op); err != nil {
		return vr, err
	}
	linkMessageTrace(span, op.traceparent)
	if op.err != nil {
		return vr, op.err
	}
	if op.second {
		a.cfg.Logger.InfoContext(ctx, "second receipt for the same status kept out",
			slog.String("msg_id", vr.Msg), slog.String("status", string(vr.Status)))
	}
	return vr, nil
}

// event is the timeline event a receipt attests, at the time the peer signed.
func event(vr *envelope.VerifiedReceipt) api.Event {
	at := time.Unix(vr.IssuedAt, 0)
	switch vr.Status {
	case envelope.StatusAccepted:
		return ledger.Event(api.StatusReceived, at, "")
	case envelope.StatusDelivered:
		if vr.DeliveredAt > 0 {
			at = time.Unix(vr.DeliveredAt, 0)
		}
		return ledger.Event(api.StatusDelivered, at, "")
	default:
		return ledger.Event(api.StatusRejected, at, string(vr.Reason))
	}
}

// linkMessageTrace links the verify span to the trace of the message the
// receipt is for (our ingress span that stored the envelope) when it is not
// already in that trace: with trace context stopped at the border a receipt
// starts a trace of its own, and the link leads back to the message.
func linkMessageTrace(span trace.Span, traceparent string) {
	if traceparent == "" {
		return
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": traceparent})
	sc := trace.SpanContextFromContext(ctx)
	if sc.IsValid() && sc.TraceID() != span.SpanContext().TraceID() {
		span.AddLink(trace.Link{SpanContext: sc})
	}
}
