// Command weftbench runs weft's benchmarks (`make bench`): every figure
// next to its reference, measured in the same run. It prints one table and
// writes the rows as JSON. It needs root (network namespaces) and the
// binaries of `make build tools`; it never touches the root namespace.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/weft-net/weft/integration/bench"
)

func main() {
	quick := flag.Bool("quick", false, "small iteration counts and sizes (development)")
	only := flag.String("only", "", "comma-separated figure IDs to run (default: all)")
	out := flag.String("out", "bench-results.json", "JSON output file")
	verbose := flag.Bool("v", false, "log progress to stderr")
	flag.Parse()

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	res := bench.Results{Command: strings.Join(os.Args, " "), Quick: *quick, Machine: bench.StartMachine()}
	if cmd := os.Getenv("WEFT_BENCH_COMMAND"); cmd != "" {
		res.Command = cmd
	}
	start := time.Now()
	want := strings.Split(*only, ",")
	for _, f := range bench.Figures() {
		if *only != "" && !slices.Contains(want, f.ID) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(os.Stderr, "== figure %s: %s (loadavg %s)\n", f.ID, f.Name, bench.LoadAvg())
		rows, err := bench.RunFigure(ctx, f, bench.Options{Quick: *quick, Log: log})
		res.Rows = append(res.Rows, rows...)
		if err != nil {
			fmt.Fprintln(os.Stderr, "   error:", err)
			res.Errors = append(res.Errors, err.Error())
		}
	}
	res.Machine.LoadEnd = bench.LoadAvg()
	res.Machine.DurationSec = time.Since(start).Seconds()
	if err := bench.WriteTable(os.Stdout, res); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	if err := bench.WriteJSON(*out, res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "wrote", *out)
	if len(res.Errors) > 0 {
		os.Exit(1)
	}
}
