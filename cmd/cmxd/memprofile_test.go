package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMemProfile: --memprofile leaves a heap profile (gzipped, as pprof
// writes it) and the figures at the peaks and at shutdown.
func TestMemProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "heap.pprof")
	stop, err := startMemProfile(path, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ballast := make([]byte, 16<<20)
	for i := range ballast {
		ballast[i] = 1
	}
	runtime.GC()
	waitFor(t, "a profile", func() bool {
		fi, err := os.Stat(path)
		return err == nil && fi.Size() > 0
	})
	runtime.KeepAlive(ballast)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	prof, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(prof, []byte{0x1f, 0x8b}) {
		t.Errorf("%s is not a gzipped profile: % x", path, prof[:min(len(prof), 8)])
	}
	txt, err := os.ReadFile(path + ".txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"peak RSS: ", "peak live heap (profile): ", "at shutdown: ", "/gc/heap/live:bytes", "/memory/classes/total:bytes"} {
		if !strings.Contains(string(txt), want) {
			t.Errorf("%s.txt lacks %q:\n%s", path, want, txt)
		}
	}
}

func TestMemProfileBadPath(t *testing.T) {
	if _, err := startMemProfile(filepath.Join(t.TempDir(), "missing", "heap.pprof"), time.Second); err == nil {
		t.Fatal("startMemProfile into a missing directory: no error")
	}
}

// waitFor polls cond every 10 ms for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
