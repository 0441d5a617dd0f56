package transport

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Attribute keys of cmx spans, declared once for every stage. Spans carry
// identifiers, types and outcomes, never message content.
var (
	AttrMessageType = attribute.Key("cmx.message.type")
	AttrParty       = attribute.Key("cmx.party")
	AttrPeer        = attribute.Key("cmx.peer")
	AttrStatus      = attribute.Key("cmx.status")
	AttrReason      = attribute.Key("cmx.reason")
	AttrAgency      = attribute.Key("cmx.agency")
)

// Tracing is what a stage needs to trace NATS hops: a tracer, the
// propagator, and whether trace context may cross the border with the peer.
type Tracing struct {
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator
	// Border: false stops trace context at the border; the peer's spans are
	// then found by message id and ours link to nothing foreign.
	Border bool
}

// NewTracing returns a Tracing for the stage named by its import path; nil
// providers mean no-op tracing.
func NewTracing(tp trace.TracerProvider, p propagation.TextMapPropagator, name string, border bool) Tracing {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	if p == nil {
		p = propagation.TraceContext{}
	}
	return Tracing{Tracer: tp.Tracer(name), Propagator: p, Border: border}
}

func messagingAttrs(op, subject, id string) []attribute.KeyValue {
	return []attribute.KeyValue{
		semconv.MessagingSystemKey.String("nats"),
		semconv.MessagingOperationTypeKey.String(op),
		semconv.MessagingDestinationName(subject),
		semconv.MessagingMessageID(id),
	}
}

// StartSend starts a PRODUCER span "send <subject>" and injects its context
// into hdr (unless the subject crosses the border and Border is false).
func (t Tracing) StartSend(ctx context.Context, hdr nats.Header, subject, id string, crossesBorder bool, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx, span := t.Tracer.Start(ctx, "send "+subject, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(append(messagingAttrs("send", subject, id), attrs...)...))
	delete(hdr, "traceparent")
	delete(hdr, "tracestate")
	if !crossesBorder || t.Border {
		t.Propagator.Inject(ctx, HeaderCarrier(hdr))
	}
	return ctx, span
}

// StartProcess starts a CONSUMER span "process <subject>" whose parent is
// the context in hdr — only when the message may carry foreign context
// (Border) or comes from our own side.
func (t Tracing) StartProcess(ctx context.Context, hdr nats.Header, subject, id string, fromPeer bool, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if !fromPeer || t.Border {
		ctx = t.Propagator.Extract(ctx, HeaderCarrier(hdr))
	}
	return t.Tracer.Start(ctx, "process "+subject, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(append(messagingAttrs("process", subject, id), attrs...)...))
}

// OrNoop returns t, or a no-op Tracing when t has no tracer (zero value).
func (t Tracing) OrNoop() Tracing {
	if t.Tracer == nil {
		return NewTracing(nil, nil, "", false)
	}
	return t
}

// Extract returns ctx with the trace context found in hdr.
func (t Tracing) Extract(ctx context.Context, hdr nats.Header) context.Context {
	return t.Propagator.Extract(ctx, HeaderCarrier(hdr))
}
