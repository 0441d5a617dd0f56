// Package envelope is the cmx wire format (DESIGN.md §4): message claims,
// sealing (sign, then encrypt), opening, and signed receipts. It is pure: no
// I/O, no logging, no clock (callers pass the time; only NewID reads it, as
// a UUIDv7 must), no NATS, no OTel.
//
// # Profile
//
// Compact serialization only. A message is exactly one JWE
// (ECDH-ES+A256KW, A256GCM, P-256; protected header exactly alg, enc, cty
// "JWT", kid, epk) containing exactly one JWS (ES256; protected header
// exactly alg, typ "cmx-msg+jwt", kid, x5c). A receipt is one JWS with typ
// "cmx-rcpt+jwt", not encrypted. kid is always the x5t#S256 of the
// certificate (certs.KID). Claims are encoded once and verified over the
// exact bytes received; receipts and deduplication refer to those bytes by
// Digest.
//
// # Order of checks in Opener.Open
//
// Each step runs only if the previous ones passed; the first failure is
// returned as an *Error with the reason code a rejected receipt carries.
//
//  1. size: len(env) ≤ Limits.MaxEnvelopeBytes(), before anything else
//     (ErrTooLarge, too_large).
//  2. form: exactly 5 segments, every byte base64url or '.', no empty
//     segment (an empty encrypted_key is malformed: J-16), every segment
//     canonical unpadded base64url (J-27), protected header segment ≤ 4 KiB
//     (J-25); all before go-jose sees the token (ErrMalformed, malformed).
//  3. outer header, strictly decoded: exactly alg, enc, cty, kid, epk, no
//     duplicates, no case variants, no nesting beyond epk (J-09..J-14);
//     alg ECDH-ES+A256KW, enc A256GCM, cty JWT (J-12, J-13, J-19)
//     (ErrMalformed, malformed).
//  4. key: Keys.Lookup(kid, now); unknown or retired (J-06, C-14) is
//     ErrCrypto, decrypt_failed.
//  5. decrypt with go-jose, allowing exactly ECDH-ES+A256KW and A256GCM,
//     inside a recover boundary; every failure is the same opaque error
//     (J-15, J-17) (ErrCrypto, decrypt_failed).
//  6. plaintext form: a compact JWS of 3 non-empty canonical segments with
//     a protected header ≤ 8 KiB (J-20 raw JSON, J-28 JWE in JWE)
//     (ErrMalformed, malformed).
//  7. inner header, strictly decoded: exactly alg, typ, kid, x5c (no jwk,
//     jku, x5u, crit, b64: J-04, J-05, J-09); typ cmx-msg+jwt, so a receipt
//     is never a message (J-21) (ErrMalformed, malformed); alg ES256, any
//     other (none, HS256: J-01, J-02) is ErrCrypto, signature_invalid.
//  8. signer: x5c verified by Peer.VerifyX5C for the signing role at now,
//     and kid equal to certs.KID(leaf) (C-02) (ErrUntrustedSigner,
//     untrusted_signer; transient if a certificate is not yet valid: C-07).
//  9. signature: go-jose ES256 only, verified with the leaf's public key
//     only (J-01..J-03, J-26) (ErrCrypto, signature_invalid).
//  10. claims: strict JSON (valid UTF-8, no duplicate member at any level,
//     only the declared claims with their exact names, nesting ≤ 32),
//     ValidateClaims, iss = Peer.Party(), aud = Self (J-22) (ErrClaims,
//     claims_invalid); body ≤ Limits.MaxBodyBytes (ErrTooLarge); the chain
//     again with SignedAt = iat (a certificate valid when signing; permanent)
//     (ErrUntrustedSigner); exp < now-Leeway (ErrExpired, expired);
//     iat > now+Leeway (ErrNotYetValid, not_yet_valid, transient: J-24);
//     exp-iat > MaxLifetime (ErrClaims).
//  11. ValidateBody, if set (ErrSchema, schema_invalid).
//
// OpenInner runs steps 6 to 11 on an already decrypted inner JWS, after a
// size check against Limits.MaxInnerBytes(). ReceiptVerifier.Verify documents
// its own order. Nothing in this package panics on any input; go-jose calls
// run behind recover boundaries as defence in depth.
//
// # Errors
//
// Every failure of Open, OpenInner and ReceiptVerifier.Verify is an *Error:
// Reason is the stable code, Transient says whether retrying later may
// succeed, and Err wraps one of the sentinels (ErrTooLarge, ErrMalformed,
// ErrCrypto, ErrUntrustedSigner, ErrClaims, ErrExpired, ErrNotYetValid,
// ErrSchema). The error text is for local logs; toward the peer only the
// reason code travels, and every decryption failure has one text.
//
// # Concurrency and zero values
//
// Opener and ReceiptVerifier are read-only after construction and safe for
// concurrent use. Their zero durations mean DefaultLeeway (2 minutes) and
// DefaultMaxLifetime (8 days); a zero Limits means DefaultMaxBodyBytes; a
// zero ReceiptVerifier.MaxBytes means DefaultMaxReceiptBytes; an empty
// ReceiptVerifier.Self accepts any audience (offline auditors).
package envelope
