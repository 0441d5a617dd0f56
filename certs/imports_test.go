package certs_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// certs is a pure leaf: it imports no I/O, logging, NATS, OTel or gateway
// package, directly or (for the third-party ones) indirectly.
func TestImportBoundaries(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list imports: %v", err)
	}
	list := func(args ...string) []string {
		out, err := exec.Command(goTool, append([]string{"list"}, args...)...).Output()
		if err != nil {
			t.Fatalf("go list %v: %v", args, err)
		}
		return strings.Fields(strings.Trim(strings.TrimSpace(string(out)), "[]"))
	}
	direct := list("-f", "{{.Imports}}", ".")
	for _, forbidden := range []string{"os", "os/exec", "io/fs", "log", "log/slog", "net/http", "path/filepath"} {
		if slices.Contains(direct, forbidden) {
			t.Errorf("certs imports %s", forbidden)
		}
	}
	for _, dep := range list("-deps", ".") {
		for _, prefix := range []string{"github.com/nats-io/", "go.opentelemetry.io/", "github.com/hashicorp/", "github.com/cmx-exchange/cmx/gateway", "github.com/cmx-exchange/cmx/envelope", "net/http"} {
			if strings.HasPrefix(dep, prefix) {
				t.Errorf("certs depends on %s", dep)
			}
		}
	}
}
