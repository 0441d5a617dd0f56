package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cmx-exchange/cmx/certs"
)

// keys is the cryptographic material of a node, loaded and checked once.
type keys struct {
	signing        *certs.Identity
	decryption     *certs.KeySet
	peerTrust      *certs.Bundle
	peerEncryption *x509.Certificate
	httpTLS        *tls.Config // nil: plain HTTP
	leafTLS        *tls.Config // nil: no leafnode
}

func readPair(cfg *Config, f KeyFiles) ([]byte, []byte, error) {
	c, err := os.ReadFile(cfg.Path(f.Cert))
	if err != nil {
		return nil, nil, err
	}
	k, err := os.ReadFile(cfg.Path(f.Key))
	if err != nil {
		return nil, nil, err
	}
	return c, k, nil
}

// loadKeys reads every file the config names and checks it against the
// profile: our own certificates must chain to our own roots' profile, the
// peer's encryption certificate to the peer's pinned roots.
func loadKeys(cfg *Config, now time.Time) (*keys, error) {
	var k keys
	var errs []error
	if c, kb, err := readPair(cfg, cfg.Signing); err != nil {
		errs = append(errs, fmt.Errorf("signing: %w", err))
	} else if k.signing, err = certs.ParseIdentity(c, kb); err != nil {
		errs = append(errs, fmt.Errorf("signing: %w", err))
	} else if k.signing.Role != certs.RoleSigning || k.signing.Party != cfg.Party {
		errs = append(errs, fmt.Errorf("signing: certificate is a %s certificate of %q, want a signing certificate of %q", k.signing.Role, k.signing.Party, cfg.Party))
	}
	var dks []*certs.DecryptionKey
	for i, f := range cfg.Encryption {
		c, kb, err := readPair(cfg, f)
		if err != nil {
			errs = append(errs, fmt.Errorf("encryption[%d]: %w", i, err))
			continue
		}
		dk, err := certs.ParseDecryptionKey(c, kb)
		if err != nil {
			errs = append(errs, fmt.Errorf("encryption[%d]: %w", i, err))
			continue
		}
		dk.RetiredAt = f.RetiredAt
		dks = append(dks, dk)
	}
	if len(dks) > 0 {
		var err error
		if k.decryption, err = certs.NewKeySet(cfg.budget(), dks...); err != nil {
			errs = append(errs, fmt.Errorf("encryption: %w", err))
		}
	}
	errs = append(errs, k.loadPeer(cfg, now)...)
	errs = append(errs, k.loadTLS(cfg)...)
	return &k, errors.Join(errs...)
}

func (k *keys) loadPeer(cfg *Config, now time.Time) []error {
	var errs []error
	b, err := os.ReadFile(cfg.Path(cfg.Peer.Trust))
	if err != nil {
		return []error{fmt.Errorf("peer.trust: %w", err)}
	}
	if k.peerTrust, err = certs.ParseBundle(cfg.Peer.Party, b); err != nil {
		return []error{fmt.Errorf("peer.trust: %w", err)}
	}
	pem, err := os.ReadFile(cfg.Path(cfg.Peer.Encryption))
	if err != nil {
		return append(errs, fmt.Errorf("peer.encryption: %w", err))
	}
	chain, err := certs.ParseCertificates(pem)
	if err != nil {
		return append(errs, fmt.Errorf("peer.encryption: %w", err))
	}
	if err := k.peerTrust.Verify(chain, certs.VerifyOptions{Role: certs.RoleEncryption, Now: now}); err != nil {
		return append(errs, fmt.Errorf("peer.encryption: %w", err))
	}
	k.peerEncryption = chain[0]
	return errs
}

func (k *keys) loadTLS(cfg *Config) []error {
	var errs []error
	if cfg.TLS.Cert != "" {
		c, kb, err := readPair(cfg, KeyFiles{Cert: cfg.TLS.Cert, Key: cfg.TLS.Key})
		if err == nil {
			var pair tls.Certificate
			if pair, err = tls.X509KeyPair(c, kb); err == nil {
				k.httpTLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
			}
		}
		if err == nil && cfg.TLS.ClientCA != "" {
			err = k.loadClientCA(cfg)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("tls: %w", err))
		}
	}
	e := cfg.NATS.Embedded
	if cfg.NATS.URL == "" && (e.LeafListen != "" || e.LeafRemote != "") {
		c, kb, err := readPair(cfg, e.LeafTLS)
		if err != nil {
			return append(errs, fmt.Errorf("nats.embedded.leaf_tls: %w", err))
		}
		id, err := certs.ParseIdentity(c, kb)
		if err != nil {
			return append(errs, fmt.Errorf("nats.embedded.leaf_tls: %w", err))
		}
		k.leafTLS = &tls.Config{Certificates: []tls.Certificate{id.TLSCertificate()}, MinVersion: tls.VersionTLS13}
		if k.peerTrust != nil {
			k.leafTLS.RootCAs = k.peerTrust.Pool()
			k.leafTLS.ClientCAs = k.peerTrust.Pool()
			k.leafTLS.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return errs
}

func (k *keys) loadClientCA(cfg *Config) error {
	b, err := os.ReadFile(cfg.Path(cfg.TLS.ClientCA))
	if err != nil {
		return err
	}
	roots, err := certs.ParseCertificates(b)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	k.httpTLS.ClientCAs = pool
	k.httpTLS.ClientAuth = tls.VerifyClientCertIfGiven
	return nil
}

func (c *Config) budget() time.Duration {
	if c.OutageBudget == 0 {
		return 7 * 24 * time.Hour
	}
	return c.OutageBudget
}

// leafTLSFor returns the leafnode TLS config that also checks the peer's
// certificate against the cmx profile: the right role (a client certificate
// when we accept, a server certificate when we solicit) and the peer's party
// URI — not just "issued by the peer's root".
func (k *keys) leafTLSFor(peerRole certs.Role, now func() time.Time) *tls.Config {
	c := k.leafTLS.Clone()
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		raw := make([][]byte, len(cs.PeerCertificates))
		for i, pc := range cs.PeerCertificates {
			raw[i] = pc.Raw
		}
		chain, err := k.peerTrust.VerifyRaw(raw, certs.VerifyOptions{Role: peerRole, Now: now()})
		if err != nil {
			return err
		}
		if _, agency, err := certs.PartyOf(chain[0]); err != nil || agency != "" {
			return fmt.Errorf("gateway: leafnode peer must present its gateway certificate, not an agency's")
		}
		return nil
	}
	return c
}
