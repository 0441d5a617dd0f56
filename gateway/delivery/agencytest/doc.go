// Package agencytest provides a fake agency back office: an HTTP server on
// 127.0.0.1 that receives cmx webhook deliveries, deduplicates them by
// Idempotency-Key as DESIGN.md requires of agencies, and can be told to
// fail (down with a status, connections cut, slow, Retry-After).
//
// It counts raw requests (Hits) separately from recorded effects
// (Deliveries, Effects), and the largest number of concurrent requests per
// key (MaxConcurrent), which the invariants I3 and F-09 bound.
//
// New and NewTLS listen on 127.0.0.1 only and close at test cleanup; delays
// in progress are cut short then. All methods are safe for concurrent use.
package agencytest
