// Package inbound is the receiving half of the pipeline (DESIGN.md §3 steps
// 3–5): it consumes the inbound stream CMX_IN with two durable consumers, one
// for messages and one for receipts.
//
// A message goes through, in order: open (size, form, decrypt, signature,
// chain, claims, schema — see package envelope); the atomic dedup claim in
// cmx_seen keyed by the signed issuer and id; routing checks (subject and
// Nats-Msg-Id are hints and must agree with the signed claims); recipient and
// marking policy; the accepted receipt; delivery (webhook or pull inbox); the
// delivered receipt; and only then the JetStream ack. Each step is idempotent,
// so a redelivery after a crash resumes where the last one stopped.
//
// Errors are split the way JetStream needs them: transient (our clock behind,
// storage or agency unavailable) → NakWithDelay; permanent → a signed rejected
// receipt, then ack, never silence. A duplicate envelope gets the stored
// receipts again byte for byte; the same id with other content is an
// equivocation: a rejected/duplicate_conflict receipt, an alert, and both
// kept.
//
// Processor.Run owns its goroutines (a reader and a bounded worker pool per
// consumer) and returns when its context ends, after the workers finish.
package inbound
