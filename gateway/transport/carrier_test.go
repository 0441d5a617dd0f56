package transport_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

var _ propagation.TextMapCarrier = transport.HeaderCarrier{}

// TestHeaderCarrier: trace context injected on one side is extracted on
// the other after a real cross-border JetStream publish and consume, with
// the lower-case keys the propagator wrote.
func TestHeaderCarrier(t *testing.T) {
	p := transporttest.StartPair(t)
	p.EnsureLayout(t)
	prop := propagation.TraceContext{}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
		TraceState: mustTraceState(t, "cmx=us"),
	})

	msg := nats.NewMsg(transport.XMsgSubject("US", "JP", "investment_review_best_practice"))
	msg.Data = []byte("sealed")
	prop.Inject(trace.ContextWithSpanContext(context.Background(), sc), transport.HeaderCarrier(msg.Header))
	if _, err := jsOf(t, p.ConnectBorder(t, "US")).PublishMsg(testCtx(t), msg); err != nil {
		t.Fatal(err)
	}

	cons, err := jsOf(t, p.Connect(t, "JP")).OrderedConsumer(testCtx(t), transport.StreamIn, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{msg.Subject},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	h := got.Headers()
	if _, ok := h["traceparent"]; !ok {
		t.Fatalf("no lower-case traceparent in %v", h)
	}
	if _, ok := h["Traceparent"]; ok {
		t.Fatalf("canonicalised key in %v", h)
	}
	out := trace.SpanContextFromContext(prop.Extract(context.Background(), transport.HeaderCarrier(h)))
	if out.TraceID() != sc.TraceID() || out.SpanID() != sc.SpanID() || out.TraceState().Get("cmx") != "us" || !out.IsRemote() {
		t.Fatalf("extracted %+v, want %+v", out, sc)
	}
	keys := transport.HeaderCarrier(h).Keys()
	if len(keys) < 2 {
		t.Fatalf("Keys = %q", keys)
	}
}

func mustTraceState(t *testing.T, s string) trace.TraceState {
	t.Helper()
	ts, err := trace.ParseTraceState(s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}
