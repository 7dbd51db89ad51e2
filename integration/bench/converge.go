package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/scenario"
)

// Convergence is figure 7: the two-cluster demo, from weftd start on six
// nodes (pods attached after, as a DaemonSet comes first) to every node
// ready and then to the full matrix green. Each run builds a fresh
// scenario; the namespaces of a run are removed before the next.
func Convergence(ctx context.Context, _ *harness.Env, o Options) ([]Row, error) {
	runs := o.pick(3, 1)
	var ready, green []float64
	for i := 0; i < runs; i++ {
		r, g, err := convergeOnce(ctx, o)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i, err)
		}
		ready, green = append(ready, r), append(green, g)
	}
	return []Row{
		{ID: "7", Figure: "two-cluster demo: weftd start on 6 nodes → matrix green", Unit: "ms",
			Weft: Summarize(green), RefName: "(no reference)", Goal: &Goal{Text: "≤ 2 s", Max: 2000},
			Extra: map[string]any{"allReadyMs": Summarize(ready), "runs": runs},
			Note:  "includes attaching one pod per node with cnitool after weftd starts; matrix probed every 100 ms"},
	}, nil
}

func convergeOnce(ctx context.Context, o Options) (readyMs, greenMs float64, err error) {
	env, err := harness.NewEnv(o.Log)
	if err != nil {
		return 0, 0, err
	}
	defer env.Close()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	s, err := scenario.Build(ctx, env, scenario.Options{})
	if err != nil {
		return 0, 0, err
	}
	r, err := s.WaitAllReady(ctx)
	if err != nil {
		return 0, 0, err
	}
	if _, _, err := s.WaitGreen(ctx); err != nil {
		return 0, 0, err
	}
	g := time.Since(s.WeftdStarted)
	return float64(r) / 1e6, float64(g) / 1e6, nil
}
