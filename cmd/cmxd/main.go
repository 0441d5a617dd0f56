// Command cmxd runs one cmx gateway.
//
//	cmxd --config FILE            run the gateway
//	cmxd validate --config FILE   check a config (and the files it names) and exit
//
// The Go runtime's garbage collector is governed towards
// limits.memory_bytes, a soft memory target (memlimit.go).
//
// For the end-to-end benchmark (cmx bench --profile): --cpuprofile FILE
// writes a CPU profile of the whole run, from start to shutdown;
// --memprofile FILE writes the heap profile at the run's largest live heap,
// and FILE.txt: the runtime's memory classes at the peak resident set, at
// the largest live heap and at shutdown.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/cmx-exchange/cmx/gateway"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "cmxd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	validate := len(args) > 0 && args[0] == "validate"
	if validate {
		args = args[1:]
	}
	fs := flag.NewFlagSet("cmxd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("CMX_CONFIG"), "gateway config file (YAML); env CMX_CONFIG")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the run to `FILE` at shutdown (benchmarking)")
	memprofile := fs.String("memprofile", "", "write the heap profile at the largest live heap to `FILE`, and memory figures to FILE.txt (benchmarking)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("--config is required")
	}
	cfg, err := gateway.LoadConfig(*path)
	if err != nil {
		return err
	}
	node, err := gateway.New(cfg)
	if err != nil {
		return err
	}
	if validate {
		fmt.Fprintf(stdout, "%s: valid gateway config for party %s (peer %s, %d agencies)\n", *path, cfg.Party, cfg.Peer.Party, len(cfg.Agencies))
		return nil
	}
	if target, ok := memoryTarget(cfg.Limits, os.Getenv); ok {
		defer startMemoryGovernor(target)()
	}
	var stops []func() error
	if *cpuprofile != "" {
		stop, err := startCPUProfile(*cpuprofile)
		if err != nil {
			return err
		}
		stops = append(stops, stop)
	}
	if *memprofile != "" {
		stop, err := startMemProfile(*memprofile, memSampleInterval)
		if err != nil {
			return errors.Join(err, runStops(stops))
		}
		stops = append(stops, stop)
	}
	return errors.Join(node.Run(ctx), runStops(stops))
}

// memSampleInterval is how often --memprofile reads the resident set.
const memSampleInterval = 100 * time.Millisecond

func runStops(stops []func() error) error {
	var errs []error
	for _, stop := range stops {
		errs = append(errs, stop())
	}
	return errors.Join(errs...)
}

// startCPUProfile starts profiling into path; stop ends it and closes the file.
func startCPUProfile(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}
