package certs

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// File names written by Files and read by LoadPKI.
const (
	FileRoot         = "root.pem"
	FileRootKey      = "root.key"
	FileInter        = "intermediate.pem"
	FileInterKey     = "intermediate.key"
	FileSigning      = "signing.pem" // leaf + intermediate
	FileSigningKey   = "signing.key"
	FileEncryption   = "encryption.pem" // leaf + intermediate
	FileEncryptKey   = "encryption.key"
	FileTLSServer    = "tls-server.pem"
	FileTLSServerKey = "tls-server.key"
	FileTLSClient    = "tls-client.pem"
	FileTLSClientKey = "tls-client.key"
	FileBundle       = "bundle.pem"   // = root.pem: what the peer pins
	FileCAChain      = "ca-chain.pem" // intermediate + root, for TLS client CAs
)

// IsPrivateKeyFile reports whether a file of Files holds a private key
// (callers write those with mode 0600).
func IsPrivateKeyFile(name string) bool { return strings.HasSuffix(name, ".key") }

// Files returns the PKI as PEM files, by name (see the File constants).
// Leaves that are nil are left out.
func (p *PKI) Files() (map[string][]byte, error) {
	if p.Root == nil || p.Intermediate == nil {
		return nil, errors.New("certs: PKI without root or intermediate")
	}
	files := map[string][]byte{
		FileRoot:    EncodeCertificates(p.Root),
		FileInter:   EncodeCertificates(p.Intermediate),
		FileBundle:  EncodeCertificates(p.Root),
		FileCAChain: EncodeCertificates(p.Intermediate, p.Root),
	}
	keys := []struct {
		name string
		key  crypto.Signer
	}{{FileRootKey, p.RootKey}, {FileInterKey, p.InterKey}}
	for _, l := range []struct {
		cert, key string
		id        *Identity
	}{
		{FileSigning, FileSigningKey, p.Signing},
		{FileEncryption, FileEncryptKey, p.Encryption},
		{FileTLSServer, FileTLSServerKey, p.TLSServer},
		{FileTLSClient, FileTLSClientKey, p.TLSClient},
	} {
		if l.id == nil {
			continue
		}
		files[l.cert] = EncodeCertificates(l.id.Chain...)
		keys = append(keys, struct {
			name string
			key  crypto.Signer
		}{l.key, l.id.Key})
	}
	for _, k := range keys {
		if k.key == nil {
			continue // e.g. an offline root: its key is not in this PKI
		}
		pemKey, err := EncodePrivateKey(k.key)
		if err != nil {
			return nil, fmt.Errorf("certs: %s: %w", k.name, err)
		}
		files[k.name] = pemKey
	}
	return files, nil
}

// LoadPKI is the inverse of Files: it needs the root and intermediate
// certificates and the intermediate key (the root key is optional, so the
// root can stay offline); leaves present are loaded and must have the role
// their file name says and the root's party.
func LoadPKI(files map[string][]byte) (*PKI, error) {
	root, rootKey, err := loadCA(files, FileRoot, FileRootKey, false)
	if err != nil {
		return nil, err
	}
	inter, interKey, err := loadCA(files, FileInter, FileInterKey, true)
	if err != nil {
		return nil, err
	}
	if !isSelfSigned(root) {
		return nil, fmt.Errorf("certs: %s is not self-signed", FileRoot)
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("certs: %s is not signed by %s: %w", FileInter, FileRoot, err)
	}
	party, ok := strings.CutPrefix(firstOrg(root), "cmx ")
	if !ok || !ValidParty(party) {
		return nil, fmt.Errorf("certs: %s: organization %q does not name a cmx party", FileRoot, firstOrg(root))
	}
	p := &PKI{Party: party, Root: root, RootKey: rootKey, Intermediate: inter, InterKey: interKey}
	for _, l := range []struct {
		cert, key string
		role      Role
		dst       **Identity
	}{
		{FileSigning, FileSigningKey, RoleSigning, &p.Signing},
		{FileEncryption, FileEncryptKey, RoleEncryption, &p.Encryption},
		{FileTLSServer, FileTLSServerKey, RoleTLSServer, &p.TLSServer},
		{FileTLSClient, FileTLSClientKey, RoleTLSClient, &p.TLSClient},
	} {
		if *l.dst, err = loadLeaf(files, l.cert, l.key, l.role, p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func loadCA(files map[string][]byte, certName, keyName string, keyRequired bool) (*x509.Certificate, crypto.Signer, error) {
	certs, err := ParseCertificates(files[certName])
	if err != nil {
		return nil, nil, fmt.Errorf("certs: %s: %w", certName, err)
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, nil, fmt.Errorf("certs: %s is not a CA certificate", certName)
	}
	keyPEM, ok := files[keyName]
	if !ok {
		if keyRequired {
			return nil, nil, fmt.Errorf("certs: %s missing", keyName)
		}
		return cert, nil, nil
	}
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: %s: %w", keyName, err)
	}
	if !keyMatches(key, cert) {
		return nil, nil, fmt.Errorf("certs: %s: %w", keyName, ErrKeyMismatch)
	}
	return cert, key, nil
}

func loadLeaf(files map[string][]byte, certName, keyName string, role Role, p *PKI) (*Identity, error) {
	chainPEM, hasCert := files[certName]
	keyPEM, hasKey := files[keyName]
	if !hasCert && !hasKey {
		return nil, nil
	}
	id, err := ParseIdentity(chainPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", certName, err)
	}
	if id.Role != role || id.Party != p.Party || id.Agency != "" {
		return nil, fmt.Errorf("certs: %s holds a %s certificate of %s, want %s of %s", certName, id.Role, id.Party, role, p.Party)
	}
	if err := id.Cert.CheckSignatureFrom(p.Intermediate); err != nil {
		return nil, fmt.Errorf("certs: %s is not issued by %s: %w", certName, FileInter, err)
	}
	return id, nil
}

func firstOrg(c *x509.Certificate) string {
	if len(c.Subject.Organization) == 0 {
		return ""
	}
	return c.Subject.Organization[0]
}
