package certs

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"time"
)

// Object identifiers of the cmx PKI profile. They live under the UUID arc 2.25
// (ITU-T X.667), which needs no registration. The policy OID is what makes a
// certificate a cmx gateway signing certificate: a TLS certificate of the same
// CA never carries it, so it can never pass as a signer (catalogue C-04, C-05).
var (
	// OIDSigningPolicy is the certificate policy every gateway signing
	// certificate must carry.
	OIDSigningPolicy = mustOID("2.25.313130815416498390410287421315217371393.1")
	// OIDEncryptionPolicy marks gateway encryption (key agreement) certificates.
	OIDEncryptionPolicy = mustOID("2.25.313130815416498390410287421315217371393.2")
)

func mustOID(s string) x509.OID {
	oid, err := x509.ParseOID(s)
	if err != nil {
		panic(err)
	}
	return oid
}

// Role is what a leaf certificate is for. Verification checks that the leaf
// was issued for exactly that role.
type Role string

const (
	RoleSigning    Role = "signing"    // KeyUsage digitalSignature only, no TLS EKU, signing policy
	RoleEncryption Role = "encryption" // KeyUsage keyAgreement only, encryption policy
	RoleTLSServer  Role = "tls-server" // EKU serverAuth
	RoleTLSClient  Role = "tls-client" // EKU clientAuth; the gateway or an agency of the party
)

// Limits of the verifier. They bound the work done on a foreign x5c header
// before any signature is checked.
const (
	MaxChainLen  = 4       // certificates in an x5c chain (leaf first)
	MaxCertBytes = 8 << 10 // DER bytes of one certificate
	MaxClockSkew = 5 * time.Minute
)

// KID returns the key identifier cmx uses everywhere: the x5t#S256
// thumbprint of the certificate, base64url (no padding) of SHA-256 over DER.
func KID(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// PartyURI is the SAN URI naming a party's gateway, e.g. urn:cmx:party:US:gateway.
func PartyURI(party string) string { return "urn:cmx:party:" + party + ":gateway" }

// AgencyURI is the SAN URI naming an agency client, e.g. urn:cmx:agency:US:DOL-ILAB.
func AgencyURI(party, agency string) string { return "urn:cmx:agency:" + party + ":" + agency }

// Identity is one private key with its certificate chain (leaf first, then
// intermediates; never the root). Key is a crypto.Signer so that an HSM can
// stand behind it. For encryption identities the key must also be usable for
// ECDH; see DecryptionKey.
type Identity struct {
	Party  string              // party code from the leaf's SAN URI, e.g. "US"
	Agency string              // agency name for an agency client (urn:cmx:agency:XX:NAME), else ""
	Role   Role                // what the leaf was issued for
	Cert   *x509.Certificate   // leaf
	Chain  []*x509.Certificate // leaf first, then intermediates, as in x5c
	Key    crypto.Signer
	KID    string // KID(Cert)
}

// DecryptionKey is one of our encryption keys. Key is the private key handed
// to the JOSE layer for ECDH-ES (an *ecdsa.PrivateKey, or an opaque
// decrypter for an HSM).
type DecryptionKey struct {
	Cert      *x509.Certificate
	Key       crypto.PrivateKey
	KID       string    // KID(Cert)
	RetiredAt time.Time // zero while the key is current or live
}

// PKI is a party's freshly created certificate hierarchy: an offline root, an
// intermediate, and the gateway's leaves. Create it with NewPKI; write it out
// with Files.
type PKI struct {
	Party        string
	Root         *x509.Certificate
	RootKey      crypto.Signer
	Intermediate *x509.Certificate
	InterKey     crypto.Signer
	Signing      *Identity // RoleSigning
	Encryption   *Identity // RoleEncryption
	TLSServer    *Identity // RoleTLSServer: HTTP API and leafnode listener
	TLSClient    *Identity // RoleTLSClient: leafnode remote, cmx CLI
}
