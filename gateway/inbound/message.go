package inbound

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/transport"
)

// item is one inbound message while it is processed.
type item struct {
	m      jetstream.Msg
	seq    uint64 // stream sequence in CMX_IN
	tries  uint64 // JetStream delivery count
	id     string // message id: signed jti once opened, the Nats-Msg-Id before
	env    []byte
	digest string // env_sha256
	opened *envelope.Opened
	hdr    nats.Header
	span   trace.Span     // the "process" span
	rec    *ledger.Record // the claim record as last read or written here
}

// open opens the envelope inside an "open" span.
func (p *Processor) open(ctx context.Context, it *item) (*envelope.Opened, error) {
	_, span := p.cfg.Tracing.Tracer.Start(ctx, "open", trace.WithAttributes(semconv.MessagingMessageID(it.id)))
	defer span.End()
	opened, err := p.opener.Open(it.env, p.cfg.Now())
	if err != nil {
		span.SetStatus(codes.Error, string(envelope.ReasonOf(err)))
		return nil, err
	}
	span.SetAttributes(transport.AttrMessageType.String(string(opened.Claims.Type)))
	return opened, nil
}

func (p *Processor) newItem(m jetstream.Msg) *item {
	it := &item{m: m, env: m.Data(), digest: envelope.Digest(m.Data()), hdr: m.Headers(), tries: 1}
	if meta, err := m.Metadata(); err == nil {
		it.seq, it.tries = meta.Sequence.Stream, meta.NumDelivered
	}
	it.id, _, _ = strings.Cut(m.Headers().Get(jetstream.MsgIDHeader), ".resend.")
	return it
}

// handleMsg runs one inbound message through the pipeline.
func (p *Processor) handleMsg(ctx context.Context, m jetstream.Msg) {
	it := p.newItem(m)
	ctx, span := p.cfg.Tracing.StartProcess(ctx, it.hdr, m.Subject(), it.id, true)
	defer span.End()
	it.span = span
	opened, err := p.open(ctx, it)
	if err != nil {
		opened, err = p.reopen(ctx, it, err)
	}
	if err != nil {
		if envelope.IsTransient(err) {
			p.cfg.Logger.WarnContext(ctx, "inbound message not yet valid; holding it", slog.String("msg_id", it.id), slog.Any("err", err))
			p.retry(it)
			return
		}
		p.cfg.Logger.WarnContext(ctx, "inbound envelope refused", slog.String("msg_id", it.id),
			slog.String("reason", string(envelope.ReasonOf(err))), slog.Any("err", err))
		p.rejectUnopened(ctx, it, envelope.ReasonOf(err))
		return
	}
	if it.id != opened.Claims.ID {
		// The transport id is a hint; the signed jti is the id (N-01, J-23).
		p.cfg.Logger.WarnContext(ctx, "Nats-Msg-Id disagrees with the signed id",
			slog.String("hint", it.id), slog.String("msg_id", opened.Claims.ID))
	}
	it.opened, it.id = opened, opened.Claims.ID
	span.SetAttributes(transport.AttrMessageType.String(string(opened.Claims.Type))) // signed, unlike the subject
	defer p.lock(it.id)()
	rec, fresh, err := p.claim(ctx, it)
	it.rec = rec
	if err != nil {
		p.cfg.Logger.WarnContext(ctx, "dedup claim failed; retrying", slog.String("msg_id", it.id), slog.Any("err", err))
		p.retry(it)
		return
	}
	switch {
	case rec.EnvSHA256 != it.digest:
		p.equivocation(ctx, it, rec)
	case rec.Seq != it.seq:
		p.duplicate(ctx, it, rec)
	case fresh && rec.Has(api.StatusRejected):
		p.rejected(ctx, it)
	case fresh:
		p.deliver(ctx, it)
	default:
		p.advance(ctx, it, rec)
	}
}

