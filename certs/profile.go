package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"fmt"
	"slices"
)

// checkRole applies the profile's leaf checks for role, in Verify's order:
// not a CA, KeyUsage, EKU, policy. It returns the name of the failed check.
func checkRole(leaf *x509.Certificate, role Role) (string, error) {
	if leaf.IsCA {
		return CheckCA, fmt.Errorf("%w: leaf is a CA certificate", ErrKeyUsage)
	}
	if err := checkKeyUsage(leaf.KeyUsage, role); err != nil {
		return CheckKU, err
	}
	if err := checkExtKeyUsage(leaf.ExtKeyUsage, role); err != nil {
		return CheckEKU, err
	}
	if err := checkPolicy(leaf.Policies, role); err != nil {
		return CheckPolicy, err
	}
	return "", nil
}

// TLS leaves may carry keyEncipherment beside digitalSignature (RSA-era
// profiles of other CAs); nothing else.
const tlsKeyUsages = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment

func checkKeyUsage(ku x509.KeyUsage, role Role) error {
	var ok bool
	switch role {
	case RoleSigning:
		ok = ku == x509.KeyUsageDigitalSignature
	case RoleEncryption:
		ok = ku == x509.KeyUsageKeyAgreement
	case RoleTLSServer, RoleTLSClient:
		ok = ku&x509.KeyUsageDigitalSignature != 0 && ku&^tlsKeyUsages == 0
	default:
		return fmt.Errorf("%w: unknown role %q", ErrInvalidOptions, role)
	}
	if !ok {
		return fmt.Errorf("%w: KeyUsage %#x not allowed for %s", ErrKeyUsage, int(ku), role)
	}
	return nil
}

func checkExtKeyUsage(eku []x509.ExtKeyUsage, role Role) error {
	if slices.Contains(eku, x509.ExtKeyUsageAny) {
		return fmt.Errorf("%w: anyExtendedKeyUsage not allowed", ErrKeyUsage)
	}
	server := slices.Contains(eku, x509.ExtKeyUsageServerAuth)
	client := slices.Contains(eku, x509.ExtKeyUsageClientAuth)
	switch role {
	case RoleSigning, RoleEncryption:
		if server || client {
			return fmt.Errorf("%w: TLS EKU on a %s certificate", ErrKeyUsage, role)
		}
	case RoleTLSServer:
		if !server {
			return fmt.Errorf("%w: EKU serverAuth missing", ErrKeyUsage)
		}
	case RoleTLSClient:
		if !client {
			return fmt.Errorf("%w: EKU clientAuth missing", ErrKeyUsage)
		}
	}
	return nil
}

func checkPolicy(policies []x509.OID, role Role) error {
	has := func(oid x509.OID) bool { return slices.ContainsFunc(policies, oid.Equal) }
	switch role {
	case RoleSigning:
		if !has(OIDSigningPolicy) {
			return fmt.Errorf("%w: signing policy missing", ErrPolicy)
		}
	case RoleEncryption:
		if !has(OIDEncryptionPolicy) {
			return fmt.Errorf("%w: encryption policy missing", ErrPolicy)
		}
	default:
		if has(OIDSigningPolicy) || has(OIDEncryptionPolicy) {
			return fmt.Errorf("%w: gateway key policy on a %s certificate", ErrPolicy, role)
		}
	}
	return nil
}

// checkParty requires the leaf's SAN URI to name party: the gateway URI, or
// for RoleTLSClient also an agency of party.
func checkParty(leaf *x509.Certificate, role Role, party string) error {
	p, agency, err := PartyOf(leaf)
	if err != nil {
		return err
	}
	if p != party {
		return fmt.Errorf("%w: certificate names %s, want %s", ErrParty, p, party)
	}
	return checkPartyForRole(role, agency)
}

// checkLeafKey allows ECDSA P-256 and P-384 leaf keys only (catalogue C-12).
func checkLeafKey(leaf *x509.Certificate) error {
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("%w: leaf key is %T, want ECDSA", ErrWeakKey, leaf.PublicKey)
	}
	if pub.Curve != elliptic.P256() && pub.Curve != elliptic.P384() {
		return fmt.Errorf("%w: curve %s not allowed", ErrWeakKey, pub.Curve.Params().Name)
	}
	return nil
}
