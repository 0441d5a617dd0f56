// Package certs is the cmx PKI: creation of a party's certificate hierarchy,
// loading and encoding of certificates and keys, trust bundles that pin one
// peer's roots, chain verification for each role, and the set of live
// decryption keys during rotation. It is pure: no files, no network, no
// logging, no clock (callers pass the time; only certificate creation
// reads it, when PKIOptions.Now is zero).
//
// # Profile
//
// A party has a root CA (MaxPathLen 1), an intermediate CA (MaxPathLen 0)
// and four gateway leaves, all ECDSA P-256:
//
//   - signing: KeyUsage digitalSignature only, no EKU, policy OIDSigningPolicy,
//     SAN URI urn:cmx:party:XX:gateway;
//   - encryption: KeyUsage keyAgreement only, policy OIDEncryptionPolicy, same URI;
//   - tls-server: digitalSignature, EKU serverAuth, SAN DNS/IP hosts and the URI;
//   - tls-client: digitalSignature, EKU clientAuth, the URI (an agency client
//     carries urn:cmx:agency:XX:NAME instead).
//
// # Verification
//
// Bundle.Verify (and VerifyX5C for a JOSE x5c header, VerifyRaw for DER
// from a TLS handshake) run these checks in this order and
// return the first failure as a *VerifyError whose Err wraps a sentinel:
//
//  1. options: Role known and Now set (ErrInvalidOptions);
//  2. chain length, 1..MaxChainLen (ErrMalformed, ErrChainTooLong), then each
//     certificate at most MaxCertBytes (ErrCertTooLarge); VerifyX5C and
//     VerifyRaw do both before decoding or parsing anything (ErrMalformed
//     after that for bad base64, bad DER or a repeated certificate);
//  3. leaf key ECDSA P-256 or P-384 (ErrWeakKey);
//  4. a path to the bundle's roots only, never the system pool, with the
//     rest of the chain as intermediates (ErrUntrusted). The path is built at
//     Now clamped into the presented certificates' common validity window,
//     so that validity is judged by step 10 with leeway;
//  5. leaf not a CA (ErrKeyUsage);
//  6. KeyUsage exactly as the role's profile: digitalSignature for signing,
//     keyAgreement for encryption; TLS leaves need digitalSignature and may
//     add keyEncipherment, nothing else (ErrKeyUsage);
//  7. EKU: signing and encryption leaves carry no serverAuth, clientAuth or
//     anyExtendedKeyUsage; TLS leaves carry theirs (ErrKeyUsage);
//  8. policy: signing needs OIDSigningPolicy, encryption OIDEncryptionPolicy,
//     TLS leaves carry neither (ErrPolicy);
//  9. the leaf's one SAN URI names the bundle's party: the gateway URI, or
//     for tls-client also an agency of the party (ErrParty);
//  10. every certificate of the path (leaf, intermediates, root) is valid at
//     SignedAt if set, then at Now, within Leeway: NotAfter < t-leeway is
//     ErrExpired, NotBefore > t+leeway is ErrNotYetValid. ErrNotYetValid is
//     the one transient failure (our clock may be behind).
//
// Successful path builds (step 4, the signature checks) are cached per
// Bundle, keyed by SHA-256 over the chain's DER, at most 1024 entries; every
// other check runs on every call. VerifyX5C and VerifyRaw also reuse the
// parsed certificates of a cached chain, so the certificates they return are
// shared and must not be modified.
//
// # Concurrency and zero values
//
// Bundle and KeySet are immutable after construction and safe for
// concurrent use; a trust-bundle rollover builds a new Bundle (with the old
// and new roots during the overlap, then the new ones only). The zero Bundle
// and a nil *Bundle trust nothing. Bundle.Pool returns a copy, so handing it
// to crypto/tls cannot widen what Verify trusts. VerifyOptions.Leeway 0 means DefaultLeeway,
// negative means none, and it is capped at MaxClockSkew. PKIOptions zero
// values mean now and the default validities (10 years root, 5 years
// intermediate, 1 year leaves); leaves never outlive their issuer.
//
// # Identities and files
//
// PKI.Files and LoadPKI convert a hierarchy to and from PEM files (names in
// the File constants; IsPrivateKeyFile tells which need mode 0600). LoadPKI
// derives the party from the root's organization "cmx XX" and works without
// root.key, so the root key can stay offline; such a PKI can still issue
// (PKI.Issue) a new gateway leaf of any role from the intermediate, for
// renewal and rotation, and agency clients (PKI.IssueAgencyClient). ParseIdentity derives Role and
// Party from a leaf with the same profile checks as Verify (RoleOf, PartyOf)
// and checks that the key matches. Fixtures for tests are in certstest.
//
// # Key sets
//
// KeySet holds our decryption keys during rotation. Lookup treats kid as
// foreign input: anything but 1..64 base64url characters is ErrUnknownKey
// before any use. A key retired at R still decrypts until R plus the outage
// budget, then ErrKeyRetired.
package certs