// reopen handles a copy of a message we already accepted that no longer
// opens now — its exp passed or the signer's certificate expired while
// delivery was being retried, or our key retired meanwhile: it is opened
// again at the time we accepted it, so the message goes on instead of
// getting a rejection after its acceptance. Anything else keeps the error.
func (p *Processor) reopen(ctx context.Context, it *item, openErr error) (*envelope.Opened, error) {
	if envelope.IsTransient(openErr) || !envelope.ValidID(it.id) {
		return nil, openErr
	}
	rec, _, err := p.seen.Get(ctx, ledger.SeenKey(p.cfg.Peer, it.id))
	if err != nil || rec.EnvSHA256 != it.digest {
		return nil, openErr
	}
	for _, e := range rec.Timeline {
		if e.Status == api.StatusAccepted {
			if opened, err := p.opener.Open(it.env, e.At); err == nil {
				return opened, nil
			}
		}
	}
	return nil, openErr
}

// claim decides on the message (policy: accepted or rejected), signs that
// receipt and creates the dedup record holding the event and the receipt's
// bytes: the claim, the decision and its evidence are one durable write.
// Then the receipt is sent. fresh is false when the record was there
// already (a redelivery, or another copy of the message): it is returned
// and nothing is sent; the signature is wasted.
func (p *Processor) claim(ctx context.Context, it *item) (rec *ledger.Record, fresh bool, err error) {
	c := it.opened.Claims
	status, r := api.StatusAccepted, &envelope.Receipt{Status: envelope.StatusAccepted}
	if reason, ok := p.policy(it); !ok {
		status, r = api.StatusRejected, &envelope.Receipt{Status: envelope.StatusRejected, Reason: reason}
	}
	r.Msg, r.EnvSHA256, r.MsgSHA256 = it.id, it.digest, it.opened.MsgSHA256
	_, err = p.issuer.Issue(ctx, r, it.hdr, func(ctx context.Context, token []byte) ([]byte, error) {
		claim := &ledger.Record{
			ID: c.ID, Direction: api.Inbound, Type: string(c.Type), From: c.Issuer, To: c.Audience,
			Sender: c.Sender, Recipient: c.Recipient, CorrelationID: c.CorrelationID, Marking: c.Marking,
			Seq: it.seq, EnvSHA256: it.digest, MsgSHA256: it.opened.MsgSHA256, Expiry: c.Expiry,
			TraceID: it.span.SpanContext().TraceID().String(), Traceparent: traceparent(it.span),
			Timeline: []api.Event{ledger.Event(status, p.cfg.Now(), string(r.Reason))},
			Receipts: map[string]string{string(r.Status): string(token)},
		}
		got, cerr := p.seen.Create(ctx, ledger.SeenKey(c.Issuer, c.ID), claim)
		rec = got // the existing record on ErrExists
		return token, cerr
	})
	if errors.Is(err, ledger.ErrExists) {
		return rec, false, nil
	}
	// On an error after the claim (the send failed), the redelivery finds
	// the record and sends its receipt (advance).
	return rec, err == nil, err
}

// advance moves an original (non-duplicate) message on from wherever its
// record says it stopped: a redelivery after a crash, a failed send or a
// failed delivery attempt. The receipts the record holds are sent again
// first (the outbox drops what did go out).
func (p *Processor) advance(ctx context.Context, it *item, rec *ledger.Record) {
	for st, token := range ledger.ReceiptsInOrder(rec.Receipts) {
		if err := p.issuer.Send(ctx, it.id, st, []byte(token)); err != nil {
			p.cfg.Logger.ErrorContext(ctx, "ALERT receipt could not be sent; holding the message",
				slog.String("msg_id", it.id), slog.String("status", st), slog.Any("err", err))
			p.retry(it)
			return
		}
	}
	// A claim holds its decision from the start: accepted, or rejected
	// (terminal).
	if rec.Terminal() {
		_ = it.m.Ack()
		return
	}
	p.deliver(ctx, it)
}

// rejected settles a message the policy refused at its claim.
func (p *Processor) rejected(ctx context.Context, it *item) {
	reason := it.rec.Timeline[0].Reason
	it.span.SetAttributes(transport.AttrStatus.String(string(envelope.StatusRejected)), transport.AttrReason.String(reason))
	p.cfg.Logger.WarnContext(ctx, "message rejected", slog.String("msg_id", it.id), slog.String("reason", reason))
	_ = it.m.Ack()
}

