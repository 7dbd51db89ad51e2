package bench

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
)

// clusterC4 is a third one-node cluster beside c1 and c3.
var clusterC4 = benchCluster{"c4", "10.4.0.0/16", "10.104.0.0/16", "192.168.40.0"}

// PathProbeCost is figure 10: what the data-path health check (issue 13)
// costs. c1 and c3 are each other's remote with the probes on at their
// defaults (100 ms; c1 probes c3's gateway over the cable and c3's cni0
// through weft's routes, and answers c3's probes); c4, in the same run,
// has them off. ADD latency is measured in interleaved rounds on c1 and
// c4, each against its own bare chain; idle CPU over one window for all
// three daemons.
func PathProbeCost(ctx context.Context, env *harness.Env, o Options) ([]Row, error) {
	cycles := o.pick(200, 20)
	idle := time.Duration(o.pick(60, 10)) * time.Second
	u, err := harness.NewUnderlay(env)
	if err != nil {
		return nil, err
	}
	peerOf := map[string]benchCluster{"c1": clusterC3, "c3": clusterC1}
	var ms []*startupNode
	for _, bc := range []benchCluster{clusterC1, clusterC3, clusterC4} {
		sn, err := newProbeNode(ctx, env, u, bc, peerOf)
		if err != nil {
			return nil, err
		}
		ms = append(ms, sn)
	}
	on, peer, off := ms[0], ms[1], ms[2]
	type slot struct {
		sn *startupNode
		c  *chain
	}
	slots := []slot{{on, on.bare}, {on, on.weft}, {off, off.bare}, {off, off.weft}}
	round := func(i int, record bool) error {
		for k := range slots {
			s := slots[(i+k)%len(slots)]
			if err := s.sn.cycle(ctx, s.c, i, record); err != nil {
				return err
			}
		}
		return nil
	}
	// Warm-up, and the peer's cni0 (its gateway address is c1's
	// health-check target): one ADD on it creates the bridge.
	if err := peer.cycle(ctx, peer.bare, 0, false); err != nil {
		return nil, err
	}
	for i := 0; i < 5; i++ {
		if err := round(100000+i, false); err != nil {
			return nil, err
		}
	}
	// The probes must really run: c1 sees both of its targets answer.
	st, err := on.w.WaitFor(ctx, func(s api.Status) bool {
		if s.PathHealth == nil || len(s.PathHealth.Targets) != 2 {
			return false
		}
		for _, t := range s.PathHealth.Targets {
			if !t.Up || t.Sent-t.Lost < 5 {
				return false
			}
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("the probes of c1 never answered: %w", err)
	}
	var targets []string
	for _, t := range st.PathHealth.Targets {
		targets = append(targets, fmt.Sprintf("%s %s rtt %.3f ms", t.Name, t.Address, t.RTT.MeanMs))
	}
	if st, err := off.w.Status(ctx); err != nil || st.PathHealth != nil {
		return nil, fmt.Errorf("c4 has the probes off but reports %+v (%v)", st.PathHealth, err)
	}
	for i := 0; i < cycles; i++ {
		if err := round(i, true); err != nil {
			return nil, err
		}
	}
	addOn, addOff := Summarize(paired(on.weft.add, on.bare.add)), Summarize(paired(off.weft.add, off.bare.add))

	// Idle: nothing but the daemons' own timers (the probes, the resync).
	time.Sleep(2 * time.Second)
	pids := []int{on.w.PID, peer.w.PID, off.w.PID}
	t0 := make([]int64, len(pids))
	for i, pid := range pids {
		if t0[i], err = cpuTicks(pid); err != nil {
			return nil, err
		}
	}
	u0, s0, err := cpuSplit(on.w.PID)
	if err != nil {
		return nil, err
	}
	// The floor of any prober that wakes every 100 ms: this process, idle
	// but for a bare 10 Hz ticker, over the same window.
	var r0, r1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	deadline := time.After(idle)
wait:
	for {
		select {
		case <-ctx.Done():
			tick.Stop()
			return nil, ctx.Err()
		case <-tick.C:
		case <-deadline:
			break wait
		}
	}
	tick.Stop()
	wall := time.Since(start)
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	floor := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
	floorPct := floor.Seconds() / wall.Seconds() * 100
	u1, s1, err := cpuSplit(on.w.PID)
	if err != nil {
		return nil, err
	}
	pct := make([]float64, len(pids))
	ticks := make([]int64, len(pids))
	for i, pid := range pids {
		t1, err := cpuTicks(pid)
		if err != nil {
			return nil, err
		}
		ticks[i] = t1 - t0[i]
		pct[i] = float64(ticks[i]) / clockTicks / wall.Seconds() * 100
	}
	one := func(v float64) Summary { return Summary{N: 1, Median: v, P99: v, Min: v, Max: v} }
	extra := map[string]any{
		"cycles": cycles, "idleSeconds": wall.Seconds(), "cpuTicks": map[string]int64{"c1 (on)": ticks[0], "c3 (on, peer)": ticks[1], "c4 (off)": ticks[2]},
		"cpuPercent":            map[string]float64{"c1 (on)": pct[0], "c3 (on, peer)": pct[1], "c4 (off)": pct[2]},
		"bareTicker10HzPercent": floorPct,
		"c1UserPercent":         float64(u1-u0) / clockTicks / wall.Seconds() * 100,
		"c1SystemPercent":       float64(s1-s0) / clockTicks / wall.Seconds() * 100,
		"targets":               targets, "interval": "100ms", "resolution": fmt.Sprintf("1 tick over the window is %.3f %%", 1.0/clockTicks/wall.Seconds()*100),
	}
	return []Row{{
		ID: "10a", Figure: "ADD latency added by the plugin with the health probes on, median", Unit: "ms",
		Weft: addOn, RefName: "probes off (c4, same rounds)", Ref: &addOff,
		Goal:  &Goal{Text: "no measurable cost (≤ 1.1× probes off)", MaxRatio: 1.1},
		Extra: extra, Note: "paired per round: weft chain ADD − bare bridge+host-local ADD on the same node",
	}, {
		ID: "10c", Figure: fmt.Sprintf("weftd CPU idle with the health probes on (2 targets, answering 2), over %s", idle), Unit: "%",
		Weft: one(pct[0]), RefName: "probes off (c4, same window)", Ref: ptr(one(pct[2])),
		Goal: &Goal{Text: "≤ 0.1 %", Max: 0.1}, Extra: extra,
		Note: fmt.Sprintf("utime+stime from /proc/<pid>/stat (c1 user %.3f %%, system %.3f %%: in namespaces the whole path of each probe and reply, the peer's VXLAN decap and netfilter included, runs in the sender's system time); the peer c3 (on) used %.3f %%",
			float64(u1-u0)/clockTicks/wall.Seconds()*100, float64(s1-s0)/clockTicks/wall.Seconds()*100, pct[1]),
	}, {
		ID: "10f", Figure: "a bare Go 10 Hz ticker (the floor of any prober waking every 100 ms), same window", Unit: "%",
		Weft: one(floorPct), RefName: "(no reference)", Extra: extra,
		Note: "the benchmark process itself, idle but for the ticker (getrusage): what one wake-up costs on this machine, ×10 a second",
	}}, nil
}

// newProbeNode is a startup node of figure 10: c1 and c3 are each other's
// remote with a health-check IP (the peer's cni0), c4 has the probes off.
func newProbeNode(ctx context.Context, env *harness.Env, u *harness.Underlay, bc benchCluster, peerOf map[string]benchCluster) (*startupNode, error) {
	n, cfg, err := nodeOn(env, u, harness.LayoutFlannel, bc)
	if err != nil {
		return nil, err
	}
	if p, ok := peerOf[bc.id]; ok {
		cfg["remotes"] = []any{map[string]any{
			"id": p.id, "podCIDRs": []string{p.podCIDR}, "serviceCIDRs": []string{p.serviceCIDR},
			"gatewayIP":     strings.TrimSuffix(p.nodeIPBase, "0") + "11",
			"healthCheckIP": strings.TrimSuffix(p.podCIDR, "0.0/16") + "1.1",
		}}
	} else {
		cfg["healthCheck"] = map[string]any{"enabled": false}
	}
	return startChains(ctx, env, n, cfg, bc, false, func(short, _ string) string { return "probe-" + short })
}
