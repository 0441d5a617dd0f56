package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cmx-exchange/cmx/certs"
	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/pair"
)

// demoResult is what the demo learned about one message.
type demoResult struct {
	sent     *pair.Sent
	msg      *api.Message
	verdicts []string
	err      error
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cmx demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "working directory (default: a new temporary directory, removed afterwards unless --serve)")
	serve := fs.Bool("serve", false, "keep both gateways running after the exchange and print how to use them")
	verbose := fs.Bool("v", false, "show the gateways' logs")
	timeout := fs.Duration("timeout", time.Minute, "how long to wait for the delivered receipts")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "cmx-demo-")
		if err != nil {
			return err
		}
		*dir = d
		if !*serve {
			defer os.RemoveAll(d)
		}
	}
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	out := &demoOut{w: stdout, start: time.Now()}
	out.step("cmx demo: the US–Japan Critical Minerals Agreement exchange on this machine")
	p, err := pair.Start(ctx, pair.Options{Dir: *dir, Logger: logger})
	if err != nil {
		return err
	}
	defer p.Stop()
	out.step("PKI      root, intermediate, signing, encryption and TLS certificates for US and JP in %s", filepath.Join(*dir, "pki"))
	out.step("NATS     two embedded servers, JetStream on disk (sync always), domains us and jp")
	out.step("border   leafnode US → JP with mutual TLS, exchange account XCHG: up")
	out.step("gateways US %s   JP %s", p.US.URL, p.JP.URL)
	results, err := demoExchange(ctx, p, out, *timeout)
	if err != nil {
		return err
	}
	failed := demoSummary(stdout, results)
	if *serve {
		return demoServe(ctx, p, *dir, stdout)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d messages did not complete", failed, len(results))
	}
	out.step("all %d messages delivered; every receipt verified offline against the issuer's pinned root", len(results))
	return nil
}

type demoOut struct {
	w     io.Writer
	start time.Time
}

func (o *demoOut) step(format string, args ...any) {
	fmt.Fprintf(o.w, "[%6.2fs] %s\n", time.Since(o.start).Seconds(), fmt.Sprintf(format, args...))
}

// demoExchange sends one message of each type in each direction, waits for
// the delivered receipts and verifies them as an auditor would.
func demoExchange(ctx context.Context, p *pair.Pair, out *demoOut, timeout time.Duration) ([]*demoResult, error) {
	var results []*demoResult
	for _, from := range []string{"US", "JP"} {
		for _, t := range envelope.Types {
			m, err := p.Send(ctx, from, t, "")
			if err != nil {
				return nil, err
			}
			out.step("send     %s:%-11s → %s  %-31s 202 %s (%.1f ms)", from, m.Agency, m.To, t, m.ID, float64(time.Since(m.Accepted).Microseconds())/1000)
			results = append(results, &demoResult{sent: m})
		}
	}
	for _, r := range results {
		r.msg, r.err = p.WaitStatus(ctx, r.sent, api.StatusDelivered, timeout)
		if r.err == nil && r.msg.Status != api.StatusDelivered {
			r.err = fmt.Errorf("ended %s", r.msg.Status)
		}
		if r.err == nil {
			r.verdicts, r.err = demoAudit(ctx, p, r.sent)
		}
		status := "delivered"
		if r.err != nil {
			status = "FAILED: " + r.err.Error()
		}
		trace := ""
		if r.msg != nil && r.msg.TraceID != "" {
			trace = "  trace " + r.msg.TraceID
		}
		out.step("receipt  %s %s → %s %s: %s%s", r.sent.ID, r.sent.From, r.sent.To, r.sent.Type, status, trace)
	}
	return results, nil
}