// policy checks the routing hints against the signed claims, then the
// recipient and the marking.
func (p *Processor) policy(it *item) (envelope.Reason, bool) {
	c := it.opened.Claims
	from, to, kind, typ, err := transport.ParseXSubject(it.m.Subject())
	if err != nil || kind != "msg" || typ != string(c.Type) ||
		from != strings.ToLower(c.Issuer) || to != strings.ToLower(c.Audience) {
		return envelope.ReasonRoutingMismatch, false
	}
	if _, ok := p.dir.Resolve(c.Type, c.Recipient); !ok {
		return envelope.ReasonUnknownRecipient, false
	}
	if !p.dir.MarkingAllowed(c.Marking) {
		return envelope.ReasonPolicyDenied, false
	}
	return "", true
}

// deliver hands the message to its agency and settles the JetStream message.
func (p *Processor) deliver(ctx context.Context, it *item) {
	c := it.opened.Claims
	agency, _ := p.dir.Resolve(c.Type, c.Recipient)
	d := &api.Delivery{
		ID: c.ID, Type: string(c.Type), From: c.Issuer, Sender: c.Sender, Recipient: p.cfg.Party + ":" + agency,
		CorrelationID: c.CorrelationID, Marking: c.Marking, Body: c.Body, JWS: string(it.opened.Inner),
	}
	out := p.deliverer.Deliver(ctx, agency, d, it.hdr)
	switch {
	case out.Err == nil && out.Pull:
		p.cfg.Logger.InfoContext(ctx, "message in the pull inbox", slog.String("msg_id", c.ID), slog.String("agency", agency))
		_ = it.m.Ack() // delivered when the agency acks its inbox
	case out.Err == nil:
		now := p.cfg.Now()
		r := &envelope.Receipt{Status: envelope.StatusDelivered, Recipient: d.Recipient, DeliveredAt: now.Unix()}
		if p.issue(ctx, it, r, api.StatusDelivered, "") {
			p.cfg.Logger.InfoContext(ctx, "message delivered", slog.String("msg_id", c.ID), slog.String("agency", agency))
			_ = it.m.Ack()
		}
	case out.Permanent:
		p.cfg.Logger.ErrorContext(ctx, "ALERT agency refused the message permanently",
			slog.String("msg_id", c.ID), slog.String("agency", agency), slog.Any("err", out.Err))
		p.reject(ctx, it, envelope.ReasonDeliveryFailed, out.Err.Error())
	default:
		p.cfg.Logger.WarnContext(ctx, "delivery failed; will retry", slog.String("msg_id", c.ID),
			slog.String("agency", agency), slog.Uint64("attempt", it.tries), slog.Any("err", out.Err))
		p.nak(it, out.RetryAfter)
	}
}

// issue signs one receipt for it, stores it with its event in the claim
// record (one write) and sends it. On a storage failure it naks the message
// and returns false: invariant 6, no progress without evidence.
func (p *Processor) issue(ctx context.Context, it *item, r *envelope.Receipt, status, reason string) bool {
	r.Msg, r.EnvSHA256 = it.id, it.digest
	if it.opened != nil {
		r.MsgSHA256 = it.opened.MsgSHA256
	}
	key := ledger.SeenKey(p.cfg.Peer, it.id)
	_, err := p.issuer.Issue(ctx, r, it.hdr, func(ctx context.Context, token []byte) ([]byte, error) {
		rec, stored, err := p.seen.AddReceipt(ctx, key, it.rec, string(r.Status), token, ledger.Event(status, p.cfg.Now(), reason))
		if err == nil {
			it.rec = rec
		}
		return stored, err
	})
	if err != nil {
		p.cfg.Logger.ErrorContext(ctx, "ALERT receipt could not be issued; holding the message",
			slog.String("msg_id", it.id), slog.String("status", string(r.Status)), slog.Any("err", err))
		p.retry(it)
		return false
	}
	return true
}

// reject issues the signed rejected receipt and settles the message.
func (p *Processor) reject(ctx context.Context, it *item, reason envelope.Reason, detail string) {
	if it.span != nil {
		it.span.SetAttributes(transport.AttrStatus.String(string(envelope.StatusRejected)), transport.AttrReason.String(string(reason)))
	}
	if p.issue(ctx, it, &envelope.Receipt{Status: envelope.StatusRejected, Reason: reason}, api.StatusRejected, string(reason)) {
		p.cfg.Logger.WarnContext(ctx, "message rejected", slog.String("msg_id", it.id),
			slog.String("reason", string(reason)), slog.String("detail", detail))
		_ = it.m.Ack()
	}
}

