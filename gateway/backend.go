package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/delivery"
	"github.com/cmx-exchange/cmx/gateway/ingress"
	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/transport"
)

// backend implements ingress.Backend over the node's stages.
type backend struct{ n *Node }

func (n *Node) ingress() (*ingress.Server, error) {
	var agencies []ingress.Agency
	for _, a := range n.cfg.Agencies {
		agencies = append(agencies, ingress.Agency{ID: a.ID, Token: a.Token, CertURI: a.CertURI, Send: a.Send, Admin: a.Admin})
	}
	idemKV, err := n.js.KeyValue(context.Background(), transport.BucketIdem)
	if err != nil {
		return nil, err
	}
	return ingress.New(ingress.Config{
		Party: n.cfg.Party, Agencies: agencies, MaxBodyBytes: n.cfg.Limits.MaxBodyBytes,
		RatePerSecond: n.cfg.Limits.RatePerSecond, Burst: n.cfg.Limits.Burst, Logger: n.logger, Now: n.now,
	}, backend{n}, ingress.KVIdem{KV: idemKV}, ingress.WithExtraHandler("GET /metrics", n.tel.Metrics),
		ingress.WithMiddleware(func(h http.Handler) http.Handler {
			return otelhttp.NewHandler(h, "cmx.api", otelhttp.WithTracerProvider(n.tel.Tracer), otelhttp.WithMeterProvider(n.tel.Meter),
				otelhttp.WithPropagators(n.tel.Propagator), otelhttp.WithSpanNameFormatter(spanName))
		}))
}

// spanName names a SERVER span after the route pattern ("POST /v1/messages"),
// never the raw path (ids, unbounded). otelhttp calls it at the start, when
// only the method is known, and again once the mux has set r.Pattern;
// unrouted requests keep the method, or "HTTP" for a method of the client's
// own invention (HTTP semantic conventions).
func spanName(_ string, r *http.Request) string {
	switch {
	case r.Pattern != "":
		return r.Pattern
	case slices.Contains([]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace}, r.Method):
		return r.Method
	}
	return "HTTP"
}

func (b backend) Submit(ctx context.Context, agency, id string, req *api.SubmitRequest) (*api.SubmitResponse, error) {
	if err := b.n.evidence(); err != nil {
		return nil, &api.Error{Kind: api.KindUnavailable, Code: "evidence-unavailable",
			Detail: "receipts cannot be issued; no new messages are accepted until they can", Err: err}
	}
	start := time.Now()
	trace.SpanFromContext(ctx).SetAttributes(semconv.MessagingMessageID(id)) // the SERVER span: find ingress by message id
	resp, err := b.n.sender.Submit(ctx, agency, id, req)
	if err == nil {
		b.n.metrics.ingress.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(attrType.String(req.Type)))
	}
	return resp, err
}

func notFound() error {
	return &api.Error{Kind: api.KindNotFound, Code: "not-found", Detail: "no such message"}
}

// record finds a message by id, sent or received, visible to agency.
func (b backend) record(ctx context.Context, agency, id string) (*ledger.Record, error) {
	if !envelope.ValidID(id) {
		return nil, notFound()
	}
	admin := b.admin(agency)
	rec, _, err := b.n.sent.Get(ctx, id)
	if err == nil && (admin || rec.Sender == b.n.cfg.Party+":"+agency) {
		return rec, nil
	}
	if err != nil && !errors.Is(err, ledger.ErrNotFound) {
		return nil, unavailable(err)
	}
	rec, _, err = b.n.seen.Get(ctx, ledger.SeenKey(b.n.cfg.Peer.Party, id))
	if errors.Is(err, ledger.ErrNotFound) {
		return nil, notFound()
	}
	if err != nil {
		return nil, unavailable(err)
	}
	if got, _ := b.n.dir.Resolve(envelope.Type(rec.Type), rec.Recipient); admin || got == agency {
		return rec, nil
	}
	return nil, notFound()
}

func (b backend) admin(agency string) bool {
	a, ok := b.n.dir.agencies[agency]
	return ok && a.Admin
}

