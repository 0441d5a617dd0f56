// Package interop proves that the cmx wire format (DESIGN.md §4) is
// standard JOSE: its tests exchange envelopes and receipts between
// package envelope and implementations that share no code with go-jose.
//
//   - panva/jose (npm, pinned exactly in package-lock.json) driven through
//     jose.mjs, a small CLI that reads one JSON request on stdin and writes
//     one JSON answer on stdout. Tokens go both ways: cmx seals and issues,
//     jose opens and verifies; jose seals and signs, cmx opens and verifies;
//     and jose builds off-profile envelopes (direct ECDH-ES, A128GCM, zip)
//     that cmx must refuse.
//   - José (the latchset C implementation, Debian package "jose"), both ways:
//     it decrypts a cmx envelope and verifies the inner message and a
//     receipt; it signs a receipt and signs and encrypts a message that cmx
//     verifies and opens.
//
// The package has no code outside its tests. The tests skip when node (or
// the jose binary) is not on PATH, unless CMX_REQUIRE_INTEROP is set (CI
// sets it), in which case a missing tool is a failure. When node_modules is
// absent, the tests run "npm ci" into a temporary copy of this directory, so
// the source tree is never written to.
package interop