// demoAudit fetches a message's receipts from the sender's gateway and
// verifies each offline with nothing but the receiving party's pinned root
// (bundle.pem), then binds them to the evidence bundle's exact bytes.
func demoAudit(ctx context.Context, p *pair.Pair, m *pair.Sent) ([]string, error) {
	sender := p.Side(m.From)
	peerRoots, err := os.ReadFile(filepath.Join(p.Side(m.To).PKIDir, "bundle.pem"))
	if err != nil {
		return nil, err
	}
	bundle, err := certs.ParseBundle(m.To, peerRoots)
	if err != nil {
		return nil, err
	}
	ev, err := sender.Client(m.Agency).Evidence(ctx, m.ID)
	if err != nil {
		return nil, err
	}
	v := &envelope.ReceiptVerifier{Self: m.From, Peer: bundle}
	var verdicts []string
	for _, tok := range ev.Receipts {
		vr, err := v.Verify([]byte(tok), time.Now())
		if err != nil {
			return nil, fmt.Errorf("receipt does not verify: %w", err)
		}
		if vr.Msg != m.ID || vr.EnvSHA256 != envelope.Digest([]byte(ev.Envelope)) || vr.MsgSHA256 != envelope.Digest([]byte(ev.Message)) {
			return nil, errors.New("receipt is not bound to the evidence's envelope and message")
		}
		verdicts = append(verdicts, string(vr.Status))
	}
	if len(verdicts) < 2 {
		return nil, fmt.Errorf("want accepted and delivered receipts, have %v", verdicts)
	}
	return verdicts, nil
}

func demoSummary(w io.Writer, results []*demoResult) int {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MESSAGE\tTYPE\tROUTE\tACCEPTED\tRELAYED\tRECEIVED\tDELIVERED\tRECEIPTS (verified offline)")
	failed := 0
	for _, r := range results {
		times := map[string]string{}
		if r.msg != nil {
			for _, e := range r.msg.Timeline {
				times[e.Status] = e.At.Format("15:04:05")
			}
		}
		verdict := strings.Join(r.verdicts, ", ") + " ✓"
		if r.err != nil {
			failed++
			verdict = "FAILED: " + r.err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s:%s → %s\t%s\t%s\t%s\t%s\t%s\n", r.sent.ID, r.sent.Type, r.sent.From, r.sent.Agency, r.sent.To,
			dash(times[api.StatusAccepted]), dash(times[api.StatusRelayed]), dash(times[api.StatusReceived]), dash(times[api.StatusDelivered]), verdict)
	}
	tw.Flush()
	fmt.Fprintln(w)
	return failed
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// demoServe keeps the exchange running and tells a person how to use it.
func demoServe(ctx context.Context, p *pair.Pair, dir string, w io.Writer) error {
	fmt.Fprintf(w, "Both gateways keep running (Ctrl-C stops them). Files: %s\n\n", dir)
	for _, s := range []*pair.Side{p.US, p.JP} {
		fmt.Fprintf(w, "%s gateway %s (config %s)\n", s.Party, s.URL, s.ConfigPath)
		for agency, tok := range s.Tokens {
			fmt.Fprintf(w, "  %-12s token %s\n", agency, tok)
		}
	}
	examples := filepath.Join(dir, "examples")
	if err := os.MkdirAll(examples, 0o755); err != nil {
		return err
	}
	for _, t := range envelope.Types {
		if err := os.WriteFile(filepath.Join(examples, string(t)+".json"), envelope.Example(t), 0o644); err != nil {
			return err
		}
	}
	body := filepath.Join(examples, string(envelope.LaborEnforcementNotice)+".json")
	fmt.Fprintf(w, `
Example bodies of each type: %s
Try it (as the US Department of Labor):
  export CMX_URL=%s CMX_TOKEN=%s
  go run ./cmd/cmx send --type labor_enforcement_notice --to JP --body %s
  curl -sS -X POST $CMX_URL/v1/messages -H "Authorization: Bearer $CMX_TOKEN" -H 'Content-Type: application/json' \
    -d "{\"type\":\"labor_enforcement_notice\",\"to\":\"JP\",\"body\":$(cat %s)}"
  go run ./cmd/cmx status <id>
  curl -sS $CMX_URL/v1/messages/<id>/receipts -H "Authorization: Bearer $CMX_TOKEN"
`, examples, p.US.URL, p.US.Tokens["DOL-ILAB"], body, body)
	<-ctx.Done()
	return nil
}
