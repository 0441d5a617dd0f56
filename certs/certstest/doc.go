// Package certstest provides fixtures for tests that need cmx certificates:
// a cached PKI per party at a fixed clock, and builders for deliberately bad
// leaves issued by a PKI's intermediate. Fixtures are shared between tests:
// treat them as read-only.
//
// NewPKI is cached per party, so a test suite pays for key generation once;
// FreshPKI makes an unshared hierarchy (a rollover). Bundle pins a party's
// cached root in a new Bundle (with an empty path cache) on every call. Leaf
// and LeafWithKey issue from a PKI's intermediate starting at the profile's
// signing template, with a mutate hook to make them deliberately wrong
// (catalogue C-03..C-12). Everything is issued at the fixed clock Now.
package certstest
