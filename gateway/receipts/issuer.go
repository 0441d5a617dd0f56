package receipts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/transport"
)

// IssuerConfig configures an Issuer.
type IssuerConfig struct {
	Party, Peer string          // our and the peer's party codes; required
	Signer      *certs.Identity // our signing identity; required
	Now         func() time.Time
	Logger      *slog.Logger
	Tracing     transport.Tracing // zero means no tracing
}

// Issuer signs, stores and sends our receipts.
type Issuer struct {
	cfg   IssuerConfig
	js    jetstream.JetStream
	store *ledger.Receipts

	failingSince atomic.Int64 // unix nanos of the first failure since the last success; 0 while healthy
}

// ErrEvidenceUnavailable means receipts could not be signed or stored for
// longer than the grace period (invariant 6: fail closed on evidence).
var ErrEvidenceUnavailable = errors.New("receipts: receipts cannot be signed or stored")

// Healthy returns ErrEvidenceUnavailable once issuing has kept failing for
// longer than grace, nil otherwise. The gateway then stops accepting new
// messages until a receipt is issued again.
func (i *Issuer) Healthy(now time.Time, grace time.Duration) error {
	since := i.failingSince.Load()
	if since == 0 || now.Sub(time.Unix(0, since)) <= grace {
		return nil
	}
	return fmt.Errorf("%w since %s", ErrEvidenceUnavailable, time.Unix(0, since).UTC().Format(time.RFC3339))
}

// observe records the outcome of one issue for Healthy.
func (i *Issuer) observe(err error) {
	if err == nil {
		i.failingSince.Store(0)
		return
	}
	i.failingSince.CompareAndSwap(0, i.cfg.Now().UnixNano())
}

// NewIssuer returns an Issuer publishing to the outbox through js.
func NewIssuer(cfg IssuerConfig, js jetstream.JetStream, store *ledger.Receipts) *Issuer {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Tracing = cfg.Tracing.OrNoop()
	return &Issuer{cfg: cfg, js: js, store: store}
}

// Store keeps a signed receipt durably and returns the bytes to send: token
// itself, or the bytes stored first for the same message and status (the
// first stored bytes win, invariant 4). The receiving side stores a
// receipt in the message's claim record, with the event it attests.
type Store func(ctx context.Context, token []byte) (stored []byte, err error)

// Issue signs r (Issuer, Audience, IssuedAt filled in when empty), hands the
// token to store and publishes the bytes store returns under the receipt's
// id as Nats-Msg-Id. It returns those bytes. An error from store is
// returned as it is, without publishing.
func (i *Issuer) Issue(ctx context.Context, r *envelope.Receipt, hdr nats.Header, store Store) ([]byte, error) {
	return i.issue(ctx, "", r, hdr, store)
}

// IssueConflict issues the rejected/duplicate_conflict receipt for an
// envelope that reuses a message id with other content. It is stored in
// cmx_receipts, apart from the message's own receipts (keyed by the
// conflicting digest), so the original's receipts stay untouched and both
// are kept as evidence.
func (i *Issuer) IssueConflict(ctx context.Context, r *envelope.Receipt, hdr nats.Header) ([]byte, error) {
	return i.issue(ctx, ".conflict."+r.EnvSHA256, r, hdr, i.apart("conflict", r.Msg+"."+r.EnvSHA256, r))
}

// IssueUnopened issues the rejected receipt for an envelope that could not
// be opened. It names the transport's message id but is stored apart in
// cmx_receipts, keyed by the envelope digest, and claims nothing: a
// corrupted copy must never block the genuine message that a resend brings
// later (catalogue N-09, F-17).
func (i *Issuer) IssueUnopened(ctx context.Context, r *envelope.Receipt, hdr nats.Header) ([]byte, error) {
	return i.issue(ctx, ".unopened."+r.EnvSHA256, r, hdr, i.apart("unopened", r.Msg+"."+r.EnvSHA256, r))
}

// apart stores a receipt in cmx_receipts under role and key.
func (i *Issuer) apart(role, key string, r *envelope.Receipt) Store {
	return func(ctx context.Context, token []byte) ([]byte, error) {
		stored, _, err := i.store.Put(ctx, role, key, string(r.Status), token)
		return stored, err
	}
}

func (i *Issuer) issue(ctx context.Context, idSuffix string, r *envelope.Receipt, hdr nats.Header, store Store) (stored []byte, err error) {
	if r.Issuer == "" {
		r.Issuer = i.cfg.Party
	}
	if r.Audience == "" {
		r.Audience = i.cfg.Peer
	}
	if r.IssuedAt == 0 {
		r.IssuedAt = i.cfg.Now().Unix()
	}
	ctx, span := i.cfg.Tracing.Tracer.Start(ctx, "receipt issue", trace.WithAttributes(
		transport.AttrStatus.String(string(r.Status)), semconv.MessagingMessageID(r.Msg)))
	defer span.End()
	if r.Reason != "" {
		span.SetAttributes(transport.AttrReason.String(string(r.Reason)))
	}
	// Sign first and let the store decide: a repeat (a redelivery) costs one
	// wasted signature but saves a read on every first issue.
	token, err := envelope.IssueReceipt(r, i.cfg.Signer)
	if err != nil {
		i.observe(err)
		return nil, fmt.Errorf("receipts: sign %s/%s: %w", r.Msg, r.Status, err)
	}
	if stored, err = store(ctx, token); err != nil {
		if !errors.Is(err, ledger.ErrExists) { // a lost claim race is no failure to keep evidence
			i.observe(err)
		}
		return nil, err
	}
	err = i.publish(ctx, stored, envelope.ReceiptID(r.Msg, r.Status)+idSuffix, hdr)
	i.observe(err)
	return stored, err
}

// Send publishes a stored receipt again, byte for byte, under its own
// Nats-Msg-Id: after a crash between storing and publishing it goes out
// now, and when it did go out the outbox drops the repeat (within its
// duplicate window; past it the peer gets the same bytes twice, which it
// takes as one).
func (i *Issuer) Send(ctx context.Context, msgID, status string, token []byte) error {
	err := i.publish(ctx, token, envelope.ReceiptID(msgID, envelope.Status(status)), nil)
	i.observe(err)
	return err
}

// Resend publishes again every receipt stored for msgID (by status), byte
// for byte, under a Nats-Msg-Id derived from trigger (the duplicate's
// inbound sequence) so that the outbox does not drop it as a duplicate
// while a redelivery of the same trigger still does.
func (i *Issuer) Resend(ctx context.Context, msgID, trigger string, stored map[string]string, hdr nats.Header) (int, error) {
	n := 0
	for st, token := range ledger.ReceiptsInOrder(stored) {
		if err := i.publish(ctx, []byte(token), msgID+"."+st+".resend."+trigger, hdr); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (i *Issuer) publish(ctx context.Context, token []byte, msgID string, _ nats.Header) error {
	m := nats.NewMsg(transport.OutRcptSubject(strings.ToLower(i.cfg.Peer)))
	m.Data = token
	ctx, span := i.cfg.Tracing.StartSend(ctx, m.Header, m.Subject, msgID, false)
	defer span.End()
	if _, err := i.js.PublishMsg(ctx, m, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(transport.StreamOut)); err != nil {
		span.SetStatus(codes.Error, "outbox publish failed")
		return fmt.Errorf("receipts: publish %s: %w", msgID, err)
	}
	return nil
}
