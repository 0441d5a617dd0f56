// Package ingress is the HTTP edge of a cmx gateway (DESIGN.md §3 step 1, §6):
// the agency-facing API, its authentication, limits, idempotency and
// problem+json errors. It declares the Backend it needs; the gateway root
// implements it. It is the only place that chooses HTTP status codes.
//
// # Order of checks
//
// Every request: common headers (Cache-Control: no-store,
// X-Content-Type-Options: nosniff), panic recovery, routing (404/405 as
// problem+json). Routes other than /healthz, /readyz and /v1/openapi.yaml
// then authenticate (bearer token compared in constant time over SHA-256
// digests, or a verified client certificate whose SAN URI is an agency's
// CertURI; a token and a certificate naming different agencies fail) and take
// a token from the agency's rate-limit bucket (429 with Retry-After), both
// before the body is read.
//
// POST /v1/messages then checks, in order: Content-Type application/json and
// no Content-Encoding (415); Idempotency-Key form (400); body size, refused
// from Content-Length before reading or by http.MaxBytesReader while reading
// (413); strict JSON (DecodeSubmit, 400); meaning: type known (422) and
// allowed for the agency (403), "to" a peer party (422), the character sets
// of recipient, correlation_id and marking (400). The sender is never read
// from the body: a "sender" member is an unknown field.
//
// # Idempotency and durability
//
// Backend.Submit returns only once the message is durable; the 202 follows
// it. Submit runs detached from the client's connection, bounded by
// Config.IdemInFlightTimeout, so a client that disconnects cannot abandon a
// publish half-way (H-19). With an Idempotency-Key the record
// "<agency>.<key>" in the IdemStore moves inflight → done (stored 202 body),
// or is deleted when the Backend refused the message (4xx kinds), or becomes
// failed when the outcome is unknown (503, 500, timeout). A retry with the
// same key and the same body bytes gets the stored 202 (done), 409 (in
// flight), or resubmits with the SAME message id (failed, or in flight for
// longer than IdemInFlightTimeout: a crashed gateway), so the outbox's
// Nats-Msg-Id dedup keeps one entry. Other bytes under the same key get 422.
//
// # Concurrency and zero values
//
// A Server is safe for concurrent use. Zero Config fields take the defaults
// documented on Config. HTTPServer disables HTTP/2 (H-05); net/http itself
// answers 431 (plain text) to headers over MaxHeaderBytes and closes
// connections whose headers are slower than ReadHeaderTimeout.
package ingress
