package bench

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/weft-net/weft/integration/harness"
)

// Options shapes a run.
type Options struct {
	// Quick shrinks iteration counts and sizes for development.
	Quick bool
	// Log receives progress.
	Log *slog.Logger
}

// pick returns quick in quick mode, full otherwise.
func (o Options) pick(full, quick int) int {
	if o.Quick {
		return quick
	}
	return full
}

// Figure is one benchmark of the issue: it builds what it needs in env
// (removed when env closes) and returns its rows.
type Figure struct {
	ID   string
	Name string
	Run  func(ctx context.Context, env *harness.Env, o Options) ([]Row, error)
}

// Figures lists every benchmark in table order.
func Figures() []Figure {
	return []Figure{
		{"1", "pod start-up cost (ADD latency added by the plugin)", StartupCost},
		{"2", "time to ready after the CNI interface gets its address", TimeToReady},
		{"3", "rule programming at scale", RuleProgramming},
		{"4", "gateway FDB at scale", GatewayFDB},
		{"5", "data path throughput", DataPath},
		{"6", "daemon footprint", Footprint},
		{"7", "two-cluster convergence", Convergence},
		{"8", "the operator's path at 20,000 remote CIDRs", OperatorPath},
		{"9", "weftd memory with 5,000 Node objects (topology: kubernetes)", KubeNodes},
		{"10", "data-path health probes: ADD latency and idle CPU (issue 13)", PathProbeCost},
	}
}

// RunFigure runs f in its own Env, so a failing figure leaves nothing behind
// and does not stop the others.
func RunFigure(ctx context.Context, f Figure, o Options) ([]Row, error) {
	env, err := harness.NewEnv(o.Log)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	rows, err := f.Run(ctx, env, o)
	if cerr := env.Close(); cerr != nil {
		o.Log.Warn("cleanup after figure", "figure", f.ID, "err", cerr)
	}
	o.Log.Info("figure done", "figure", f.ID, "took", time.Since(start).Round(time.Millisecond), "rows", len(rows), "err", err)
	for i := range rows {
		rows[i].Finish()
	}
	if err != nil {
		return rows, fmt.Errorf("figure %s (%s): %w", f.ID, f.Name, err)
	}
	return rows, nil
}
