// Package pair runs the whole exchange on one machine: a dev PKI for both
// parties, two embedded NATS servers joined by a real mutual-TLS leafnode
// (optionally through a proxy that can cut the link), two gateways from
// real YAML config files, and sample agencies on each side (webhook
// receivers and pull inboxes). The demo, the end-to-end benchmark and the
// integration tests all run on it. Start runs both gateways in this
// process; Prepare only writes the PKI and configs (ports pinned), so each
// gateway can run as its own cmxd process, as the benchmark runs them.
//
// Agencies: US — USTR (non-market practice reports), DOL-ILAB (labor
// enforcement notices), TREAS-CFIUS (investment-review best practices, pull
// inbox), OPS (operators); JP — METI, MHLW, MOF (pull inbox), OPS.
package pair
