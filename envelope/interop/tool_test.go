package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The exactly pinned panva/jose version; package-lock.json must agree.
const joseVersion = "6.2.18"

// required reports whether a missing interop tool is a failure rather than
// a skip (CI sets CMX_REQUIRE_INTEROP=1).
func required() bool {
	v := os.Getenv("CMX_REQUIRE_INTEROP")
	return v != "" && v != "0"
}

// needTool skips or fails the test when name is not on PATH.
func needTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if required() {
		t.Fatalf("%s not on PATH and CMX_REQUIRE_INTEROP is set: %v", name, err)
	}
	t.Skipf("%s not on PATH (set CMX_REQUIRE_INTEROP=1 to make this a failure)", name)
	return ""
}

var (
	setupOnce sync.Once
	setupDir  string // directory holding jose.mjs and node_modules/jose
	setupErr  error
	tempDir   string // removed by TestMain
)

func TestMain(m *testing.M) {
	code := m.Run()
	if tempDir != "" {
		os.RemoveAll(tempDir)
	}
	os.Exit(code)
}

// installed reports whether dir/node_modules holds the pinned jose.
func installed(dir string) bool {
	raw, err := os.ReadFile(filepath.Join(dir, "node_modules", "jose", "package.json"))
	if err != nil {
		return false
	}
	var pkg struct{ Version string }
	return json.Unmarshal(raw, &pkg) == nil && pkg.Version == joseVersion
}

// toolDir returns a directory where jose.mjs runs with the pinned jose:
// this one if node_modules is installed, else a temporary copy after
// "npm ci" (which installs exactly package-lock.json).
func toolDir(t *testing.T) string {
	t.Helper()
	needTool(t, "node")
	setupOnce.Do(func() { setupDir, setupErr = prepare() })
	if setupErr != nil {
		t.Fatalf("interop setup: %v", setupErr)
	}
	return setupDir
}

func prepare() (string, error) {
	src, err := os.Getwd()
	if err != nil {
		return "", err
	}
	if installed(src) {
		return src, nil
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return "", fmt.Errorf("node_modules missing and npm not on PATH: %w", err)
	}
	tempDir, err = os.MkdirTemp("", "cmx-interop-")
	if err != nil {
		return "", err
	}
	for _, name := range []string{"package.json", "package-lock.json", "jose.mjs"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(tempDir, name), b, 0o644); err != nil {
			return "", err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts")
	cmd.Dir = tempDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci: %w\n%s", err, out)
	}
	if !installed(tempDir) {
		return "", fmt.Errorf("npm ci did not install jose %s", joseVersion)
	}
	return tempDir, nil
}

// errJose is a failure reported by jose.mjs (as opposed to a failure to run it).
var errJose = errors.New("jose.mjs")

// runJose sends req to jose.mjs and decodes its answer into resp. A
// failure reported by the tool wraps errJose and carries its message.
func runJose(t *testing.T, req map[string]any, resp any) error {
	t.Helper()
	dir := toolDir(t)
	in, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "jose.mjs")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var failure struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	if json.Unmarshal(stdout.Bytes(), &failure) == nil && failure.Error != "" {
		return fmt.Errorf("%w: %s (%s)", errJose, failure.Error, failure.Code)
	}
	if runErr != nil {
		t.Fatalf("node jose.mjs %s: %v\nstdout: %s\nstderr: %s", req["op"], runErr, stdout.Bytes(), stderr.Bytes())
	}
	if err := json.Unmarshal(stdout.Bytes(), resp); err != nil {
		t.Fatalf("node jose.mjs %s: decode answer: %v\n%s", req["op"], err, stdout.Bytes())
	}
	return nil
}

// mustJose is runJose for requests that must succeed.
func mustJose(t *testing.T, req map[string]any, resp any) {
	t.Helper()
	if err := runJose(t, req, resp); err != nil {
		t.Fatalf("%s: %v", req["op"], err)
	}
}
