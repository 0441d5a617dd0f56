// Package delivery hands verified inbound messages to the agencies of this
// gateway (DESIGN.md §3 step 4): by webhook POST, or through a pull inbox.
// It only ever receives messages whose inner JWS has been verified and whose
// claims name this party and one of its agencies (invariant 5); it does no
// verification itself.
//
// # Webhook
//
// Webhook.Deliver POSTs the api.Delivery JSON to the agency with
// Content-Type: application/json, Idempotency-Key: <message id> on every
// attempt (invariant 3), User-Agent, and of the caller's headers only
// traceparent and tracestate. The agency must deduplicate on the key: the
// one window no gateway can close is "agency answered 2xx, gateway crashed
// before recording it".
//
// One call makes at most 1+RetryMax HTTP attempts (go-retryablehttp) of at
// most Timeout each; MaxDuration is the bound. So that no redelivery
// overlaps a call in flight, the JetStream consumer's AckWait must exceed
// it, or the caller must send in-progress heartbeats while the call runs
// (the inbound processor does: AckWait 10 s, a heartbeat every third of
// it). Within one Webhook, a second Deliver of an id already in flight
// fails at once with ErrInFlight (transient) instead of reaching the agency
// (F-09). Across replicas that bound is the consumer's AckWait, kept alive
// by those heartbeats. Raw requests per
// call can exceed 1+RetryMax by one: net/http replays, once, a request
// carrying Idempotency-Key whose reused keep-alive connection failed before
// any response; the replay carries the same key.
//
// The outcome is nil for 2xx, otherwise a *Failure, classified so that
// errors.Is(err, ErrTransient) or errors.Is(err, ErrPermanent) holds:
//
//	transient  connection refused or reset, timeouts, TLS handshake I/O errors,
//	           408, 409, 421, 425, 429, 5xx except 501, statuses outside 100..599,
//	           2xx whose body breaks off (ErrAmbiguous: the outcome is unknown, F-12),
//	           the caller's context ending, ErrInFlight
//	permanent  3xx (ErrRedirect: redirects are never followed), every other 4xx
//	           (400, 401, 403, 404, 405, 410, 413, 415, 422, ...), 501,
//	           certificate verification failures, certificate alerts from the
//	           agency, TLS against a plain HTTP server, an invalid URL or id
//
// A transient failure carries the agency's Retry-After (delay-seconds or
// HTTP-date) in Failure.RetryAfter, capped at MaxRetryAfter
// (go-retryablehttp issue #247, F-11). A Retry-After longer than
// RetryWaitMax is not slept through inside the call: the call ends and the
// caller naks with Backoff(attempt, f.RetryAfter). Backoff is the outer
// loop: 1s, 5s, 30s, 2m, 10m, then 30m, at least Retry-After, at most 1h.
//
// At most 64 KiB of any response body is read, and discarded. URL paths and
// queries are kept out of errors and logs (agencies put tokens there).
//
// # Inbox
//
// Inbox keeps the messages of agencies that pull, in a JetStream KV bucket
// the gateway creates (cmx_inbox), one entry per message under the key
// "<agency>.<message id>". Agency codes must match ^[A-Z0-9][A-Z0-9-]{0,31}$
// and ids must be canonical lowercase UUIDs before they are used in a key or
// key filter, so no caller input can become a wildcard. Entries are never
// rewritten: Put creates (idempotent for equal content; a removed entry is
// not put back while its delete marker lives), List reads oldest first,
// Remove purges the content after the delivered receipt is durable. Inbox
// errors a caller can cause are *api.Error values (KindInvalid,
// KindNotFound, KindConflict) wrapping this package's sentinels.
//
// The bucket should keep file storage and no MaxAge shorter than the outage
// budget: an entry that expires is a message lost without a receipt.
//
// Both Webhook and Inbox are safe for concurrent use. Neither logs message
// bodies.
package delivery
