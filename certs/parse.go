package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
)

const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
)

// ParseCertificates returns every CERTIFICATE block of pemBytes, in order.
// Other block types are skipped; it is an error if there is none.
func ParseCertificates(pemBytes []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrMalformed, len(out)+1, err)
		}
		out = append(out, cert)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no CERTIFICATE block", ErrMalformed)
	}
	return out, nil
}

// EncodeCertificates returns certs as concatenated PEM CERTIFICATE blocks.
func EncodeCertificates(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: pemCertificate, Bytes: c.Raw}) // writes to a Buffer cannot fail
	}
	return buf.Bytes()
}

// EncodePrivateKey returns key as a PKCS#8 "PRIVATE KEY" PEM block. It fails
// for keys that cannot be exported (an HSM signer).
func EncodePrivateKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// ParsePrivateKey parses the first PKCS#8 "PRIVATE KEY" block of pemBytes
// (also accepting the legacy "EC PRIVATE KEY" form).
func ParsePrivateKey(pemBytes []byte) (crypto.Signer, error) {
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("%w: no PRIVATE KEY block", ErrMalformed)
		}
		var key any
		var err error
		switch block.Type {
		case pemPrivateKey:
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: private key: %v", ErrMalformed, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%w: private key of type %T cannot sign", ErrMalformed, key)
		}
		return signer, nil
	}
}

// ParseIdentity parses a chain (leaf first; a trailing self-signed root is
// dropped, as x5c never carries it) and its private key. It checks that the
// key matches the leaf and derives Role and Party from the leaf with the same
// profile checks Verify applies (RoleOf, PartyOf). It does not check the
// chain against any root: the caller's own files are trusted.
func ParseIdentity(chainPEM, keyPEM []byte) (*Identity, error) {
	chain, err := ParseCertificates(chainPEM)
	if err != nil {
		return nil, err
	}
	for len(chain) > 1 && isSelfSigned(chain[len(chain)-1]) {
		chain = chain[:len(chain)-1]
	}
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, err
	}
	leaf := chain[0]
	if !keyMatches(key, leaf) {
		return nil, fmt.Errorf("%w: %q", ErrKeyMismatch, leaf.Subject.String())
	}
	role, err := RoleOf(leaf)
	if err != nil {
		return nil, err
	}
	party, agency, err := PartyOf(leaf)
	if err != nil {
		return nil, err
	}
	if err := checkPartyForRole(role, agency); err != nil {
		return nil, err
	}
	return &Identity{Party: party, Agency: agency, Role: role, Cert: leaf, Chain: chain, Key: key, KID: KID(leaf)}, nil
}

// ParseDecryptionKey parses an encryption identity for use as a JWE
// recipient key: the leaf must be RoleEncryption and the key an ECDSA P-256
// private key (used for ECDH-ES).
func ParseDecryptionKey(chainPEM, keyPEM []byte) (*DecryptionKey, error) {
	id, err := ParseIdentity(chainPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if id.Role != RoleEncryption {
		return nil, fmt.Errorf("%w: %q is a %s certificate, not encryption", ErrKeyUsage, id.Cert.Subject.String(), id.Role)
	}
	key, ok := id.Key.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: encryption key must be ECDSA P-256", ErrWeakKey)
	}
	return &DecryptionKey{Cert: id.Cert, Key: key, KID: id.KID}, nil
}

// TLSCertificate returns the identity as a crypto/tls certificate (chain and
// key, Leaf set).
func (id *Identity) TLSCertificate() tls.Certificate {
	der := make([][]byte, len(id.Chain))
	for i, c := range id.Chain {
		der[i] = c.Raw
	}
	return tls.Certificate{Certificate: der, PrivateKey: id.Key, Leaf: id.Cert}
}

// RoleOf derives what a leaf was issued for and checks it against the
// profile: EKU serverAuth makes a TLS server, EKU clientAuth a TLS client;
// otherwise KeyUsage digitalSignature with the signing policy makes a signer
// and keyAgreement with the encryption policy an encryption leaf.
func RoleOf(leaf *x509.Certificate) (Role, error) {
	var role Role
	switch {
	case leaf.IsCA:
		return "", fmt.Errorf("%w: %q is a CA certificate", ErrKeyUsage, leaf.Subject.String())
	case slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth):
		role = RoleTLSServer
	case slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth):
		role = RoleTLSClient
	case leaf.KeyUsage == x509.KeyUsageDigitalSignature:
		role = RoleSigning
	case leaf.KeyUsage == x509.KeyUsageKeyAgreement:
		role = RoleEncryption
	default:
		return "", fmt.Errorf("%w: %q fits no cmx role", ErrKeyUsage, leaf.Subject.String())
	}
	if _, err := checkRole(leaf, role); err != nil {
		return "", err
	}
	return role, nil
}

// PartyOf returns the party (and, for an agency client, the agency) named by
// the leaf's single SAN URI: urn:cmx:party:XX:gateway or
// urn:cmx:agency:XX:NAME. Any other form, or more than one URI, is ErrParty.
func PartyOf(leaf *x509.Certificate) (party, agency string, err error) {
	if len(leaf.URIs) != 1 {
		return "", "", fmt.Errorf("%w: want exactly one SAN URI, have %d", ErrParty, len(leaf.URIs))
	}
	u := leaf.URIs[0].String()
	switch {
	case strings.HasPrefix(u, "urn:cmx:party:"):
		party = strings.TrimPrefix(u, "urn:cmx:party:")
		if p, ok := strings.CutSuffix(party, ":gateway"); ok && ValidParty(p) {
			return p, "", nil
		}
	case strings.HasPrefix(u, "urn:cmx:agency:"):
		p, a, ok := strings.Cut(strings.TrimPrefix(u, "urn:cmx:agency:"), ":")
		if ok && ValidParty(p) && ValidAgency(a) {
			return p, a, nil
		}
	}
	return "", "", fmt.Errorf("%w: SAN URI %q is not a cmx party or agency URI", ErrParty, truncate(u, 80))
}

func checkPartyForRole(role Role, agency string) error {
	if agency != "" && role != RoleTLSClient {
		return fmt.Errorf("%w: agency URI on a %s certificate", ErrParty, role)
	}
	return nil
}

func keyMatches(key crypto.Signer, leaf *x509.Certificate) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(leaf.PublicKey)
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
