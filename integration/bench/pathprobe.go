package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/config"
)

// clusterC4 is a third one-node cluster beside c1 and c3.
var clusterC4 = benchCluster{"c4", "10.4.0.0/16", "10.104.0.0/16", "192.168.40.0"}

// PathProbeCost is figure 10: what the data-path health check (issue 13)
// costs. c1 and c3 are each other's remote with the probes on at their
// defaults (icmp; c1 probes c3's gateway over the cable and c3's cni0
// through weft's routes, and c3 probes c1 likewise); c4, in the same run,
// has them off. ADD latency is measured in interleaved rounds on c1 and
// c4, each against its own bare chain; idle CPU and wake-ups over one
// window for all three daemons, then over a second one with c1 and c3
// reloaded to protocol udp (each answering the other's probes).
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
	st, err := on.w.WaitFor(ctx, func(s api.Status) bool { return allAnswering(s.PathHealth, 2) })
	if err != nil {
		return nil, fmt.Errorf("the probes of c1 never answered: %w", err)
	}
	var targets []string
	timing := fmt.Sprintf("interval %g ms, fastInterval %g ms, lossThreshold %d", st.PathHealth.IntervalMs, st.PathHealth.FastIntervalMs, st.PathHealth.LossThreshold)
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
	// First on the plain veth underlay, where a probe's whole round trip
	// (the far node's receive and echo reply, the answer's way back) runs
	// in the prober's sendto and is charged to it (10c-veth). Then with
	// every underlay link receiving in kernel threads, as separate hosts
	// would (the far side on its own CPU, the answer in a softirq): the
	// default ICMP probes (10c), then protocol udp (c1 and c3 reloaded:
	// each answers the other's probes in its responder).
	pids := []int{on.w.PID, peer.w.PID, off.w.PID}
	veth, err := idleWindow(ctx, pids, idle, false)
	if err != nil {
		return nil, err
	}
	before := kernelThreads("napi/")
	for _, sn := range ms {
		if err := sn.n.ReceiveInKernelThreads(); err != nil {
			return nil, err
		}
	}
	var napi []int
	for pid := range kernelThreads("napi/") {
		if !before[pid] {
			napi = append(napi, pid)
		}
	}
	napi0, napiStart := kernelThreadsCPU(napi), time.Now()
	icmp, err := idleWindow(ctx, pids, idle, true)
	if err != nil {
		return nil, err
	}
	napiPct := float64(kernelThreadsCPU(napi)-napi0) / float64(time.Since(napiStart)) * 100
	// What each prober saw over the window: a target losing probes would
	// be retried at the fast pace and wake more.
	probed := map[string][]string{}
	for name, sn := range map[string]*startupNode{"c1": on, "c3": peer} {
		st, err := sn.w.Status(ctx)
		if err != nil || st.PathHealth == nil {
			return nil, fmt.Errorf("%s status after the idle window: %v", name, err)
		}
		for _, t := range st.PathHealth.Targets {
			probed[name] = append(probed[name], fmt.Sprintf("%s up %v sent %d lost %d rtt %.3f ms", t.Name, t.Up, t.Sent, t.Lost, t.RTT.MeanMs))
		}
	}
	for _, sn := range []*startupNode{on, peer} {
		if err := reloadHealthCheck(sn, map[string]any{"protocol": config.HealthCheckUDP}); err != nil {
			return nil, err
		}
	}
	for _, sn := range []*startupNode{on, peer} {
		if _, err := sn.w.WaitFor(ctx, func(s api.Status) bool {
			return s.PathHealth != nil && s.PathHealth.Protocol == config.HealthCheckUDP && allAnswering(s.PathHealth, 2)
		}); err != nil {
			return nil, fmt.Errorf("the udp probes never answered: %w", err)
		}
	}
	udp, err := idleWindow(ctx, pids, idle, false)
	if err != nil {
		return nil, err
	}
	one := func(v float64) Summary { return Summary{N: 1, Median: v, P99: v, Min: v, Max: v} }
	extra := map[string]any{
		"cycles": cycles, "targets": targets, "timing": timing,
		"icmp": icmp.extra(), "udp": udp.extra(), "icmpVeth": veth.extra(), "icmpTargetsAfter": probed,
		"napiThreads": len(napi), "napiThreadsPercent": napiPct,
		"bareTicker10HzPercent": icmp.floorPct,
		"resolution":            "CPU from /proc/<pid>/task/*/schedstat (ns); wake-ups = voluntary + involuntary context switches of every thread",
	}
	note := func(w idleResult) string {
		return fmt.Sprintf("added by the probes (c1 − c4): %.3f %%; c1 %.2f wake-ups/s (c4, probes off: %.2f/s); c1 user %.3f %%, system %.3f %%; the peer c3 used %.3f %% at %.2f wake-ups/s; over %.0f s",
			w.pct[0]-w.pct[2], w.wakes[0], w.wakes[2], w.userPct, w.sysPct, w.pct[1], w.wakes[1], w.wall.Seconds())
	}
	threaded := fmt.Sprintf("; the underlay links' %d kernel receive threads used %.3f %% over the window (every node's receive side, both directions)", len(napi), napiPct)
	return []Row{{
		ID: "10a", Figure: "ADD latency added by the plugin with the health probes on, median", Unit: "ms",
		Weft: addOn, RefName: "probes off (c4, same rounds)", Ref: &addOff,
		Goal:  &Goal{Text: "no measurable cost (≤ 1.1× probes off)", MaxRatio: 1.1},
		Extra: extra, Note: "paired per round: weft chain ADD − bare bridge+host-local ADD on the same node",
	}, {
		// The words: the probes "add … ≤ 0.1 % idle CPU". What
		// they add is c1's CPU less c4's, both measured over the same
		// window (10c-on has the two).
		ID: "10c", Figure: fmt.Sprintf("idle CPU the health probes add to weftd (icmp, %s; 2 targets): c1, probes on, − c4, probes off, over the same %s; underlay receive in kernel threads, as on separate hosts", timing, idle), Unit: "%",
		Weft: one(icmp.pct[0] - icmp.pct[2]), RefName: "(no reference: a difference of two daemons, 10c-on)",
		Goal: &Goal{Text: "the probes add ≤ 0.1 %", Max: 0.1}, Extra: extra, Note: note(icmp) + threaded,
	}, {
		ID: "10c-on", Figure: fmt.Sprintf("weftd CPU idle with the health probes on (icmp, %s; 2 targets), over %s, same window as 10c", timing, idle), Unit: "%",
		Weft: one(icmp.pct[0]), RefName: "probes off (c4, same window)", Ref: ptr(one(icmp.pct[2])), Extra: extra,
	}, {
		ID: "10c-veth", Figure: fmt.Sprintf("as 10c on the plain veth underlay, the %s before: each probe's whole round trip, the far kernel's echo reply included, in c1's sendto", idle), Unit: "%",
		Weft: one(veth.pct[0] - veth.pct[2]), RefName: "(no reference: c1 − c4)", Extra: extra,
		Note: note(veth) + fmt.Sprintf("; c1 alone %.3f %%, c4 %.3f %%", veth.pct[0], veth.pct[2]),
	}, {
		ID: "10c-udp", Figure: fmt.Sprintf("weftd CPU idle with the health probes on (udp, %s; 2 targets, answering 2), over %s, receive in kernel threads", timing, idle), Unit: "%",
		Weft: one(udp.pct[0]), RefName: "probes off (c4, same window)", Ref: ptr(one(udp.pct[2])),
		Extra: extra, Note: note(udp) + "; the responder wakes for every probe it answers",
	}, {
		ID: "10f", Figure: "a bare Go 10 Hz ticker in the benchmark process, same window as 10c", Unit: "%",
		Weft: one(icmp.floorPct), RefName: "(no reference)", Extra: extra,
		Note: fmt.Sprintf("the benchmark process itself, idle but for the ticker (getrusage): what one wake-up of a Go timer costs on this machine (%.0f µs), ×10 a second", icmp.floorPct/100/10*1e6),
	}}, nil
}

