package main

// cmxd configured only through the standard OTEL_* environment variables
// exports its spans over OTLP/HTTP to a real receiver, and stops cleanly on
// SIGTERM.

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/pair"
)

// receiver is an OTLP/HTTP trace receiver (POST /v1/traces, protobuf).
type receiver struct {
	mu    sync.Mutex
	spans []*tracepb.ResourceSpans
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "OTLP/HTTP protobuf traces only", http.StatusNotFound)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(io.LimitReader(body, 16<<20))
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(b, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	rc.spans = append(rc.spans, req.GetResourceSpans()...)
	rc.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// exported returns the names of the spans received from service, by trace
// id (hex), and the resource attributes seen for it.
func (rc *receiver) exported(service string) (map[string][]string, map[string]string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	names, res := map[string][]string{}, map[string]string{}
	for _, rs := range rc.spans {
		attrs := map[string]string{}
		for _, kv := range rs.GetResource().GetAttributes() {
			attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
		}
		if attrs["service.name"] != service {
			continue
		}
		res = attrs
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				id := hex.EncodeToString(s.GetTraceId())
				names[id] = append(names[id], s.GetName())
			}
		}
	}
	return names, res
}

// buildCmxd builds this command into dir.
func buildCmxd(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "cmxd")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// otelEnv is the environment without any inherited OTEL_* variable, plus env.
func otelEnv(env ...string) []string {
	out := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "OTEL_") })
	return append(out, env...)
}

// poll calls cond every 50 ms until it holds or timeout passes.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
	return true
}

func TestCmxdExportsSpansOverOTLPFromEnvironment(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmxd")
	}
	rc := &receiver{}
	otlp := httptest.NewServer(rc) // 127.0.0.1
	defer otlp.Close()

	dir := t.TempDir()
	p, err := pair.Prepare(pair.Options{Dir: dir}) // configs and PKI; JP is never started
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	bin := buildCmxd(t, dir)

	var logs bytes.Buffer
	cmd := exec.Command(bin, "--config", p.US.ConfigPath)
	cmd.Env = otelEnv("OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_EXPORTER_OTLP_ENDPOINT="+otlp.URL, "OTEL_BSP_SCHEDULE_DELAY=100")
	cmd.Stdout, cmd.Stderr = &logs, &logs // read only after Wait
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("cmxd output:\n%s", logs.String())
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := p.US.Client(pair.AgencyFor("US", envelope.LaborEnforcementNotice))
	if !poll(20*time.Second, func() bool { return c.Ready(ctx) == nil }) {
		t.Fatal("cmxd did not become ready")
	}
	// The peer is not running: ingress still seals and stores (202).
	resp, err := c.Submit(ctx, &api.SubmitRequest{Type: string(envelope.LaborEnforcementNotice), To: "JP",
		Body: envelope.Example(envelope.LaborEnforcementNotice)}, "")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := c.Message(ctx, resp.ID)
	if err != nil || msg.TraceID == "" {
		t.Fatalf("GET /v1/messages/%s: %+v, %v", resp.ID, msg, err)
	}

	want := []string{"POST /v1/messages", "seal", "send cmx.out.jp.msg.labor_enforcement_notice"}
	var names map[string][]string
	var res map[string]string
	ok := poll(10*time.Second, func() bool {
		names, res = rc.exported("cmxd-us")
		return !slices.ContainsFunc(want, func(n string) bool { return !slices.Contains(names[msg.TraceID], n) })
	})
	if !ok {
		t.Errorf("spans of trace %s received from cmxd-us: %v (all: %v), want %v", msg.TraceID, names[msg.TraceID], names, want)
	}
	if res["cmx.party"] != "US" {
		t.Errorf("resource %v, want cmx.party US", res)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("cmxd after SIGTERM: %v, want exit status 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("cmxd did not stop within 20s of SIGTERM")
	}
}