func unavailable(err error) error {
	return &api.Error{Kind: api.KindUnavailable, Code: "unavailable", Detail: "storage unavailable", Err: err}
}

func (b backend) Message(ctx context.Context, agency, id string) (*api.Message, error) {
	rec, err := b.record(ctx, agency, id)
	if err != nil {
		return nil, err
	}
	return rec.API(), nil
}

func (b backend) Receipts(ctx context.Context, agency, id string) (*api.Receipts, error) {
	rec, err := b.record(ctx, agency, id)
	if err != nil {
		return nil, err
	}
	// The record holds the receipts: the peer's for a message we sent, ours
	// for one we received.
	out := &api.Receipts{ID: id, Receipts: []string{}}
	for _, tok := range ledger.ReceiptsInOrder(rec.Receipts) {
		out.Receipts = append(out.Receipts, tok)
	}
	return out, nil
}

func (b backend) Evidence(ctx context.Context, agency, id string) (*api.Evidence, error) {
	rec, err := b.record(ctx, agency, id)
	if err != nil {
		return nil, err
	}
	rs, err := b.Receipts(ctx, agency, id)
	if err != nil {
		return nil, err
	}
	ev := &api.Evidence{ID: id, Direction: rec.Direction, Receipts: rs.Receipts, Chains: map[string]string{}}
	if err := b.envelopeEvidence(ctx, rec, ev); err != nil {
		return nil, err
	}
	ev.Chains[b.n.cfg.Party] = string(certs.EncodeCertificates(b.n.keys.signing.Chain...))
	return ev, nil
}

// envelopeEvidence adds the stored envelope and the inner JWS: for a sent
// message both come from the outbox item; for a received one the envelope
// comes from CMX_IN and is decrypted again with our key.
func (b backend) envelopeEvidence(ctx context.Context, rec *ledger.Record, ev *api.Evidence) error {
	stream := transport.StreamOut
	if rec.Direction == api.Inbound {
		stream = transport.StreamIn
	}
	if rec.Seq == 0 {
		return nil
	}
	s, err := b.n.js.Stream(ctx, stream)
	if err != nil {
		return unavailable(err)
	}
	raw, err := s.GetMsg(ctx, rec.Seq)
	if err != nil {
		return nil // aged out of the stream (outage budget): the digests remain in the receipts
	}
	env, jws, err := transport.SplitOutboxItem(raw.Header, raw.Data)
	if err != nil || envelope.Digest(env) != rec.EnvSHA256 {
		return nil
	}
	ev.Envelope = string(env)
	if rec.Direction == api.Outbound {
		ev.Message = string(jws)
	} else if jws, err := b.n.opener.DecryptInner(env, b.n.now()); err == nil {
		ev.Message = string(jws)
	}
	return nil
}

func (b backend) Inbox(ctx context.Context, agency string, limit int) ([]api.Delivery, error) {
	items, err := b.n.inbox.List(ctx, agency, limit)
	if err != nil {
		if errors.Is(err, delivery.ErrInvalidLimit) {
			return nil, &api.Error{Kind: api.KindInvalid, Code: "invalid-limit", Field: "limit", Detail: err.Error()}
		}
		return nil, unavailable(err)
	}
	return items, nil
}

