package outbound

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/transport"
)

// SenderConfig configures a Sender. Fields must not change after NewSender.
type SenderConfig struct {
	Party          string            // our party code, e.g. "US"; required
	Peer           string            // the peer's party code, e.g. "JP"; required
	Signer         *certs.Identity   // our signing identity; required
	PeerEncryption *x509.Certificate // the peer's current encryption certificate; required
	OutageBudget   time.Duration     // 0 means 7 days; sets exp = iat + budget
	Now            func() time.Time  // nil means time.Now
	Logger         *slog.Logger      // nil discards
	Tracing        transport.Tracing // zero means no tracing
	Recent         *ledger.Recent    // keeps each record created, for the receipts' writes; nil means none
}

// Sender seals submissions and publishes them durably to the outbox.
type Sender struct {
	cfg  SenderConfig
	js   jetstream.JetStream
	sent *ledger.Store
}

// NewSender returns a Sender publishing with js and recording in sent.
func NewSender(cfg SenderConfig, js jetstream.JetStream, sent *ledger.Store) (*Sender, error) {
	var errs []error
	if cfg.Party == "" || cfg.Peer == "" {
		errs = append(errs, errors.New("outbound: party and peer are required"))
	}
	if cfg.Signer == nil {
		errs = append(errs, errors.New("outbound: signer is required"))
	}
	if cfg.PeerEncryption == nil {
		errs = append(errs, errors.New("outbound: peer encryption certificate is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.OutageBudget == 0 {
		cfg.OutageBudget = 7 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Tracing = cfg.Tracing.OrNoop()
	return &Sender{cfg: cfg, js: js, sent: sent}, nil
}

var agencyName = regexp.MustCompile(`^[A-Z0-9][A-Z0-9-]{0,31}$`)

// claims builds the signed claims of a submission; every check here answers
// the agency before anything is signed or published.
func (s *Sender) claims(agency, id string, req *api.SubmitRequest, now time.Time) (*envelope.Claims, error) {
	t := envelope.Type(req.Type)
	if !t.Valid() {
		return nil, &api.Error{Kind: api.KindUnprocessable, Code: "unknown-type", Field: "/type", Detail: "unknown message type"}
	}
	if req.To != s.cfg.Peer {
		return nil, &api.Error{Kind: api.KindUnprocessable, Code: "unknown-peer", Field: "/to",
			Detail: fmt.Sprintf("this gateway exchanges with %s only", s.cfg.Peer)}
	}
	recipient, err := s.recipient(req.Recipient)
	if err != nil {
		return nil, err
	}
	if err := envelope.ValidateBody(t, req.Body); err != nil {
		return nil, schemaError(err)
	}
	c := &envelope.Claims{
		Issuer: s.cfg.Party, Audience: s.cfg.Peer, ID: id,
		IssuedAt: now.Unix(), Expiry: now.Add(s.cfg.OutageBudget).Unix(),
		Type: t, Schema: t.Schema(), Sender: s.cfg.Party + ":" + agency, Recipient: recipient,
		CorrelationID: req.CorrelationID, Marking: req.Marking, Body: req.Body,
	}
	if err := envelope.ValidateClaims(c); err != nil {
		return nil, &api.Error{Kind: api.KindUnprocessable, Code: "invalid-message", Detail: err.Error()}
	}
	return c, nil
}

// recipient accepts "MHLW" or "JP:MHLW" and returns the qualified form.
func (s *Sender) recipient(r string) (string, error) {
	if r == "" {
		return "", nil
	}
	name := strings.TrimPrefix(r, s.cfg.Peer+":")
	if !agencyName.MatchString(name) {
		return "", &api.Error{Kind: api.KindInvalid, Code: "invalid-recipient", Field: "/recipient",
			Detail: "recipient must be an agency code of the peer, e.g. " + s.cfg.Peer + ":MHLW"}
	}
	return s.cfg.Peer + ":" + name, nil
}

func schemaError(err error) error {
	e := &api.Error{Kind: api.KindUnprocessable, Code: "schema-invalid", Detail: err.Error(), Err: err}
	var se *envelope.SchemaError
	if errors.As(err, &se) {
		e.Field = "/body" + se.Field
		e.Detail = se.Reason
	}
	return e
}

// Submit seals the submission under the pre-assigned id and publishes it. It
// returns after the outbox PubAck and the ledger record are both durable.
func (s *Sender) Submit(ctx context.Context, agency, id string, req *api.SubmitRequest) (*api.SubmitResponse, error) {
	now := s.cfg.Now()
	c, err := s.claims(agency, id, req, now)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(transport.OutMsgSubject(strings.ToLower(s.cfg.Peer), req.Type))
	item, recorded, err := s.earlier(ctx, id, msg.Subject, now)
	if err != nil {
		return nil, unavailable("outbox read", err)
	}
	fresh := item == nil
	if fresh {
		sealed, err := s.seal(ctx, c)
		if err != nil {
			return nil, err
		}
		// The inner JWS rides along in the outbox item as evidence for our
		// auditors (the envelope is encrypted to the peer); only the envelope is
		// ever forwarded (transport.SplitOutboxItem).
		msg.Data = append(append(make([]byte, 0, len(sealed.Envelope)+len(sealed.Inner)), sealed.Envelope...), sealed.Inner...)
		msg.Header.Set(transport.HeaderEnvelopeLength, strconv.Itoa(len(sealed.Envelope)))
		item = &outboxItem{env: sealed.EnvSHA256, msg: sealed.MsgSHA256}
	}
	ctx, span := s.cfg.Tracing.StartSend(ctx, msg.Header, msg.Subject, id, false, transport.AttrMessageType.String(req.Type))
	defer span.End()
	if fresh {
		if err := s.publish(ctx, msg, id, item); err != nil {
			span.SetStatus(codes.Error, "outbox publish failed")
			return nil, err
		}
	}
	rec := &ledger.Record{
		ID: id, Direction: api.Outbound, Type: req.Type, From: s.cfg.Party, To: s.cfg.Peer,
		Sender: c.Sender, Recipient: c.Recipient, CorrelationID: c.CorrelationID, Marking: c.Marking,
		Seq: item.seq, EnvSHA256: item.env, MsgSHA256: item.msg, Expiry: c.Expiry,
		TraceID: span.SpanContext().TraceID().String(), Traceparent: msg.Header.Get("traceparent"),
		Timeline: []api.Event{ledger.Event(api.StatusAccepted, now, "")},
	}
	if !recorded {
		created, err := s.sent.Create(ctx, id, rec)
		if err != nil && !errors.Is(err, ledger.ErrExists) {
			return nil, unavailable("ledger", err)
		}
		s.cfg.Recent.Put(created)
	}
	s.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "message accepted",
		slog.String("msg_id", id), slog.String("type", req.Type), slog.String("sender", c.Sender),
		slog.Uint64("outbox_seq", item.seq), slog.Bool("duplicate", item.duplicate))
	return &api.SubmitResponse{ID: id, Status: api.StatusAccepted}, nil
}

// outboxItem is the outbox item of a message as its ledger record names it.
type outboxItem struct {
	seq       uint64
	env, msg  string // digests of the envelope and the inner JWS
	duplicate bool   // stored by an earlier attempt under the same id
}

// publish stores msg in the outbox and fills in item. On a duplicate PubAck
// an earlier attempt under this id (a retry after its gateway died between
// the PubAck and the record) stored its own envelope, and the outbox kept
// that one: the record must name what the peer gets.
func (s *Sender) publish(ctx context.Context, msg *nats.Msg, id string, item *outboxItem) error {
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(transport.StreamOut))
	if outboxFull(err) {
		return &api.Error{Kind: api.KindUnavailable, Code: "outbox-full", Err: err,
			Detail: "the outbox is full (limits.max_out_bytes): it keeps every sent envelope for the outage budget as evidence; retry later with the same Idempotency-Key"}
	}
	if err != nil {
		return unavailable("outbox publish", err)
	}
	item.seq, item.duplicate = ack.Sequence, ack.Duplicate
	if ack.Duplicate {
		if item.env, item.msg, err = s.storedDigests(ctx, ack.Sequence); err != nil {
			return unavailable("outbox read", err)
		}
	}
	return nil
}

// retryAge: an id minted longer ago than this (the ingress mints it just
// before the first attempt) belongs to a client's retry. The outbox's
// Nats-Msg-Id dedup catches a retry only within the stream's duplicate
// window (10 min); past it, a new seal would be stored as a second, different
// envelope under the same id: an equivocation in the peer's eyes, and receipts
// attesting the first envelope while the record names the second. So an
// older id first looks for what the earlier attempt left (catalogue F-01).
const retryAge = time.Minute

// clockMargin widens the outbox search before the id's time, for the clock
// skew between the gateway that minted the id and the NATS server.
const clockMargin = 5 * time.Minute

// earlier returns what an earlier attempt under id left, for an id older
// than retryAge: its ledger record (recorded), or else its outbox item on
// subject. It returns nil when there is nothing, or the id is recent.
func (s *Sender) earlier(ctx context.Context, id, subject string, now time.Time) (*outboxItem, bool, error) {
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 7 {
		return nil, false, nil
	}
	minted := time.Unix(u.Time().UnixTime())
	if now.Sub(minted) < retryAge {
		return nil, false, nil
	}
	rec, _, err := s.sent.Get(ctx, id)
	if err == nil {
		return &outboxItem{seq: rec.Seq, env: rec.EnvSHA256, msg: rec.MsgSHA256, duplicate: true}, true, nil
	}
	if !errors.Is(err, ledger.ErrNotFound) {
		return nil, false, err
	}
	seq, err := s.findItem(ctx, id, subject, minted.Add(-clockMargin))
	if err != nil || seq == 0 {
		return nil, false, err
	}
	env, msg, err := s.storedDigests(ctx, seq)
	if err != nil {
		return nil, false, err
	}
	return &outboxItem{seq: seq, env: env, msg: msg, duplicate: true}, false, nil
}

// findItem returns the outbox sequence of the item published on subject
// under Nats-Msg-Id id since since, or 0: it reads the headers of those
// items through a short-lived consumer.
func (s *Sender) findItem(ctx context.Context, id, subject string, since time.Time) (uint64, error) {
	cons, err := s.js.CreateConsumer(ctx, transport.StreamOut, jetstream.ConsumerConfig{
		FilterSubject: subject, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
		AckPolicy: jetstream.AckNonePolicy, HeadersOnly: true, MemoryStorage: true, InactiveThreshold: time.Minute,
	})
	if err != nil {
		return 0, err
	}
	defer func() {
		_ = s.js.DeleteConsumer(context.WithoutCancel(ctx), transport.StreamOut, cons.CachedInfo().Name)
	}()
	for pending := cons.CachedInfo().NumPending; pending > 0; {
		batch, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return 0, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return 0, err
			}
			if m.Headers().Get(jetstream.MsgIDHeader) == id {
				return meta.Sequence.Stream, nil
			}
			pending = meta.NumPending
		}
		if err := batch.Error(); err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, errors.New("outbound: outbox search stalled")
		}
	}
	return 0, nil
}

