// Command cmx is the tool for agencies, operators and auditors of the cmx
// exchange: send and track messages, fetch receipts and evidence, verify
// them offline, create PKI, and run the demo and the benchmark.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `cmx — the tool of the cmx exchange (US–Japan Critical Minerals Agreement)

usage: cmx <command> [flags]

agencies and operators (against a running gateway; --url/CMX_URL, --token/CMX_TOKEN):
  send        submit a message            cmx send --type labor_enforcement_notice --to JP --body FILE
  status      a message's timeline        cmx status ID
  receipts    a message's signed receipts cmx receipts ID
  evidence    a message's evidence bundle cmx evidence ID > bundle.json
  inbox       pull deliveries             cmx inbox [--ack]
  peers       link and backlog status     cmx peers
auditors (offline):
  verify      verify a receipt, envelope, message or evidence bundle against pinned roots
  pki         create a party's CA and gateway certificates, issue one for a rotation; inspect
the whole exchange on this machine:
  demo        two gateways, two NATS servers, a leafnode; one message of each type each way
  bench       end-to-end benchmark: throughput, latency, CPU, memory and the ratio to the crypto floor

Run 'cmx <command> -h' for a command's flags.
`

type command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

var commands = map[string]command{
	"send":     runSend,
	"status":   runStatus,
	"receipts": runReceipts,
	"evidence": runEvidence,
	"inbox":    runInbox,
	"peers":    runPeers,
	"verify":   runVerify,
	"pki":      runPKI,
	"demo":     runDemo,
	"bench":    runBench,
}

// errUsage marks a usage error (exit status 2).
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "cmx: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	err := cmd(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp): // -h printed the flags
		return 0
	case errors.Is(err, errNotValid):
		return 1
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "cmx %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "cmx %s: %v\n", args[0], err)
		return 1
	}
}
