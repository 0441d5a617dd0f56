package outbound

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
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cmx-exchange/cmx/gateway/ledger"
	"github.com/cmx-exchange/cmx/gateway/transport"
)

// ForwarderConfig configures a Forwarder.
type ForwarderConfig struct {
	Party, Peer string        // our and the peer's party codes; required
	Batch       int           // outbox items fetched and published together; 0 means 256
	PubTimeout  time.Duration // wait for the peer's PubAcks of one batch; 0 means 5s
	Durable     string        // consumer name; "" means "forward"
	Now         func() time.Time
	Logger      *slog.Logger
	Tracing     transport.Tracing // zero means no tracing; Border decides if context crosses
	// OnRelayed, if set, is called for each message (not receipt) the peer
	// acknowledged, after the outbox ack; hdr is the outbox message's header.
	OnRelayed func(ctx context.Context, id string, hdr nats.Header)
}

// Forwarder moves outbox items to the peer's inbound stream.
type Forwarder struct {
	cfg    ForwarderConfig
	local  jetstream.JetStream // our JetStream (CMX_OUT)
	border jetstream.JetStream // publishes across the leafnode
	sent   *ledger.Store

	lastOK, lastErr atomic.Int64 // unix nanos of the last peer PubAck / failure
	forwarded       atomic.Uint64
}

// NewForwarder returns a Forwarder reading CMX_OUT through local and
// publishing through border.
func NewForwarder(cfg ForwarderConfig, local, border jetstream.JetStream, sent *ledger.Store) *Forwarder {
	if cfg.Batch <= 0 {
		cfg.Batch = 256
	}
	if cfg.PubTimeout <= 0 {
		cfg.PubTimeout = 5 * time.Second
	}
	if cfg.Durable == "" {
		cfg.Durable = "forward"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Tracing = cfg.Tracing.OrNoop()
	return &Forwarder{cfg: cfg, local: local, border: border, sent: sent}
}

// ConsumerConfig is the durable consumer the forwarder reads the outbox with.
func (f *Forwarder) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       f.cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       2 * f.cfg.PubTimeout, // a batch settles within PubTimeout
		MaxAckPending: 4 * f.cfg.Batch,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// LinkUp reports whether the last publish to the peer succeeded.
func (f *Forwarder) LinkUp() bool { return f.lastOK.Load() >= f.lastErr.Load() && f.lastOK.Load() > 0 }

// Forwarded counts items the peer acknowledged since start.
func (f *Forwarder) Forwarded() uint64 { return f.forwarded.Load() }

// Run forwards until ctx ends. A reader goroutine pulls the outbox
// continuously; the loop takes whatever has arrived (up to Batch items) as
// one batch, so a lone message goes out at once and a burst shares one
// round of PubAcks.
func (f *Forwarder) Run(ctx context.Context) error {
	cons, err := f.local.CreateOrUpdateConsumer(ctx, transport.StreamOut, f.ConsumerConfig())
	if err != nil {
		return fmt.Errorf("outbound: forward consumer: %w", err)
	}
	// Bounded by bytes, so a backlog of large items does not fill memory,
	// and by count: with a byte bound alone the client library sizes its
	// buffer channel for a million messages, which the GC scans every cycle.
	iter, err := cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(4*f.cfg.Batch, forwardBufferBytes))
	if err != nil {
		return fmt.Errorf("outbound: forward consume: %w", err)
	}
	in := make(chan jetstream.Msg, f.cfg.Batch)
	done := make(chan struct{})
	// iterErr is why the reader stopped; written before in is closed.
	var iterErr error
	go func() { // owned: ends when iter stops, Run waits for it
		defer close(done)
		defer close(in)
		for {
			m, err := iter.Next()
			if err != nil {
				iterErr = err
				return
			}
			in <- m
		}
	}()
	defer func() {
		iter.Drain()
		for m := range in { // hand back what was pulled but not sent
			_ = m.Nak()
		}
		<-done
	}()
	failures := 0
	for {
		var m jetstream.Msg
		ok := true
		select {
		case <-ctx.Done():
			return nil
		case m, ok = <-in:
		}
		if !ok { // the consumer is gone (deleted, connection closed): fail loudly, never idle
			return fmt.Errorf("outbound: outbox consumer stopped: %w", iterErr)
		}
		msgs := f.gather(m, in)
		if f.forward(ctx, msgs) {
			failures = 0
		} else {
			failures++
			sleep(ctx, retryDelay(failures))
		}
	}
}

