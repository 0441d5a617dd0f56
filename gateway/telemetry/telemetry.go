// Package telemetry is the one place that configures the OpenTelemetry SDK
// for a gateway: a tracer provider whose exporter comes from the standard
// OTEL_* environment variables (autoexport; none when OTEL_TRACES_EXPORTER is
// unset), and a meter provider read by a Prometheus registry of its own,
// served as /metrics. Instrumented packages only ever see the API
// interfaces (trace.TracerProvider, metric.MeterProvider), so two gateways
// in one process (the demo, the tests) keep separate resources and metrics.
package telemetry

import (
	"context"
	"errors"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/attribute"
	promexp "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// Providers are what a gateway node needs for telemetry.
type Providers struct {
	Tracer     trace.TracerProvider
	Meter      metric.MeterProvider
	Propagator propagation.TextMapPropagator
	Metrics    http.Handler // Prometheus text format, for GET /metrics
	shutdown   []func(context.Context) error
	flush      func(context.Context) error
}

// ForceFlush exports every span ended so far (tests, shutdown).
func (p *Providers) ForceFlush(ctx context.Context) error { return p.flush(ctx) }

// Shutdown flushes and stops the providers.
func (p *Providers) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range p.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

// Options adjust Setup.
type Options struct {
	ServiceName string                // "" means OTEL_SERVICE_NAME, else "cmxd"
	Spans       sdktrace.SpanExporter // nil means autoexport from OTEL_* (none if unset)
	Sampler     sdktrace.Sampler      // nil means parent-based always-on
	Attributes  map[string]string     // extra resource attributes, e.g. cmx.party
}

// Setup builds the providers.
func Setup(ctx context.Context, o Options) (*Providers, error) {
	name := o.ServiceName
	if v := os.Getenv("OTEL_SERVICE_NAME"); v != "" {
		name = v
	}
	if name == "" {
		name = "cmxd"
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(name)}
	for k, v := range o.Attributes {
		attrs = append(attrs, attribute.String(k, v))
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attrs...))
	if err != nil {
		return nil, err
	}
	spans := o.Spans
	if spans == nil {
		spans, err = autoexport.NewSpanExporter(ctx, autoexport.WithFallbackSpanExporter(
			func(context.Context) (sdktrace.SpanExporter, error) { return noneExporter{}, nil }))
		if err != nil {
			return nil, err
		}
	}
	sampler := o.Sampler
	if sampler == nil {
		sampler = sdktrace.ParentBased(sdktrace.AlwaysSample())
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithSampler(sampler), sdktrace.WithBatcher(spans))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := promexp.New(promexp.WithRegisterer(reg), promexp.WithoutScopeInfo())
	if err != nil {
		return nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(exp))
	return &Providers{
		Tracer:     tp,
		Meter:      mp,
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Metrics:    promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
		shutdown:   []func(context.Context) error{tp.Shutdown, mp.Shutdown},
		flush:      tp.ForceFlush,
	}, nil
}

// noneExporter drops spans: tracing is on (trace ids in logs and headers)
// but nothing is exported unless OTEL_TRACES_EXPORTER asks for it.
type noneExporter struct{}

func (noneExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (noneExporter) Shutdown(context.Context) error                             { return nil }
