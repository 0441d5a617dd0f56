package interop

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/certs/certstest"
	"github.com/cmx-exchange/cmx/envelope"
)

// now is the clock of every test: an hour after the fixtures were issued.
var now = certstest.Now.Add(time.Hour)

// pemKey is key as PKCS#8 PEM, the form jose.importPKCS8 takes.
func pemKey(t *testing.T, key crypto.Signer) string {
	t.Helper()
	b, err := certs.EncodePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func pemCert(c *x509.Certificate) string { return string(certs.EncodeCertificates(c)) }

// pemChain is an identity's chain (leaf first) as a list of PEM certificates.
func pemChain(id *certs.Identity) []string {
	out := make([]string, len(id.Chain))
	for i, c := range id.Chain {
		out[i] = pemCert(c)
	}
	return out
}

// x5c is the x5c header value a chain must produce: standard base64 DER.
func x5c(id *certs.Identity) []string {
	out := make([]string, len(id.Chain))
	for i, c := range id.Chain {
		out[i] = base64.StdEncoding.EncodeToString(c.Raw)
	}
	return out
}

// messageClaims are valid US→JP claims of type typ at now.
func messageClaims(typ envelope.Type) *envelope.Claims {
	return &envelope.Claims{
		Issuer:        "US",
		Audience:      "JP",
		ID:            envelope.NewID(),
		IssuedAt:      now.Unix(),
		Expiry:        now.Add(7 * 24 * time.Hour).Unix(),
		Type:          typ,
		Schema:        typ.Schema(),
		Sender:        "US:DOL-ILAB",
		Recipient:     "JP:MHLW",
		CorrelationID: "case-2026-0117",
		Marking:       "TLP:AMBER",
		Body:          envelope.Example(typ),
	}
}

// openerJP opens envelopes from the US at the JP gateway.
func openerJP(t *testing.T) *envelope.Opener {
	t.Helper()
	jp := certstest.NewPKI(t, "JP")
	dk := &certs.DecryptionKey{Cert: jp.Encryption.Cert, Key: jp.Encryption.Key, KID: jp.Encryption.KID}
	ks, err := certs.NewKeySet(0, dk)
	if err != nil {
		t.Fatal(err)
	}
	return &envelope.Opener{
		Self:         "JP",
		Peer:         certstest.Bundle(t, "US"),
		Keys:         ks,
		ValidateBody: envelope.ValidateBody,
	}
}

// sameClaims compares claims field by field, and bodies as JSON values (an
// independent encoder may order or space them differently).
func sameClaims(t *testing.T, got, want *envelope.Claims) {
	t.Helper()
	g, w := *got, *want
	g.Body, w.Body = nil, nil
	if !reflect.DeepEqual(g, w) {
		t.Errorf("claims differ:\n got %+v\nwant %+v", g, w)
	}
	sameJSON(t, "body", got.Body, want.Body)
}

func sameJSON(t *testing.T, what string, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s differs:\n got %s\nwant %s", what, got, want)
	}
}

// header is a decoded protected header, member by member.
type header map[string]json.RawMessage

// checkHeader requires h to hold exactly the members of want, with the
// values of want (compared as JSON); a nil value in want only requires the
// member to be present.
func checkHeader(t *testing.T, what string, h header, want map[string]any) {
	t.Helper()
	var names, wantNames []string
	for k := range h {
		names = append(names, k)
	}
	for k := range want {
		wantNames = append(wantNames, k)
	}
	slices.Sort(names)
	slices.Sort(wantNames)
	if !slices.Equal(names, wantNames) {
		t.Errorf("%s header members = %v, want exactly %v", what, names, wantNames)
	}
	for k, v := range want {
		if v == nil || h[k] == nil {
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		sameJSON(t, what+" header "+k, h[k], b)
	}
}

// checkEPK requires an ephemeral P-256 public key and nothing else (no d).
func checkEPK(t *testing.T, raw json.RawMessage) {
	t.Helper()
	var epk header
	if err := json.Unmarshal(raw, &epk); err != nil {
		t.Fatalf("epk: %v", err)
	}
	checkHeader(t, "epk", epk, map[string]any{"kty": "EC", "crv": "P-256", "x": nil, "y": nil})
}
