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
// Relayed records the relayed event (the peer's PubAck) with as few writes
// of the message's record as it can: it holds the event in memory, bounded,
// for the write of the peer's first receipt to carry it (the receipts
// acceptor asks for it), and writes it alone only past a hold time or when
// full. A crash loses the events held: those timelines lack relayed, and
// their status, the highest-ranked event, is still right.
//
// All three are safe for concurrent use; Forwarder.Run and Relayed.Run own
// their goroutines and return when their context ends.
package outbound
