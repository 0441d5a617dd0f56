package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// PKIOptions parameterises certificate creation. The zero value means: now,
// the default validities below, and a TLS server certificate for localhost.
type PKIOptions struct {
	Now           time.Time     // zero = time.Now()
	RootValidity  time.Duration // 0 = 10 years
	InterValidity time.Duration // 0 = 5 years
	LeafValidity  time.Duration // 0 = 1 year
	Hosts         []string      // DNS names / IPs for the TLS server cert; nil = ["localhost","127.0.0.1","::1"]
}

const (
	defaultRootValidity  = 10 * 365 * 24 * time.Hour
	defaultInterValidity = 5 * 365 * 24 * time.Hour
	defaultLeafValidity  = 365 * 24 * time.Hour
	backdate             = time.Minute // NotBefore = Now - backdate, for peers whose clock is a little behind
)

var (
	partyRE  = regexp.MustCompile(`^[A-Z]{2}$`)
	agencyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	hostRE   = regexp.MustCompile(`^[A-Za-z0-9*]([A-Za-z0-9.-]{0,252})$`)
)

// ValidParty reports whether s is a party code: two upper-case ASCII letters.
func ValidParty(s string) bool { return partyRE.MatchString(s) }

// ValidAgency reports whether s may name an agency in AgencyURI: 1 to 64
// ASCII letters, digits, '.', '_' or '-', starting with a letter or digit.
func ValidAgency(s string) bool { return agencyRE.MatchString(s) }

