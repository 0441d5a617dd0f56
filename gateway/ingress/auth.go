package ingress

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// principal is a configured agency with what authentication needs precomputed.
type principal struct {
	Agency
	tokenSum [sha256.Size]byte // SHA-256 of Token; compared instead of Token so its length does not leak
	send     map[string]bool
}

// authenticator identifies the agency behind a request.
type authenticator struct {
	agencies []*principal
	byURI    map[string]*principal
}

func newAuthenticator(agencies []Agency) *authenticator {
	a := &authenticator{byURI: map[string]*principal{}}
	for _, ag := range agencies {
		p := &principal{Agency: ag, send: map[string]bool{}}
		if ag.Token != "" {
			p.tokenSum = sha256.Sum256([]byte(ag.Token))
		}
		for _, t := range ag.Send {
			p.send[t] = true
		}
		if ag.CertURI != "" {
			a.byURI[ag.CertURI] = p
		}
		a.agencies = append(a.agencies, p)
	}
	return a
}

// authenticate returns the agency proven by r, or nil. A bearer token, if
// present, must be valid; a verified client certificate, if present and
// naming an agency, must name the same agency as the token. Anything
// ambiguous fails closed.
func (a *authenticator) authenticate(r *http.Request) *principal {
	byToken, tokenSent := a.byToken(r)
	if tokenSent && byToken == nil {
		return nil
	}
	byCert, certOK := a.byCert(r)
	if !certOK {
		return nil
	}
	switch {
	case byToken != nil && byCert != nil && byToken != byCert:
		return nil
	case byToken != nil:
		return byToken
	}
	return byCert
}

// byToken checks the Authorization header. It compares the digest of the
// presented token with every agency's, without stopping at a match.
func (a *authenticator) byToken(r *http.Request) (p *principal, sent bool) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return nil, false
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if len(vals) != 1 || !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return nil, true
	}
	sum := sha256.Sum256([]byte(token))
	for _, ag := range a.agencies {
		if ag.Token != "" && subtle.ConstantTimeCompare(sum[:], ag.tokenSum[:]) == 1 {
			p = ag
		}
	}
	return p, true
}

// byCert finds the agency whose CertURI is a SAN URI of the verified client
// certificate. ok is false when the certificate names more than one agency.
// An unverified certificate (no VerifiedChains) proves nothing.
func (a *authenticator) byCert(r *http.Request) (p *principal, ok bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil, true
	}
	leaf := r.TLS.VerifiedChains[0][0]
	for _, u := range leaf.URIs {
		if ag := a.byURI[u.String()]; ag != nil {
			if p != nil && p != ag {
				return nil, false
			}
			p = ag
		}
	}
	return p, true
}

type agencyKey struct{}

// AgencyFrom returns the authenticated agency of a request's context, for a
// Backend that needs more than its ID (e.g. Admin for message visibility).
func AgencyFrom(ctx context.Context) (Agency, bool) {
	p, ok := ctx.Value(agencyKey{}).(*principal)
	if !ok {
		return Agency{}, false
	}
	a := p.Agency
	a.Token = "" // the secret stays here
	return a, true
}

func withAgency(ctx context.Context, p *principal) context.Context {
	return context.WithValue(ctx, agencyKey{}, p)
}

func agencyOf(ctx context.Context) *principal {
	p, _ := ctx.Value(agencyKey{}).(*principal)
	return p
}
