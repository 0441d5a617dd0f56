package envelope

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// goTool runs the go command of the toolchain running the tests.
func goTool(t *testing.T, args ...string) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list dependencies: %v", err)
	}
	out, err := exec.Command(gobin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestImportBoundaries keeps the pure packages pure (DESIGN.md §10): neither
// envelope nor certs, nor their tests, may depend on the gateway, NATS,
// OpenTelemetry or retryablehttp. It covers certs too, so that one test
// guards both leaves.
func TestImportBoundaries(t *testing.T) {
	forbidden := []string{
		"github.com/cmx-exchange/cmx/gateway",
		"github.com/nats-io",
		"go.opentelemetry.io",
		"github.com/hashicorp",
	}
	for _, pkg := range []string{"github.com/cmx-exchange/cmx/envelope", "github.com/cmx-exchange/cmx/certs"} {
		deps := strings.Fields(goTool(t, "list", "-deps", "-test", pkg))
		if !contains(deps, "crypto/x509") {
			t.Fatalf("%s: dependency list looks wrong: %v", pkg, deps)
		}
		for _, d := range deps {
			for _, f := range forbidden {
				if d == f || strings.HasPrefix(d, f+"/") || strings.HasPrefix(d, f+".") {
					t.Errorf("%s depends on %s (forbidden prefix %s)", pkg, d, f)
				}
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestGoJoseVersion pins the minimum go-jose release: before v4.1.4 an
// empty encrypted_key panicked in key unwrap (catalogue J-16).
func TestGoJoseVersion(t *testing.T) {
	v := strings.TrimSpace(goTool(t, "list", "-m", "-f", "{{.Version}}", "github.com/go-jose/go-jose/v4"))
	var major, minor, patch int
	if _, err := fmt.Sscanf(v, "v%d.%d.%d", &major, &minor, &patch); err != nil {
		t.Fatalf("go-jose version %q: %v", v, err)
	}
	if major != 4 || minor < 1 || minor == 1 && patch < 4 {
		t.Fatalf("go-jose %s, need v4 >= v4.1.4", v)
	}
}