// gather adds to first whatever else is already waiting, up to Batch.
func (f *Forwarder) gather(first jetstream.Msg, in <-chan jetstream.Msg) []jetstream.Msg {
	msgs := []jetstream.Msg{first}
	for len(msgs) < f.cfg.Batch {
		select {
		case m, ok := <-in:
			if !ok {
				return msgs
			}
			msgs = append(msgs, m)
		default:
			return msgs
		}
	}
	return msgs
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// retryDelay backs off while the link is down: 100ms doubling to 5s.
func retryDelay(failures int) time.Duration {
	d := 100 * time.Millisecond << min(failures, 6)
	return min(d, 5*time.Second)
}

// forward publishes one batch asynchronously and settles each outbox item on
// its own PubAck. It reports whether every item went through.
func (f *Forwarder) forward(ctx context.Context, msgs []jetstream.Msg) bool {
	futures := make([]jetstream.PubAckFuture, len(msgs))
	termed := make([]bool, len(msgs))
	spans := make([]trace.Span, len(msgs))
	defer func() {
		for _, sp := range spans {
			if sp != nil {
				sp.End()
			}
		}
	}()
	for i, m := range msgs {
		out, err := f.peerMsg(m)
		if err != nil {
			// Only our own ingress writes the outbox, so this is a bug: keep
			// the item (Term leaves it in the stream) and say so loudly.
			f.cfg.Logger.ErrorContext(ctx, "outbox item cannot be forwarded", slog.Any("err", err))
			_ = m.Term()
			termed[i] = true
			continue
		}
		id := out.Header.Get(jetstream.MsgIDHeader)
		_, spans[i] = f.cfg.Tracing.StartSend(f.cfg.Tracing.Extract(ctx, m.Headers()), out.Header, out.Subject, id, true, typeAttr(out.Subject)...)
		futures[i], err = f.border.PublishMsgAsync(out, jetstream.WithExpectStream(transport.StreamIn))
		if err != nil {
			spans[i].SetStatus(codes.Error, "publish to the peer failed")
			futures[i] = nil
		}
	}
	allOK := true
	// One deadline for the whole batch. A closed channel tells every
	// settle that it passed; a timer's channel would tell only the first,
	// and the others would wait for ever on PubAcks lost with the link.
	deadline, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.cfg.PubTimeout)
	defer cancel()
	for i, fut := range futures {
		if termed[i] {
			continue
		}
		if fut == nil {
			allOK = false
			_ = msgs[i].NakWithDelay(time.Second)
			continue
		}
		if !f.settle(ctx, msgs[i], fut, deadline.Done()) {
			spans[i].SetStatus(codes.Error, "no PubAck from the peer")
			allOK = false
		}
	}
	return allOK
}

func (f *Forwarder) settle(ctx context.Context, m jetstream.Msg, fut jetstream.PubAckFuture, timeout <-chan struct{}) bool {
	var err error
	select {
	case <-fut.Ok():
	case err = <-fut.Err():
	case <-timeout:
		err = errors.New("timed out waiting for the peer's PubAck")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		f.lastErr.Store(f.cfg.Now().UnixNano())
		f.cfg.Logger.DebugContext(ctx, "forward failed; item stays in the outbox", slog.Any("err", err))
		_ = m.NakWithDelay(time.Second)
		return false
	}
	f.lastOK.Store(f.cfg.Now().UnixNano())
	f.forwarded.Add(1)
	if err := m.Ack(); err != nil {
		f.cfg.Logger.WarnContext(ctx, "outbox ack failed; the peer will deduplicate the resend", slog.Any("err", err))
	}
	if strings.Contains(m.Subject(), ".msg.") && f.cfg.OnRelayed != nil {
		f.cfg.OnRelayed(ctx, m.Headers().Get(jetstream.MsgIDHeader), m.Headers())
	}
	return true
}

// typeAttr is the message type attribute of a span about subject, none
// for a receipt.
func typeAttr(subject string) []attribute.KeyValue {
	if _, _, kind, typ, err := transport.ParseXSubject(subject); err == nil && kind == "msg" {
		return []attribute.KeyValue{transport.AttrMessageType.String(typ)}
	}
	return nil
}

// peerMsg maps an outbox item to the peer's inbound subject, keeping its
// Nats-Msg-Id and trace headers.
func (f *Forwarder) peerMsg(m jetstream.Msg) (*nats.Msg, error) {
	subj, err := f.peerSubject(m.Subject())
	if err != nil {
		return nil, err
	}
	if m.Headers().Get(jetstream.MsgIDHeader) == "" {
		return nil, fmt.Errorf("outbox item on %q has no %s", m.Subject(), jetstream.MsgIDHeader)
	}
	env, _, err := transport.SplitOutboxItem(m.Headers(), m.Data())
	if err != nil {
		return nil, err
	}
	out := nats.NewMsg(subj)
	out.Data = env
	for _, k := range []string{jetstream.MsgIDHeader, "traceparent", "tracestate"} {
		if v := m.Headers().Get(k); v != "" {
			out.Header[k] = []string{v}
		}
	}
	return out, nil
}

// peerSubject maps an outbox subject to the peer's inbound subject.
func (f *Forwarder) peerSubject(outbox string) (string, error) {
	from, to := strings.ToLower(f.cfg.Party), strings.ToLower(f.cfg.Peer)
	rest, ok := strings.CutPrefix(outbox, "cmx.out."+to+".")
	switch {
	case ok && rest == "rcpt":
		return transport.XRcptSubject(from, to), nil
	case ok && strings.HasPrefix(rest, "msg."):
		return transport.XMsgSubject(from, to, strings.TrimPrefix(rest, "msg.")), nil
	}
	return "", fmt.Errorf("unexpected outbox subject %q", outbox)
}

// forwardBufferBytes bounds what the forwarder pulls ahead of the peer's
// PubAcks: thousands of small messages, a few dozen of the largest.
const forwardBufferBytes = 32 << 20
