package certs

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
)

// VerifyOptions says what kind of leaf a chain must carry and when.
type VerifyOptions struct {
	Role     Role          // required: which kind of leaf is expected
	Now      time.Time     // required (fixed clock in tests)
	SignedAt time.Time     // the token's iat; zero = only Now is checked
	Leeway   time.Duration // clock leeway for validity checks; 0 = 2 minutes; negative = none; capped at MaxClockSkew
}

// DefaultLeeway is the validity leeway when VerifyOptions.Leeway is zero.
const DefaultLeeway = 2 * time.Minute

func (o VerifyOptions) leeway() time.Duration {
	switch {
	case o.Leeway == 0:
		return DefaultLeeway
	case o.Leeway < 0:
		return 0
	case o.Leeway > MaxClockSkew:
		return MaxClockSkew
	}
	return o.Leeway
}

func (o VerifyOptions) check() *VerifyError {
	switch o.Role {
	case RoleSigning, RoleEncryption, RoleTLSServer, RoleTLSClient:
	default:
		return verifyErr(CheckOptions, "", fmt.Errorf("%w: unknown role %q", ErrInvalidOptions, o.Role))
	}
	if o.Now.IsZero() {
		return verifyErr(CheckOptions, "", fmt.Errorf("%w: Now is zero", ErrInvalidOptions))
	}
	return nil
}

// Verify checks chain (leaf first, then intermediates, as in x5c) against
// b's roots for opts.Role. See the package documentation for the order of
// checks. It returns nil or a *VerifyError.
func (b *Bundle) Verify(chain []*x509.Certificate, opts VerifyOptions) error {
	if err := opts.check(); err != nil {
		return err
	}
	if err := checkCount(len(chain)); err != nil {
		return err
	}
	for i, c := range chain {
		if c == nil || len(c.Raw) == 0 {
			return verifyErr(CheckDecode, "", fmt.Errorf("%w: certificate %d is empty", ErrMalformed, i))
		}
		if len(c.Raw) > MaxCertBytes {
			return verifyErr(CheckSize, c.Subject.String(), fmt.Errorf("%w: %d bytes", ErrCertTooLarge, len(c.Raw)))
		}
	}
	raw := make([][]byte, len(chain))
	for i, c := range chain {
		raw[i] = c.Raw
	}
	return b.verifyParsed(chain, chainKey(raw), opts)
}

// VerifyX5C decodes an x5c header value (standard base64 DER, leaf first)
// and verifies it like Verify. Count and size are capped before anything is
// decoded or parsed. It returns the parsed chain; the certificates may be
// shared with other callers and must not be modified.
func (b *Bundle) VerifyX5C(x5c []string, opts VerifyOptions) ([]*x509.Certificate, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if err := checkCount(len(x5c)); err != nil {
		return nil, err
	}
	maxLen := base64.StdEncoding.EncodedLen(MaxCertBytes)
	for i, s := range x5c {
		if len(s) > maxLen {
			return nil, verifyErr(CheckSize, "", fmt.Errorf("%w: x5c[%d] is %d base64 characters", ErrCertTooLarge, i, len(s)))
		}
	}
	raw := make([][]byte, len(x5c))
	for i, s := range x5c {
		der, err := decodeX5C(s)
		if err != nil {
			return nil, verifyErr(CheckDecode, "", fmt.Errorf("%w: x5c[%d]: %v", ErrMalformed, i, err))
		}
		raw[i] = der
	}
	return b.VerifyRaw(raw, opts)
}

// VerifyRaw verifies a chain of DER certificates (leaf first), as received
// from x5c or a TLS handshake. It caps count and size before parsing and
// returns the parsed chain (shared, do not modify).
func (b *Bundle) VerifyRaw(raw [][]byte, opts VerifyOptions) ([]*x509.Certificate, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if err := checkCount(len(raw)); err != nil {
		return nil, err
	}
	for i, der := range raw {
		if len(der) > MaxCertBytes {
			return nil, verifyErr(CheckSize, "", fmt.Errorf("%w: certificate %d is %d bytes", ErrCertTooLarge, i, len(der)))
		}
	}
	key := chainKey(raw)
	var chain []*x509.Certificate
	if e := b.cached(key); e != nil {
		chain = e.certs
	} else {
		var err error
		if chain, err = parseChain(raw); err != nil {
			return nil, err
		}
	}
	if err := b.verifyParsed(chain, key, opts); err != nil {
		return nil, err
	}
	return append([]*x509.Certificate(nil), chain...), nil
}

func checkCount(n int) *VerifyError {
	switch {
	case n == 0:
		return verifyErr(CheckChain, "", fmt.Errorf("%w: empty chain", ErrMalformed))
	case n > MaxChainLen:
		return verifyErr(CheckChain, "", fmt.Errorf("%w: %d certificates, at most %d", ErrChainTooLong, n, MaxChainLen))
	}
	return nil
}

// decodeX5C decodes one x5c element: padded standard base64 (RFC 7515
// §4.1.6), without the line breaks Go's decoder would silently skip.
func decodeX5C(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("empty")
	}
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("line break in base64")
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}

