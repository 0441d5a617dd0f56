// Package ledger keeps the gateway's durable facts in JetStream key-value
// buckets, one record per fact (DESIGN.md §5, §9):
//
//   - cmx_status, key "out.<id>": a message we sent — what was sealed (digests,
//     outbox sequence) and its timeline (accepted, relayed, received,
//     delivered, rejected, failed).
//   - cmx_seen, key "<iss>.<id>": the atomic claim on a message we received,
//     with its digests, inbound timeline and the exact bytes of the receipts
//     we signed for it. Creating it is the dedup claim: exactly one
//     processor wins it (KV Create fails when the key exists), and it holds
//     the decision (accepted or rejected) and that receipt from the start.
//   - cmx_receipts, key "<role>.<id>.<status>": receipts that must never
//     answer for the message itself: ours for a conflicting or unopenable
//     copy, and peer receipts that failed matching (quarantine).
//
// A receipt is stored with the event it attests, in one write, and the
// first stored bytes win (Record.PutReceipt, Store.AddReceipt): a
// duplicate always gets the byte-identical original. The peer's receipts
// for messages we sent are kept in the cmx_status record the same way.
//
// Updates are compare-and-swap loops on the KV revision, so concurrent
// replicas never lose each other's events. All methods are safe for
// concurrent use.
package ledger
