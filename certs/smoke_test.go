package certs_test

import (
	"testing"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/certs/certstest"
)

func TestSmoke(t *testing.T) {
	p := certstest.NewPKI(t, "US")
	b := certstest.Bundle(t, "US")
	for _, id := range []*certs.Identity{p.Signing, p.Encryption, p.TLSServer, p.TLSClient} {
		if _, err := b.VerifyX5C(certstest.X5C(id), certs.VerifyOptions{Role: id.Role, Now: certstest.Now}); err != nil {
			t.Errorf("%s: %v", id.Role, err)
		}
	}
	files, err := p.Files()
	if err != nil {
		t.Fatal(err)
	}
	q, err := certs.LoadPKI(files)
	if err != nil {
		t.Fatal(err)
	}
	if q.Signing.KID != p.Signing.KID {
		t.Fatal("kid")
	}
	a, err := p.IssueAgencyClient("DOL-ILAB", certs.PKIOptions{Now: certstest.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Verify(a.Chain, certs.VerifyOptions{Role: certs.RoleTLSClient, Now: certstest.Now}); err != nil {
		t.Fatal(err)
	}
	if err := b.Verify(p.TLSServer.Chain, certs.VerifyOptions{Role: certs.RoleSigning, Now: certstest.Now}); err == nil {
		t.Fatal("tls as signer accepted")
	} else {
		t.Log(err)
	}
}
