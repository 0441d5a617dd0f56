package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/client"
)

// apiFlags are the flags every API command shares.
type apiFlags struct {
	fs    *flag.FlagSet
	url   *string
	token *string
}

func newAPIFlags(name string, stderr io.Writer) *apiFlags {
	fs := flag.NewFlagSet("cmx "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return &apiFlags{
		fs:    fs,
		url:   fs.String("url", envOr("CMX_URL", "http://127.0.0.1:8443"), "gateway URL; env CMX_URL"),
		token: fs.String("token", os.Getenv("CMX_TOKEN"), "agency bearer token; env CMX_TOKEN"),
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (f *apiFlags) parse(args []string, nargs int) ([]string, error) {
	if err := f.fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	if f.fs.NArg() != nargs {
		return nil, fmt.Errorf("%w: want %d argument(s), got %d", errUsage, nargs, f.fs.NArg())
	}
	return f.fs.Args(), nil
}

func (f *apiFlags) client() *client.Client { return &client.Client{BaseURL: *f.url, Token: *f.token} }

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runSend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newAPIFlags("send", stderr)
	typ := f.fs.String("type", "", "message type: non_market_practice_report | labor_enforcement_notice | investment_review_best_practice")
	to := f.fs.String("to", "", "receiving party, e.g. JP")
	recipient := f.fs.String("recipient", "", "receiving agency, e.g. JP:MHLW (default: the type's default agency)")
	corr := f.fs.String("correlation-id", "", "correlation id to thread replies")
	marking := f.fs.String("marking", "", "handling marking, e.g. TLP:AMBER")
	bodyFile := f.fs.String("body", "", "JSON file with the document body ('-' = stdin)")
	idem := f.fs.String("idempotency-key", "", "Idempotency-Key: retry safely with the same key")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	if *typ == "" || *to == "" || *bodyFile == "" {
		return fmt.Errorf("%w: --type, --to and --body are required", errUsage)
	}
	body, err := readInput(*bodyFile)
	if err != nil {
		return err
	}
	req := &api.SubmitRequest{Type: *typ, To: *to, Recipient: *recipient, CorrelationID: *corr, Marking: *marking, Body: body}
	resp, err := f.client().Submit(ctx, req, *idem)
	if err != nil {
		return err
	}
	return printJSON(stdout, resp)
}

func readInput(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(io.LimitReader(os.Stdin, 16<<20))
	}
	return os.ReadFile(name)
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newAPIFlags("status", stderr)
	asJSON := f.fs.Bool("json", false, "print the raw JSON")
	rest, err := f.parse(args, 1)
	if err != nil {
		return err
	}
	m, err := f.client().Message(ctx, rest[0])
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, m)
	}
	fmt.Fprintf(stdout, "message   %s (%s)\ntype      %s\nfrom      %s (%s)\nto        %s %s\nstatus    %s\n",
		m.ID, m.Direction, m.Type, m.From, m.Sender, m.To, m.Recipient, m.Status)
	if m.TraceID != "" {
		fmt.Fprintf(stdout, "trace     %s\n", m.TraceID)
	}
	fmt.Fprintln(stdout, "timeline")
	for _, e := range m.Timeline {
		line := fmt.Sprintf("  %-10s %s", e.Status, e.At.Format("2006-01-02T15:04:05Z07:00"))
		if e.Reason != "" {
			line += "  reason=" + e.Reason
		}
		fmt.Fprintln(stdout, line)
	}
	return nil
}

func runReceipts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newAPIFlags("receipts", stderr)
	rest, err := f.parse(args, 1)
	if err != nil {
		return err
	}
	r, err := f.client().Receipts(ctx, rest[0])
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, strings.Join(r.Receipts, "\n"))
	return nil
}

func runEvidence(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newAPIFlags("evidence", stderr)
	rest, err := f.parse(args, 1)
	if err != nil {
		return err
	}
	ev, err := f.client().Evidence(ctx, rest[0])
	if err != nil {
		return err
	}
	return printJSON(stdout, ev)
}

func runInbox(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newAPIFlags("inbox", stderr)
	ack := f.fs.Bool("ack", false, "acknowledge every listed delivery (records delivery and sends the delivered receipt)")
	limit := f.fs.Int("limit", 10, "deliveries to list (1..100)")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	c := f.client()
	items, err := c.Inbox(ctx, *limit)
	if err != nil {
		return err
	}
	if err := printJSON(stdout, items); err != nil {
		return err
	}
	if *ack {
		for _, d := range items {
			if err := c.Ack(ctx, d.ID); err != nil {
				return err
			}
			fmt.Fprintf(stderr, "acked %s\n", d.ID)
		}
	}
	return nil
}

func runPeers(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newAPIFlags("peers", stderr)
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	ps, err := f.client().Peers(ctx)
	if err != nil {
		return err
	}
	return printJSON(stdout, ps)
}