// rejectUnopened handles an envelope that could not be opened: a signed
// rejected receipt naming the transport's id, bound by env_sha256 (DESIGN.md
// §4). Nothing is claimed: the id is unauthenticated, and a corrupted copy
// must not block the genuine message a resend brings (N-09, F-17). The
// sender matches the receipt against its own digest and keeps it aside.
func (p *Processor) rejectUnopened(ctx context.Context, it *item, reason envelope.Reason) {
	if !envelope.ValidID(it.id) {
		p.cfg.Logger.ErrorContext(ctx, "ALERT inbound item without a usable id; kept in CMX_IN, no receipt possible",
			slog.Uint64("seq", it.seq), slog.String("env_sha256", it.digest), slog.String("reason", string(reason)))
		_ = it.m.Term()
		return
	}
	it.span.SetAttributes(transport.AttrStatus.String(string(envelope.StatusRejected)), transport.AttrReason.String(string(reason)))
	r := &envelope.Receipt{Msg: it.id, Status: envelope.StatusRejected, Reason: reason, EnvSHA256: it.digest}
	if _, err := p.issuer.IssueUnopened(ctx, r, it.hdr); err != nil {
		p.cfg.Logger.ErrorContext(ctx, "ALERT receipt could not be issued; holding the message", slog.String("msg_id", it.id), slog.Any("err", err))
		p.retry(it)
		return
	}
	_ = it.m.Ack()
}

// duplicate answers another copy of a message we already hold with the
// receipts its record holds, byte for byte (invariant 4), and delivers
// nothing.
func (p *Processor) duplicate(ctx context.Context, it *item, rec *ledger.Record) {
	n, err := p.issuer.Resend(ctx, it.id, strconv.FormatUint(it.seq, 10), rec.Receipts, it.hdr)
	if err != nil {
		p.retry(it)
		return
	}
	p.cfg.Logger.InfoContext(ctx, "duplicate envelope answered with the original receipts",
		slog.String("msg_id", it.id), slog.Int("receipts", n))
	_ = it.m.Ack()
}

// equivocation: the same id with other content. Never delivered; a signed
// rejected/duplicate_conflict receipt, an alert, and both envelopes kept in
// CMX_IN (the record lists the conflicting digests).
func (p *Processor) equivocation(ctx context.Context, it *item, rec *ledger.Record) {
	p.cfg.Logger.ErrorContext(ctx, "ALERT equivocation: same message id, different envelope",
		slog.String("msg_id", it.id), slog.String("first_env_sha256", rec.EnvSHA256), slog.String("env_sha256", it.digest))
	r := &envelope.Receipt{Msg: it.id, Status: envelope.StatusRejected, Reason: envelope.ReasonDuplicateConflict, EnvSHA256: it.digest}
	if it.opened != nil {
		r.MsgSHA256 = it.opened.MsgSHA256
	}
	if _, err := p.issuer.IssueConflict(ctx, r, it.hdr); err != nil {
		p.retry(it)
		return
	}
	_, _ = p.seen.Update(ctx, ledger.SeenKey(p.cfg.Peer, it.id), func(rec *ledger.Record) bool {
		for _, d := range rec.Conflicts {
			if d == it.digest {
				return false
			}
		}
		rec.Conflicts = append(rec.Conflicts, it.digest)
		return true
	})
	_ = it.m.Ack()
}

// retry hands a message back after a local, transient failure (storage,
// our clock): soon, whatever the attempt count, since nothing outside us
// needs sparing.
func (p *Processor) retry(it *item) {
	_ = it.m.NakWithDelay(min(p.cfg.Backoff(it.tries, 0), maxLocalRetry))
}

// maxLocalRetry caps the redelivery delay after local failures.
const maxLocalRetry = 5 * time.Second

// nak hands a message back after the agency failed: Backoff spares it.
func (p *Processor) nak(it *item, retryAfter time.Duration) {
	_ = it.m.NakWithDelay(p.cfg.Backoff(it.tries, retryAfter))
}

// traceparent renders a span's context as a W3C traceparent header value.
func traceparent(span trace.Span) string {
	sc := span.SpanContext()
	if !sc.IsValid() {
		return ""
	}
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
}