// AckInbox records the delivery of a pulled message: the delivered receipt
// first (durable evidence), then the inbox entry goes.
func (b backend) AckInbox(ctx context.Context, agency, id string) error {
	d, err := b.n.inbox.Get(ctx, agency, id)
	if errors.Is(err, delivery.ErrNotInInbox) || errors.Is(err, delivery.ErrInvalidID) {
		return notFound()
	}
	if err != nil {
		return unavailable(err)
	}
	key := ledger.SeenKey(b.n.cfg.Peer.Party, id)
	rec, _, err := b.n.seen.Get(ctx, key)
	if errors.Is(err, ledger.ErrNotFound) {
		// The claim is gone (records are kept forever, so an operator
		// removed it): the digests a receipt must bind are gone, so no
		// receipt can be issued. The entry goes, so the inbox does not hold
		// it forever.
		b.n.logger.ErrorContext(ctx, "ALERT inbox ack for a message without a claim record: no delivered receipt possible",
			slog.String("msg_id", id), slog.String("agency", agency))
		_ = b.n.inbox.Remove(ctx, agency, id)
		return &api.Error{Kind: api.KindNotFound, Code: "expired", Detail: "the message has no record any more; it was removed from the inbox without a delivered receipt"}
	}
	if err != nil {
		return unavailable(err)
	}
	// The delivered receipt continues the message's trace, not the ack request's.
	ctx = b.n.tel.Propagator.Extract(ctx, propagation.MapCarrier{"traceparent": rec.Traceparent})
	now := b.n.now()
	r := &envelope.Receipt{Msg: id, Status: envelope.StatusDelivered, EnvSHA256: rec.EnvSHA256, MsgSHA256: rec.MsgSHA256,
		Recipient: d.Recipient, DeliveredAt: now.Unix()}
	// The receipt and its event go into the claim record in one write; a
	// repeated ack sends the stored bytes again.
	if _, err := b.n.issuer.Issue(ctx, r, nats.Header{}, func(ctx context.Context, token []byte) ([]byte, error) {
		_, stored, err := b.n.seen.AddReceipt(ctx, key, nil, string(envelope.StatusDelivered), token, ledger.Event(api.StatusDelivered, now, ""))
		return stored, err
	}); err != nil {
		return unavailable(err)
	}
	if err := b.n.inbox.Remove(ctx, agency, id); err != nil {
		return unavailable(err)
	}
	return nil
}

func (b backend) Peers(ctx context.Context) ([]api.PeerStatus, error) {
	ps := api.PeerStatus{Party: b.n.cfg.Peer.Party, Link: "down"}
	if b.n.forwarder.LinkUp() || b.n.LeafConnected() {
		ps.Link = "up"
	}
	cons, err := b.n.js.Consumer(ctx, transport.StreamOut, "forward")
	if err == nil {
		if info, err := cons.Info(ctx); err == nil {
			ps.Backlog = info.NumPending + uint64(info.NumAckPending)
			ps.OldestAgeSecs = b.oldestAge(ctx, info)
		}
	}
	n, oldest := b.n.reconciler.Awaiting()
	ps.AwaitingReceipt = uint64(n)
	if n > 0 {
		ps.ReceiptLagSecs = max(0, b.n.now().Sub(oldest).Seconds())
	}
	if at := b.n.lastReceipt.Load(); at > 0 {
		t := time.Unix(0, at).UTC()
		ps.LastReceiptAt = &t
	}
	return []api.PeerStatus{ps}, nil
}

// oldestAge is the age of the oldest outbox item the peer has not acknowledged.
func (b backend) oldestAge(ctx context.Context, info *jetstream.ConsumerInfo) float64 {
	if info.NumPending+uint64(info.NumAckPending) == 0 {
		return 0
	}
	s, err := b.n.js.Stream(ctx, transport.StreamOut)
	if err != nil {
		return 0
	}
	m, err := s.GetMsg(ctx, info.AckFloor.Stream+1)
	if err != nil {
		return 0
	}
	return b.n.now().Sub(m.Time).Seconds()
}

// evidence fails once receipts have kept failing for the grace period.
func (n *Node) evidence() error {
	grace := n.cfg.Limits.EvidenceGrace
	if grace <= 0 {
		grace = time.Minute
	}
	return n.issuer.Healthy(n.now(), grace)
}

// LeafConnected reports whether the embedded server's leafnode to the peer
// is up (false with an external NATS).
func (n *Node) LeafConnected() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.embedded != nil && n.embedded.LeafConnected()
}

func (b backend) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := transport.CheckLayout(ctx, b.n.js, b.n.layout()); err != nil {
		return fmt.Errorf("streams: %w", err)
	}
	if err := b.n.evidence(); err != nil {
		return err
	}
	if b.n.keys.decryption.Current() == nil {
		return errors.New("keys: no current decryption key")
	}
	if now := b.n.now(); now.After(b.n.keys.signing.Cert.NotAfter) {
		return errors.New("keys: signing certificate expired")
	}
	return nil
}