func (o PKIOptions) withDefaults() (PKIOptions, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.RootValidity < 0 || o.InterValidity < 0 || o.LeafValidity < 0 {
		return o, errors.New("certs: negative validity")
	}
	if o.RootValidity == 0 {
		o.RootValidity = defaultRootValidity
	}
	if o.InterValidity == 0 {
		o.InterValidity = defaultInterValidity
	}
	if o.LeafValidity == 0 {
		o.LeafValidity = defaultLeafValidity
	}
	if o.Hosts == nil {
		o.Hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	return o, nil
}

// NewPKI creates a party's hierarchy: a root (MaxPathLen 1), an intermediate
// (MaxPathLen 0) and the four gateway leaves. All keys are ECDSA P-256. It
// does no I/O; write the result with Files.
func NewPKI(party string, opts PKIOptions) (*PKI, error) {
	if !ValidParty(party) {
		return nil, fmt.Errorf("certs: party %q is not two upper-case letters", party)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &PKI{Party: party}
	if p.Root, p.RootKey, err = newRoot(party, opts); err != nil {
		return nil, err
	}
	if p.Intermediate, p.InterKey, err = p.newIntermediate(opts); err != nil {
		return nil, err
	}
	for _, leaf := range []struct {
		dst  **Identity
		role Role
	}{
		{&p.Signing, RoleSigning},
		{&p.Encryption, RoleEncryption},
		{&p.TLSServer, RoleTLSServer},
		{&p.TLSClient, RoleTLSClient},
	} {
		if *leaf.dst, err = p.issue(leaf.role, "", opts); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Issue issues one new gateway leaf of role from the intermediate, with the
// same profile as NewPKI, for renewal and key rotation: a fresh key, a new
// serial and so a new KID. opts.Hosts applies to RoleTLSServer only;
// opts.LeafValidity is capped at the intermediate's NotAfter. It needs
// p.Intermediate and p.InterKey, not the root key. p is not changed. Agency
// client certificates come from IssueAgencyClient.
func (p *PKI) Issue(role Role, opts PKIOptions) (*Identity, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return p.issue(role, "", opts)
}

// IssueEncryption is Issue(RoleEncryption, opts).
func (p *PKI) IssueEncryption(opts PKIOptions) (*Identity, error) {
	return p.Issue(RoleEncryption, opts)
}

// IssueAgencyClient issues a TLS client certificate for one of the party's
// agencies: EKU clientAuth, SAN URI AgencyURI(p.Party, agency).
func (p *PKI) IssueAgencyClient(agency string, opts PKIOptions) (*Identity, error) {
	if !ValidAgency(agency) {
		return nil, fmt.Errorf("certs: agency name %q not allowed", agency)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return p.issue(RoleTLSClient, agency, opts)
}

func (p *PKI) issue(role Role, agency string, opts PKIOptions) (*Identity, error) {
	if p == nil || p.Intermediate == nil || p.InterKey == nil {
		return nil, errors.New("certs: PKI has no intermediate CA key")
	}
	tmpl, err := LeafTemplate(p.Party, role, agency, opts)
	if err != nil {
		return nil, err
	}
	if tmpl.NotAfter.After(p.Intermediate.NotAfter) {
		tmpl.NotAfter = p.Intermediate.NotAfter
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	cert, err := createCert(tmpl, p.Intermediate, key.Public(), p.InterKey)
	if err != nil {
		return nil, err
	}
	return &Identity{
		Party: p.Party, Agency: agency, Role: role, Cert: cert,
		Chain: []*x509.Certificate{cert, p.Intermediate}, Key: key, KID: KID(cert),
	}, nil
}

// NewKey generates an ECDSA P-256 key, the only key type cmx issues.
func NewKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate key: %w", err)
	}
	return key, nil
}

// LeafTemplate returns the profile's template for a leaf of the given role
// (serial, subject, validity, KeyUsage, EKU, policies, SANs). agency is only
// allowed with RoleTLSClient and turns it into an agency client. Issuers and
// tests start from it; NewPKI issues exactly these.
func LeafTemplate(party string, role Role, agency string, opts PKIOptions) (*x509.Certificate, error) {
	if !ValidParty(party) {
		return nil, fmt.Errorf("certs: party %q is not two upper-case letters", party)
	}
	if agency != "" && (role != RoleTLSClient || !ValidAgency(agency)) {
		return nil, fmt.Errorf("certs: agency %q not allowed for role %q", agency, role)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	uri := PartyURI(party)
	cn := "cmx " + party + " gateway " + string(role)
	if agency != "" {
		uri, cn = AgencyURI(party, agency), "cmx "+party+" agency "+agency
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("certs: SAN URI: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	t := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"cmx " + party}},
		NotBefore:             opts.Now.Add(-backdate),
		NotAfter:              opts.Now.Add(opts.LeafValidity),
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
	}
	return t, applyRole(t, role, opts.Hosts)
}

func applyRole(t *x509.Certificate, role Role, hosts []string) error {
	switch role {
	case RoleSigning:
		t.KeyUsage = x509.KeyUsageDigitalSignature
		t.Policies = []x509.OID{OIDSigningPolicy}
	case RoleEncryption:
		t.KeyUsage = x509.KeyUsageKeyAgreement
		t.Policies = []x509.OID{OIDEncryptionPolicy}
	case RoleTLSServer:
		t.KeyUsage = x509.KeyUsageDigitalSignature
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		return addHosts(t, hosts)
	case RoleTLSClient:
		t.KeyUsage = x509.KeyUsageDigitalSignature
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return fmt.Errorf("certs: unknown role %q", role)
	}
	return nil
}

func addHosts(t *x509.Certificate, hosts []string) error {
	for _, h := range hosts {
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if ip := net.ParseIP(h); ip != nil {
			t.IPAddresses = append(t.IPAddresses, ip)
			continue
		}
		if !hostRE.MatchString(h) {
			return fmt.Errorf("certs: host %q is neither an IP address nor a DNS name", h)
		}
		t.DNSNames = append(t.DNSNames, strings.ToLower(h))
	}
	if len(hosts) > 0 {
		t.Subject.CommonName = hosts[0]
	}
	return nil
}

func newRoot(party string, opts PKIOptions) (*x509.Certificate, crypto.Signer, error) {
	tmpl, err := caTemplate("cmx "+party+" Root CA", party, opts.Now, opts.RootValidity, 1)
	if err != nil {
		return nil, nil, err
	}
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	cert, err := createCert(tmpl, tmpl, key.Public(), key)
	return cert, key, err
}

func (p *PKI) newIntermediate(opts PKIOptions) (*x509.Certificate, crypto.Signer, error) {
	tmpl, err := caTemplate("cmx "+p.Party+" Intermediate CA", p.Party, opts.Now, opts.InterValidity, 0)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.NotAfter.After(p.Root.NotAfter) {
		tmpl.NotAfter = p.Root.NotAfter
	}
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	cert, err := createCert(tmpl, p.Root, key.Public(), p.RootKey)
	return cert, key, err
}

func caTemplate(cn, party string, now time.Time, validity time.Duration, pathLen int) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"cmx " + party}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            pathLen,
		MaxPathLenZero:        pathLen == 0,
	}, nil
}

func createCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("certs: create certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: parse created certificate: %w", err)
	}
	return cert, nil
}

// randomSerial returns a positive random 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("certs: serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
