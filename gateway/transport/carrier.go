package transport

import "github.com/nats-io/nats.go"

// HeaderCarrier carries W3C trace context in NATS headers. It satisfies
// go.opentelemetry.io/otel/propagation.TextMapCarrier without importing
// OTel. NATS headers are case-sensitive and the propagators write lower-case
// keys ("traceparent", "tracestate"): keys are stored and looked up exactly
// as given, never canonicalised as an http.Header carrier would ("Traceparent"
// would not be found by the peer's extractor).
type HeaderCarrier nats.Header

// Get returns the first value stored under key, or "".
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set stores value under key, replacing earlier values.
func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys lists the stored keys.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
