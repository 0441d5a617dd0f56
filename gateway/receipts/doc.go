// Package receipts issues our signed receipts and accepts the peer's
// (DESIGN.md §3 step 5, §4 "Receipt").
//
// Issuer signs a receipt, hands its exact bytes to the caller's Store (the
// inbound stage keeps them in the message's claim record with the event
// they attest; the first stored bytes win: one receipt per message and
// status, invariant 4) and publishes the stored bytes to the outbox with
// Nats-Msg-Id = receipt id, so the forwarder carries it to the peer like
// any message. Stored before sent: a crash in between is repaired by Send
// on redelivery. A duplicate envelope gets the stored bytes again
// (Resend), never a fresh signature.
//
// Acceptor verifies a peer receipt against the peer's pinned roots, matches
// it to the message we sent (id, envelope digest, inner JWS digest), stores
// it and moves the message's timeline. Receipts of one message that arrive
// together are written in one update (group commit per message id; an
// accepted receipt may wait briefly for the delivered one), with the
// message's relayed event when it is still held in memory. A receipt that
// does not verify or match is never counted: it is quarantined and logged
// as an alert.
package receipts
