// Package ledger keeps the gateway's durable facts in JetStream key-value
// buckets, one record per fact (DESIGN.md §5, §9):
//
//   - cmx_status, key "out.<id>": a message we sent — what was sealed (digests,
//     outbox sequence) and its timeline (accepted, relayed, received,
//     delivered, rejected, failed).
//   - cmx_seen, key "<iss>.<id>": the atomic claim on a message we received,
//     with its digests and inbound timeline. Creating it is the dedup claim:
//     exactly one processor wins it (KV Create fails when the key exists).
//   - cmx_receipts, key "<role>.<id>.<status>": the exact bytes of each
//     receipt we signed ("issued"); the first stored bytes win, so a
//     duplicate always gets the byte-identical original. The peer's receipts
//     for messages we sent are kept in the cmx_status record (Receipts), in
//     the same write as the event they attest.
//
// Updates are compare-and-swap loops on the KV revision, so concurrent
// replicas never lose each other's events. All methods are safe for
// concurrent use.
package ledger
