package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cmx-exchange/cmx/certs"
)

func TestPKIInitInspectAgency(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "us")
	var out, errOut bytes.Buffer
	if err := runPKI(ctx, []string{"init", "--party", "US", "--out", dir, "--hosts", "gw.us.example,10.0.0.1"}, &out, &errOut); err != nil {
		t.Fatalf("init: %v\n%s", err, errOut.String())
	}
	assertMode(t, dir, 0o700)
	for _, name := range []string{
		"root.pem", "root.key", "intermediate.pem", "intermediate.key", "signing.pem", "signing.key",
		"encryption.pem", "encryption.key", "tls-server.pem", "tls-server.key", "tls-client.pem",
		"tls-client.key", "bundle.pem", "ca-chain.pem",
	} {
		want := os.FileMode(0o644)
		if strings.HasSuffix(name, ".key") {
			want = 0o600
		}
		assertMode(t, filepath.Join(dir, name), want)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 14 {
		t.Errorf("init wrote %d files, want 14 (no temporary files left)", len(entries))
	}

	// A second init must refuse without --force and leave the files alone.
	before, _ := os.ReadFile(filepath.Join(dir, "signing.pem"))
	err = runPKI(ctx, []string{"init", "--party", "US", "--out", dir}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second init: err = %v, want refusal", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "signing.pem"))
	if !bytes.Equal(before, after) {
		t.Fatal("refused init changed signing.pem")
	}
	if err := runPKI(ctx, []string{"init", "--party", "US", "--out", dir, "--force", "--hosts", "gw.us.example,10.0.0.1"}, &out, &errOut); err != nil {
		t.Fatalf("init --force: %v", err)
	}
	assertMode(t, filepath.Join(dir, "root.key"), 0o600)

	out.Reset()
	if err := runPKI(ctx, []string{"inspect", filepath.Join(dir, "signing.pem"), filepath.Join(dir, "tls-server.pem")}, &out, &errOut); err != nil {
		t.Fatalf("inspect: %v", err)
	}
	for _, want := range []string{
		"role signing, party US", "cmx signing", "urn:cmx:party:US:gateway", "digitalSignature",
		"role tls-server, party US", "serverAuth", "gw.us.example", "10.0.0.1", "CA certificate (no leaf role)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out.String())
		}
	}

	agencyDir := filepath.Join(t.TempDir(), "agency")
	if err := runPKI(ctx, []string{"agency", "--ca", dir, "--agency", "DOL-ILAB", "--out", agencyDir}, &out, &errOut); err != nil {
		t.Fatalf("agency: %v", err)
	}
	assertMode(t, filepath.Join(agencyDir, "agency-DOL-ILAB.key"), 0o600)
	chainPEM, _ := os.ReadFile(filepath.Join(agencyDir, "agency-DOL-ILAB.pem"))
	keyPEM, _ := os.ReadFile(filepath.Join(agencyDir, "agency-DOL-ILAB.key"))
	id, err := certs.ParseIdentity(chainPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if id.Role != certs.RoleTLSClient || id.Party != "US" || id.Agency != "DOL-ILAB" {
		t.Errorf("agency identity = %s %s %s", id.Role, id.Party, id.Agency)
	}
}

func TestPKIUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "no subcommand", args: nil, want: "missing subcommand"},
		{name: "unknown subcommand", args: []string{"rotate"}, want: "unknown subcommand"},
		{name: "init without party", args: []string{"init", "--out", "x"}, want: "required"},
		{name: "init bad party", args: []string{"init", "--party", "usa", "--out", "x"}, want: "two upper-case letters"},
		{name: "inspect nothing", args: []string{"inspect"}, want: "no files"},
		{name: "inspect missing file", args: []string{"inspect", "does-not-exist.pem"}, want: "does-not-exist.pem"},
		{name: "agency bad name", args: []string{"agency", "--ca", "x", "--agency", "../x", "--out", "y"}, want: "pki agency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := runPKI(context.Background(), tt.args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %v, want %v", filepath.Base(path), got, want)
	}
}