// storedDigests returns the digests of the envelope and inner JWS of the
// outbox item at seq.
func (s *Sender) storedDigests(ctx context.Context, seq uint64) (env, msg string, err error) {
	st, err := s.js.Stream(ctx, transport.StreamOut)
	if err != nil {
		return "", "", err
	}
	raw, err := st.GetMsg(ctx, seq)
	if err != nil {
		return "", "", err
	}
	e, inner, err := transport.SplitOutboxItem(raw.Header, raw.Data)
	if err != nil {
		return "", "", err
	}
	return envelope.Digest(e), envelope.Digest(inner), nil
}

func (s *Sender) seal(ctx context.Context, c *envelope.Claims) (*envelope.Sealed, error) {
	_, span := s.cfg.Tracing.Tracer.Start(ctx, "seal", trace.WithAttributes(
		semconv.MessagingMessageID(c.ID), transport.AttrMessageType.String(string(c.Type))))
	defer span.End()
	sealed, err := envelope.Seal(c, s.cfg.Signer, s.cfg.PeerEncryption)
	if err != nil {
		span.SetStatus(codes.Error, "seal failed")
		return nil, fmt.Errorf("outbound: seal %s: %w", c.ID, err)
	}
	return sealed, nil
}

// jsErrStreamStoreFailed is JetStream's error code for a write the store
// refused; with "maximum bytes exceeded" it is a stream at its MaxBytes.
const jsErrStreamStoreFailed = 10077

// outboxFull reports JetStream's answer to a publish into a stream at its
// MaxBytes with Discard New: back-pressure, nothing stored, nothing dropped.
func outboxFull(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrStreamStoreFailed && strings.Contains(apiErr.Description, "maximum bytes")
}

func unavailable(what string, err error) error {
	return &api.Error{Kind: api.KindUnavailable, Code: "unavailable", Detail: what + " failed; retry with the same Idempotency-Key", Err: err}
}