// allAnswering: n targets, each up with answers.
func allAnswering(h *api.PathHealth, n int) bool {
	if h == nil || len(h.Targets) != n {
		return false
	}
	for _, t := range h.Targets {
		if !t.Up || t.Sent-t.Lost < 5 {
			return false
		}
	}
	return true
}

// reloadHealthCheck rewrites a figure-10 node's file with this healthCheck
// section; weftd reloads it.
func reloadHealthCheck(sn *startupNode, hc map[string]any) error {
	cfg := sn.cfg
	cfg["healthCheck"] = hc
	return sn.n.RewriteWeftdConfig(cfg.MustYAML())
}

// kernelThreads is the PIDs of the kernel threads whose name starts with
// prefix.
func kernelThreads(prefix string) map[int]bool {
	out := map[int]bool{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm")); err == nil && strings.HasPrefix(string(b), prefix) {
			out[pid] = true
		}
	}
	return out
}

// kernelThreadsCPU is the summed time on CPU of those kernel threads.
func kernelThreadsCPU(pids []int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		if d, err := threadsCPU(pid); err == nil {
			sum += d
		}
	}
	return sum
}

// idleResult is one idle window: per daemon (c1, c3, c4) CPU % and
// wake-ups a second.
type idleResult struct {
	wall            time.Duration
	pct, wakes      []float64
	userPct, sysPct float64  // c1's, from /proc/<pid>/stat ticks
	floorPct        float64  // a bare 10 Hz ticker here (ticker runs)
	c1Threads       []string // c1's threads waking at least every 2 s: "tid(name) n/s"
}