func parseChain(raw [][]byte) ([]*x509.Certificate, error) {
	chain := make([]*x509.Certificate, len(raw))
	for i, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, verifyErr(CheckDecode, "", fmt.Errorf("%w: certificate %d: %v", ErrMalformed, i, err))
		}
		for _, prev := range chain[:i] {
			if prev.Equal(c) {
				return nil, verifyErr(CheckDecode, c.Subject.String(), fmt.Errorf("%w: certificate %d repeats an earlier one", ErrMalformed, i))
			}
		}
		chain[i] = c
	}
	return chain, nil
}

// chainKey is SHA-256 over the length-prefixed DER of every certificate.
func chainKey(raw [][]byte) [32]byte {
	h := sha256.New()
	var n [4]byte
	for _, der := range raw {
		binary.BigEndian.PutUint32(n[:], uint32(len(der)))
		h.Write(n[:])
		h.Write(der)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// verifyParsed runs the checks from the leaf key on; count and size have
// been checked by the caller.
func (b *Bundle) verifyParsed(chain []*x509.Certificate, key [32]byte, opts VerifyOptions) error {
	leaf := chain[0]
	if err := checkLeafKey(leaf); err != nil {
		return verifyErr(CheckKey, leaf.Subject.String(), err)
	}
	paths, verr := b.buildPaths(chain, key, opts.Now)
	if verr != nil {
		return verr
	}
	if check, err := checkRole(leaf, opts.Role); err != nil {
		return verifyErr(check, leaf.Subject.String(), err)
	}
	if err := checkParty(leaf, opts.Role, b.party); err != nil {
		return verifyErr(CheckParty, leaf.Subject.String(), err)
	}
	return checkValidity(paths, opts)
}

// buildPaths returns the verified paths of chain to b's roots, from the cache or
// by building them with crypto/x509.
func (b *Bundle) buildPaths(chain []*x509.Certificate, key [32]byte, now time.Time) ([][]*x509.Certificate, *VerifyError) {
	if b == nil {
		return nil, verifyErr(CheckPath, chain[0].Subject.String(), fmt.Errorf("%w: nil bundle", ErrUntrusted))
	}
	if e := b.cached(key); e != nil {
		return e.chains, nil
	}
	if b.pool == nil {
		return nil, verifyErr(CheckPath, chain[0].Subject.String(), fmt.Errorf("%w: empty bundle", ErrUntrusted))
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	at := pathTime(now, chain)
	chains, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         b.pool,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, // EKU is checked per role by checkRole
	})
	if err != nil {
		return nil, pathError(err, chain[0], at)
	}
	b.store(key, &pathEntry{certs: chain, chains: chains})
	return chains, nil
}

// pathTime is the time the path is built at: now, clamped into the window
// where every presented certificate is valid, so that path building reports
// trust only and validity is judged by checkValidity with leeway. If there is
// no such window, now is used and the x509 error is mapped by pathError.
func pathTime(now time.Time, chain []*x509.Certificate) time.Time {
	lo, hi := chain[0].NotBefore, chain[0].NotAfter
	for _, c := range chain[1:] {
		if c.NotBefore.After(lo) {
			lo = c.NotBefore
		}
		if c.NotAfter.Before(hi) {
			hi = c.NotAfter
		}
	}
	switch {
	case lo.After(hi):
		return now
	case now.Before(lo):
		return lo
	case now.After(hi):
		return hi
	}
	return now
}

func pathError(err error, leaf *x509.Certificate, at time.Time) *VerifyError {
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) && inv.Reason == x509.Expired && inv.Cert != nil {
		sentinel := ErrExpired
		if at.Before(inv.Cert.NotBefore) {
			sentinel = ErrNotYetValid
		}
		return verifyErr(CheckValidity, inv.Cert.Subject.String(), fmt.Errorf("%w: %v", sentinel, err))
	}
	return verifyErr(CheckPath, leaf.Subject.String(), fmt.Errorf("%w: %v", ErrUntrusted, err))
}

// checkValidity requires every certificate of some verified path to be
// valid at SignedAt (if set) and at Now, with leeway. If no path passes, the
// first path's failure is reported.
func checkValidity(paths [][]*x509.Certificate, opts VerifyOptions) error {
	var first error
	for _, path := range paths {
		err := validAt(path, opts.SignedAt, opts.leeway())
		if err == nil {
			err = validAt(path, opts.Now, opts.leeway())
		}
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

func validAt(path []*x509.Certificate, t time.Time, leeway time.Duration) error {
	if t.IsZero() {
		return nil
	}
	for _, c := range path {
		switch {
		case c.NotAfter.Before(t.Add(-leeway)):
			return verifyErr(CheckValidity, c.Subject.String(),
				fmt.Errorf("%w: not after %s, checked at %s", ErrExpired, c.NotAfter.UTC().Format(time.RFC3339), t.UTC().Format(time.RFC3339)))
		case c.NotBefore.After(t.Add(leeway)):
			return verifyErr(CheckValidity, c.Subject.String(),
				fmt.Errorf("%w: not before %s, checked at %s", ErrNotYetValid, c.NotBefore.UTC().Format(time.RFC3339), t.UTC().Format(time.RFC3339)))
		}
	}
	return nil
}
