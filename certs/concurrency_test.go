package certs_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/certs/certstest"
)

// Bundle is used by every inbound worker at once; run with -race.
func TestVerifyConcurrent(t *testing.T) {
	us := certstest.NewPKI(t, "US")
	jp := certstest.NewPKI(t, "JP")
	b := certstest.Bundle(t, "US")
	opts := certs.VerifyOptions{Role: certs.RoleSigning, Now: certstest.Now}
	good := x5c(us.Signing.Chain)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				if (w+i)%2 == 0 {
					if _, err := b.VerifyX5C(good, opts); err != nil {
						errs <- err
						return
					}
				} else if err := b.Verify(jp.Signing.Chain, opts); !errors.Is(err, certs.ErrUntrusted) {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