func (r idleResult) extra() map[string]any {
	return map[string]any{
		"seconds":      r.wall.Seconds(),
		"cpuPercent":   map[string]float64{"c1 (on)": r.pct[0], "c3 (on, peer)": r.pct[1], "c4 (off)": r.pct[2]},
		"wakesPerSec":  map[string]float64{"c1 (on)": r.wakes[0], "c3 (on, peer)": r.wakes[1], "c4 (off)": r.wakes[2]},
		"c1UserPct":    r.userPct,
		"c1SystemPct":  r.sysPct,
		"tickerFloor%": r.floorPct,
		"c1Threads":    r.c1Threads,
	}
}

// idleWindow measures the daemons over one idle window; with ticker, the
// benchmark process runs a bare 10 Hz Go ticker meanwhile (10f).
func idleWindow(ctx context.Context, pids []int, idle time.Duration, ticker bool) (idleResult, error) {
	time.Sleep(2 * time.Second)
	type sample struct{ ns, switches int64 }
	read := func() ([]sample, error) {
		out := make([]sample, len(pids))
		for i, pid := range pids {
			ns, sw, err := taskStats(pid)
			if err != nil {
				return nil, err
			}
			out[i] = sample{ns, sw}
		}
		return out, nil
	}
	s0, err := read()
	if err != nil {
		return idleResult{}, err
	}
	th0 := threadSwitches(pids[0])
	u0, st0, err := cpuSplit(pids[0])
	if err != nil {
		return idleResult{}, err
	}
	var r0, r1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	start := time.Now()
	var tick <-chan time.Time
	if ticker {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
	deadline := time.After(idle)
wait:
	for {
		select {
		case <-ctx.Done():
			return idleResult{}, ctx.Err()
		case <-tick:
		case <-deadline:
			break wait
		}
	}
	wall := time.Since(start)
	res := idleResult{wall: wall, pct: make([]float64, len(pids)), wakes: make([]float64, len(pids))}
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	s1, err := read()
	if err != nil {
		return idleResult{}, err
	}
	for tid, n := range threadSwitches(pids[0]) {
		if d := float64(n-th0[tid]) / wall.Seconds(); d >= 0.5 {
			res.c1Threads = append(res.c1Threads, fmt.Sprintf("%s %.1f/s", tid, d))
		}
	}
	slices.Sort(res.c1Threads)
	u1, st1, err := cpuSplit(pids[0])
	if err != nil {
		return idleResult{}, err
	}
	for i := range pids {
		res.pct[i] = float64(s1[i].ns-s0[i].ns) / float64(wall.Nanoseconds()) * 100
		res.wakes[i] = float64(s1[i].switches-s0[i].switches) / wall.Seconds()
	}
	res.userPct = float64(u1-u0) / clockTicks / wall.Seconds() * 100
	res.sysPct = float64(st1-st0) / clockTicks / wall.Seconds() * 100
	if ticker {
		floor := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
		res.floorPct = floor.Seconds() / wall.Seconds() * 100
	}
	return res, nil
}

// threadSwitches is each thread's context switches, keyed "tid(comm)".
func threadSwitches(pid int) map[string]int64 {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, _ := os.ReadDir(dir)
	out := map[string]int64{}
	for _, t := range tasks {
		_, sw, err := taskStats2(filepath.Join(dir, t.Name()))
		if err == nil {
			out[t.Name()] = sw
		}
	}
	return out
}

// taskStats sums, over every thread of pid, the time on CPU
// (schedstat, ns) and the context switches (each one a wake-up of a
// thread that slept or was preempted).
func taskStats(pid int) (cpuNs, switches int64, err error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, t := range tasks {
		ns, sw, err := taskStats2(filepath.Join(dir, t.Name()))
		if err != nil {
			continue // the thread exited
		}
		cpuNs += ns
		switches += sw
	}
	return cpuNs, switches, nil
}

// taskStats2 is one thread's time on CPU and context switches.
func taskStats2(dir string) (cpuNs, switches int64, err error) {
	b, err := os.ReadFile(filepath.Join(dir, "schedstat"))
	if err != nil {
		return 0, 0, err
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		cpuNs, _ = strconv.ParseInt(f[0], 10, 64)
	}
	st, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(st), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			switches += n
		}
	}
	return cpuNs, switches, nil
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
	sn, err := startChains(ctx, env, n, cfg, bc, false, func(short, _ string) string { return "probe-" + short })
	if err != nil {
		return nil, err
	}
	sn.cfg = cfg
	return sn, nil
}
