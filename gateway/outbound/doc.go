// Package outbound is the sending half of the pipeline (DESIGN.md §3 steps 1–2).
//
// Sender seals a submission (sign with our signing key, encrypt to the peer's
// encryption certificate) and publishes the envelope to the local outbox
// stream CMX_OUT with Nats-Msg-Id = message id. It returns only after the
// PubAck from the fsynced stream and after the ledger record exists, so a 202
// always means durable (invariant 1). A retry with the same id publishes a
// duplicate that JetStream drops inside the stream's duplicate window; a
// later retry first looks for the earlier attempt's record or outbox item
// and seals nothing new if there is one (one envelope per id).
//
// Forwarder consumes CMX_OUT and republishes each item to the peer's inbound
// subject across the leafnode, waiting for the peer's PubAck before acking the
// outbox. A failed publish leaves the item in the outbox, retried with backoff
// and the same Nats-Msg-Id, so the peer's stream deduplicates retries.
//
// Both are safe for concurrent use; Forwarder.Run owns its goroutines and
// returns when its context ends.
package outbound
