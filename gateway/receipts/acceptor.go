package receipts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// AcceptorConfig configures an Acceptor.
type AcceptorConfig struct {
	Verifier *envelope.ReceiptVerifier // pinned to the peer's roots, Self = our party; required
	Now      func() time.Time
	Logger   *slog.Logger
	Tracing  transport.Tracing // zero means no tracing
}

// Acceptor verifies, matches and records the peer's receipts.
type Acceptor struct {
	cfg   AcceptorConfig
	sent  *ledger.Store
	store *ledger.Receipts
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
	return &Acceptor{cfg: cfg, sent: sent, store: store}
}

// Accept processes one receipt token. It returns the verified receipt, or an
// error wrapping ErrInvalid, ErrUnknownMessage or ErrMismatch, or a transient
// storage error.
func (a *Acceptor) Accept(ctx context.Context, token []byte) (*envelope.VerifiedReceipt, error) {
	ctx, span := a.cfg.Tracing.Tracer.Start(ctx, "receipt verify")
	defer span.End()
	vr, err := a.cfg.Verifier.Verify(token, a.cfg.Now())
	if err != nil {
		span.SetStatus(codes.Error, string(envelope.ReasonOf(err)))
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	span.SetAttributes(semconv.MessagingMessageID(vr.Msg), transport.AttrStatus.String(string(vr.Status)))
	rec, _, err := a.sent.Get(ctx, vr.Msg)
	if errors.Is(err, ledger.ErrNotFound) {
		return vr, fmt.Errorf("%w: %s", ErrUnknownMessage, vr.Msg)
	}
	if err != nil {
		return vr, err
	}
	linkMessageTrace(span, rec.Traceparent)
	if vr.EnvSHA256 != rec.EnvSHA256 || (vr.MsgSHA256 != "" && vr.MsgSHA256 != rec.MsgSHA256) {
		_ = a.store.Quarantine(ctx, envelope.Digest(token), token)
		return vr, fmt.Errorf("%w: %s %s", ErrMismatch, vr.Msg, vr.Status)
	}
	// The receipt's bytes and the event it attests go into the message's
	// record in one write; the first stored bytes win (R-05: ECDSA is
	// randomised, a re-signed receipt differs) and the timeline moves once.
	status, second := string(vr.Status), false
	_, err = a.sent.UpdateFrom(ctx, vr.Msg, rec, func(r *ledger.Record) bool {
		stored, changed := r.PutReceipt(status, token)
		second = stored != string(token)
		return r.AddEvent(event(vr)) || changed
	})
	if err != nil {
		return vr, err
	}
	if second {
		a.cfg.Logger.InfoContext(ctx, "second receipt for the same status kept out",
			slog.String("msg_id", vr.Msg), slog.String("status", status))
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
