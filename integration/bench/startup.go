package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/client"
)

// oneNode builds a one-node cluster c1 (its own gateway) with one remote
// cluster c2, and returns the node and its weftd configuration.
func oneNode(env *harness.Env, layout harness.Layout) (*harness.Node, harness.WeftdConfig, error) {
	u, err := harness.NewUnderlay(env)
	if err != nil {
		return nil, nil, err
	}
	return nodeOn(env, u, layout, clusterC1)
}

// benchCluster is the identity of a one-node cluster built by nodeOn.
type benchCluster struct{ id, podCIDR, serviceCIDR, nodeIPBase string }

var (
	clusterC1 = benchCluster{"c1", "10.1.0.0/16", "10.101.0.0/16", "192.168.10.0"}
	// clusterC3 is a second one-node cluster beside c1 on the same
	// underlay, for a daemon that runs at the same time with other
	// settings.
	clusterC3 = benchCluster{"c3", "10.3.0.0/16", "10.103.0.0/16", "192.168.30.0"}
)

// nodeOn builds a one-node cluster (its own gateway) on u with one remote
// cluster c2, and returns the node and its weftd configuration.
func nodeOn(env *harness.Env, u *harness.Underlay, layout harness.Layout, bc benchCluster) (*harness.Node, harness.WeftdConfig, error) {
	c, err := harness.NewCluster(env, u, harness.ClusterSpec{
		ID: bc.id, Nodes: 1, PodCIDR: bc.podCIDR, ServiceCIDR: bc.serviceCIDR, NodeIPBase: bc.nodeIPBase,
		CNI: harness.CNIOptions{Layout: layout, Weft: true},
	})
	if err != nil {
		return nil, nil, err
	}
	n := c.Nodes[0]
	cfg := c.WeftdConfig(n, n, nil, nil)
	cfg["remotes"] = []any{map[string]any{
		"id": "c2", "podCIDRs": []string{"10.2.0.0/16"}, "serviceCIDRs": []string{"10.102.0.0/16"}, "gatewayIP": "192.168.20.11",
	}}
	return n, cfg, nil
}

// chain is one conflist measured by StartupCost.
type chain struct {
	name string
	tag  string // container ID part
	node *harness.Node
	list *libcni.NetworkConfigList
	pod  *harness.Pod
	add  []time.Duration
	del  []time.Duration
}

// conflists renders bridge+host-local, +tuning and +weft for n. The weft
// entry is the production default (log to stderr, which libcni captures),
// not the harness's per-node log file.
func conflists(n *harness.Node) (base, tuning, weft []byte, err error) {
	opts := harness.CNIOptions{Layout: harness.LayoutFlannel}
	if base, err = n.Conflist(opts); err != nil {
		return
	}
	opts.Weft = true
	opts.WeftOptions = map[string]any{"logFile": nil}
	if weft, err = n.Conflist(opts); err != nil {
		return
	}
	var doc map[string]any
	if err = json.Unmarshal(base, &doc); err != nil {
		return
	}
	doc["plugins"] = append(doc["plugins"].([]any), map[string]any{"type": "tuning"})
	tuning, err = json.Marshal(doc)
	return
}

// startupNode is one node of figure 1: its daemon and its three chains.
type startupNode struct {
	n                  *harness.Node
	w                  *harness.Weftd
	cni                *libcni.CNIConfig
	bare, tuning, weft *chain
	// cfg is the node's weftd file (figure 10 reloads it).
	cfg harness.WeftdConfig
}

func newStartupNode(ctx context.Context, env *harness.Env, u *harness.Underlay, bc benchCluster, stateDir string) (*startupNode, error) {
	n, cfg, err := nodeOn(env, u, harness.LayoutFlannel, bc)
	if err != nil {
		return nil, err
	}
	cfg["stateDir"] = stateDir
	return startChains(ctx, env, n, cfg, bc, true, func(short, name string) string {
		return "startup-" + strings.ReplaceAll(name, "+", "-")
	})
}

// startChains starts weftd on n with cfg and makes n's chains, each with a
// pod named by podName: bare bridge+host-local, +weft, and +tuning when
// tuning is set.
func startChains(ctx context.Context, env *harness.Env, n *harness.Node, cfg harness.WeftdConfig, bc benchCluster, tuning bool, podName func(short, name string) string) (*startupNode, error) {
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		return nil, err
	}
	base, tun, wft, err := conflists(n)
	if err != nil {
		return nil, err
	}
	sn := &startupNode{n: n, w: w, cni: libcni.NewCNIConfigWithCacheDir(env.CNIPath(), n.CacheDir, nil)}
	type want struct {
		dst         **chain
		short, name string
		b           []byte
	}
	wants := []want{{&sn.bare, "bare", "bridge+host-local", base}}
	if tuning {
		wants = append(wants, want{&sn.tuning, "tuning", "bridge+host-local+tuning", tun})
	}
	wants = append(wants, want{&sn.weft, "weft", "bridge+host-local+weft", wft})
	for _, c := range wants {
		list, err := libcni.ConfListFromBytes(c.b)
		if err != nil {
			return nil, fmt.Errorf("conflist %s: %w", c.name, err)
		}
		pod, err := n.NewPod("bench", podName(c.short, c.name))
		if err != nil {
			return nil, err
		}
		*c.dst = &chain{name: c.name, tag: bc.id + "-" + c.short, node: n, list: list, pod: pod}
	}
	return sn, nil
}

func (sn *startupNode) chains() []*chain { return []*chain{sn.bare, sn.tuning, sn.weft} }

// cycle is one ADD and DEL of c; record keeps the latencies.
func (sn *startupNode) cycle(ctx context.Context, c *chain, i int, record bool) error {
	rt := sn.runtime(c, i)
	return sn.n.NS.Do(func(ns.NetNS) error {
		t0 := time.Now()
		if _, err := sn.cni.AddNetworkList(ctx, c.list, rt); err != nil {
			return fmt.Errorf("%s on %s: ADD %d: %w", c.name, sn.n.Name, i, err)
		}
		t1 := time.Now()
		if err := sn.cni.DelNetworkList(ctx, c.list, rt); err != nil {
			return fmt.Errorf("%s on %s: DEL %d: %w", c.name, sn.n.Name, i, err)
		}
		if record {
			c.add = append(c.add, t1.Sub(t0))
			c.del = append(c.del, time.Since(t1))
		}
		return nil
	})
}

func (sn *startupNode) runtime(c *chain, i int) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: fmt.Sprintf("bench-%d-%s", i, c.tag),
		NetNS:       c.pod.NS.Path,
		IfName:      "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "bench"},
			{"K8S_POD_NAME", fmt.Sprintf("p%d", i)}},
	}
}

// attachments fetches the daemon's attachment count and how many events
// reached it through the spool instead of its socket.
func (sn *startupNode) attachments(ctx context.Context) (int, uint64, error) {
	st, err := client.New(sn.n.Socket, 2*time.Second).Status(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("status of weftd on %s: %w", sn.n.Name, err)
	}
	return st.Attachments, st.Spool.Replayed, nil
}

// checkRecorded proves the weft chain reaches the daemon (and not the
// spool): one ADD shows as one attachment, its DEL as none.
func (sn *startupNode) checkRecorded(ctx context.Context) error {
	rt := sn.runtime(sn.weft, 999999)
	return sn.n.NS.Do(func(ns.NetNS) error {
		if _, err := sn.cni.AddNetworkList(ctx, sn.weft.list, rt); err != nil {
			return err
		}
		n, replayed, err := sn.attachments(ctx)
		if err != nil {
			return err
		}
		if n != 1 || replayed != 0 {
			return fmt.Errorf("weftd on %s: %d attachments (%d via the spool) after one ADD, want 1 (0): the figure would not measure weft's ADD path", sn.n.Name, n, replayed)
		}
		if err := sn.cni.DelNetworkList(ctx, sn.weft.list, rt); err != nil {
			return err
		}
		if n, _, err = sn.attachments(ctx); err != nil || n != 0 {
			return fmt.Errorf("weftd on %s: %d attachments after its DEL, want 0 (%v)", sn.n.Name, n, err)
		}
		return nil
	})
}

// StartupCost is figure 1: ADD+DEL cycles through libcni, the bare chain
// and the chain with tuning or weft appended, interleaved in one rotated
// order per round; what a chained plugin adds is its chain's latency minus
// the bare chain's in the same round, so load drifting during the run
// cancels out. Two nodes run at once, each with its own weftd: c1 keeps the
// state dir on tmpfs (production: /run), c3 on this machine's disk; each
// has its own bare and tuning reference in the same rounds.
func StartupCost(ctx context.Context, env *harness.Env, o Options) ([]Row, error) {
	cycles := o.pick(300, 30)
	u, err := harness.NewUnderlay(env)
	if err != nil {
		return nil, err
	}
	shm, err := tmpfsDir(env)
	if err != nil {
		return nil, err
	}
	tmpfs, err := newStartupNode(ctx, env, u, clusterC1, shm)
	if err != nil {
		return nil, err
	}
	diskDir, err := env.TempDir("weft-bench-state-")
	if err != nil {
		return nil, err
	}
	disk, err := newStartupNode(ctx, env, u, clusterC3, diskDir)
	if err != nil {
		return nil, err
	}
	nodes := []*startupNode{tmpfs, disk}
	type slot struct {
		sn *startupNode
		c  *chain
	}
	var slots []slot
	for _, sn := range nodes {
		for _, c := range sn.chains() {
			slots = append(slots, slot{sn, c})
		}
	}
	round := func(i int, record bool) error {
		// Rotate the order every round so no chain always runs first.
		for k := range slots {
			s := slots[(i+k)%len(slots)]
			if err := s.sn.cycle(ctx, s.c, i, record); err != nil {
				return err
			}
		}
		return nil
	}
	// Warm-up: page cache, the bridges, the daemons' first reconciles.
	for i := 0; i < 5; i++ {
		if err := round(100000+i, false); err != nil {
			return nil, err
		}
	}
	for _, sn := range nodes {
		if _, err := sn.w.WaitReady(ctx); err != nil {
			return nil, err
		}
		if err := sn.checkRecorded(ctx); err != nil {
			return nil, err
		}
	}
	ticks0 := map[*startupNode]int64{}
	for _, sn := range nodes {
		ticks0[sn], _ = cpuTicks(sn.w.PID)
	}
	for i := 0; i < cycles; i++ {
		if err := round(i, true); err != nil {
			return nil, err
		}
	}
	// What each daemon spent on the CPU per round (its weft ADD+DEL and
	// the netlink events of all three chains' veths): the share of the
	// machine weft takes from the chains next to it.
	daemonCPU := map[string]float64{}
	for _, sn := range nodes {
		if t, err := cpuTicks(sn.w.PID); err == nil {
			daemonCPU[sn.n.Name] = float64(t-ticks0[sn]) * 1000 / clockTicks / float64(cycles)
		}
	}
	// Every ADD was DELeted, over the socket: a daemon that recorded
	// anything else (or replayed from the spool) was not what we measured.
	var countErrs []string
	counts := map[string]any{}
	for _, sn := range nodes {
		n, replayed, err := sn.attachments(ctx)
		if err != nil {
			return nil, err
		}
		counts[sn.n.Name] = map[string]any{"attachments": n, "spoolReplayed": replayed}
		if n != 0 || replayed != 0 {
			countErrs = append(countErrs, fmt.Sprintf("weftd on %s: %d attachments and %d spool replays after %d ADD+DEL cycles, want 0 and 0", sn.n.Name, n, replayed, cycles))
		}
	}
	countsOK := len(countErrs) == 0

	// 1d: the same three chains on the tmpfs node through the real
	// cnitool, one process per verb as a runtime execs plugins, as an
	// independent check of 1a's in-process libcni loop.
	viaCNITool, err := tmpfs.cnitoolRounds(ctx, env, o.pick(300, 30))
	if err != nil {
		return nil, err
	}

	// 1f: the plugins' ADD alone, exec'd directly: no chain to subtract.
	direct, err := tmpfs.directADDs(ctx, env, o.pick(100, 20))
	if err != nil {
		return nil, err
	}
	directWeft, directWeftParts := addCPUSummaries(direct.weft)
	directTuning, directTuningParts := addCPUSummaries(direct.tuning)

	bare, tuning, weft := tmpfs.bare, tmpfs.tuning, tmpfs.weft
	addedWeft, addedTuning := paired(weft.add, bare.add), paired(tuning.add, bare.add)
	sw, st := Summarize(addedWeft), Summarize(addedTuning)
	diskWeft, diskTuning := Summarize(paired(disk.weft.add, disk.bare.add)), Summarize(paired(disk.tuning.add, disk.bare.add))
	phases, perr := pluginPhases(ctx, env, tmpfs.n, o)
	extra := map[string]any{
		"cycles": cycles, "order": "one round = 6 chains on 2 nodes, rotated per round",
		"addMs":               chainSummaries(nodes, func(c *chain) []time.Duration { return c.add }),
		"delMs":               chainSummaries(nodes, func(c *chain) []time.Duration { return c.del }),
		"daemonCountsAfter":   counts,
		"pluginPhasesMs":      phases,
		"stateDirs":           map[string]string{tmpfs.n.Name: shm + " (tmpfs)", disk.n.Name: diskDir + " (disk)"},
		"addedMsDiskNode":     map[string]Summary{"weft": diskWeft, "tuning": diskTuning},
		"addedMsTmpfsNode":    map[string]Summary{"weft": sw, "tuning": st},
		"daemonCountProblems": countErrs,
		"cnitoolAddMs":        viaCNITool.raw,
		"daemonCPUMsPerRound": daemonCPU,
	}
	if perr != nil {
		extra["pluginPhasesError"] = perr.Error()
	}
	goal := func() *Goal { return &Goal{Text: "≤ 1.0× tuning", MaxRatio: 1.0} }
	rows := []Row{{
		ID: "1a", Figure: "ADD latency added by the plugin, median (state on tmpfs)", Unit: "ms",
		Weft: sw, RefName: "tuning", Ref: &st, Goal: goal(), Cond: &countsOK, Extra: extra,
		Note: "paired per round: chain ADD − bare bridge+host-local ADD; min/max are of the paired differences",
	}, {
		ID: "1b", Figure: "ADD latency added by the plugin, p99 (state on tmpfs)", Unit: "ms",
		Weft: p99Of(sw), RefName: "tuning", Ref: ptr(p99Of(st)), Cond: &countsOK,
		Note: "p99 of the paired per-round differences (not a difference of p99s); no goal in the issue, reported for the tail",
	}, {
		ID: "1c", Figure: "ADD latency added by the plugin, median (state on disk)", Unit: "ms",
		Weft: diskWeft, RefName: "tuning (same rounds, same node)", Ref: &diskTuning, Goal: goal(), Cond: &countsOK,
		Note: "a second node and weftd in the same rounds, stateDir on this machine's disk: the state write is not fsynced on the request path (the page cache survives kill -9 of weftd)",
	}, {
		ID: "1d", Figure: "ADD latency added by the plugin, median, through cnitool (state on tmpfs)", Unit: "ms",
		Weft: viaCNITool.weft, RefName: "tuning", Ref: &viaCNITool.tuning, Goal: goal(),
		Note: "the real cnitool per ADD (ip netns exec + cnitool + plugins), 3 chains interleaved and rotated, 300 rounds; paired per round against the bare chain (the differences spread over ±10–30 ms, so the median resolves about ±1 ms: 1f is the plugins' own cost, without the chains)",
	}, {
		ID: "1e", Figure: "CPU time added by the plugin per ADD, median, through cnitool (plugin process + weftd)", Unit: "ms",
		Weft: viaCNITool.weftCPU, RefName: "tuning", Ref: &viaCNITool.tuningCPU,
		Note: "1d's runs: rusage of the chain's process tree plus weftd's threads (schedstat) during the ADD, minus the bare chain's in the same round; CPU time leaves out waiting for a CPU (contention still moves it: caches, SMT); no goal in the issue",
	}, {
		ID: "1f", Figure: "CPU time per ADD, the plugin exec'd directly with a bridge's prevResult (plugin process + weftd's threads meanwhile)", Unit: "ms",
		Weft: directWeft, RefName: "tuning (same rounds)", Ref: &directTuning,
		Extra: map[string]any{"weft": directWeftParts, "tuning": directTuningParts},
		Note:  "weft and tuning ADD alternately, the process's rusage plus weftd's schedstat during the run (for both: weftd's background work is in either alike); no chain is subtracted, so unlike 1e it resolves a fraction of a millisecond; the split and the thread wake-ups (voluntary switches) are in extra; no goal in the issue",
	}}
	if !countsOK {
		return rows, fmt.Errorf("daemon counts: %s", strings.Join(countErrs, "; "))
	}
	return rows, nil
}

// cnitoolFigures are the added latencies measured through cnitool, and
// the CPU time each chain's ADD took.
type cnitoolFigures struct {
	weft, tuning       Summary
	weftCPU, tuningCPU Summary
	raw                map[string]Summary
}

// threadsCPU is the CPU time all threads of pid have run (schedstat, ns).
func threadsCPU(pid int) (time.Duration, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("threads of %d: %v", pid, err)
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // a thread gone meanwhile
		}
		var ns int64
		if _, err := fmt.Sscan(string(b), &ns); err != nil {
			return 0, fmt.Errorf("parse %s: %w", t, err)
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

// cnitoolRounds runs rounds of cnitool add+del of the node's three chains,
// interleaved and rotated, each chain written as its own network in one
// NETCONFPATH. Like the harness's cnitool runs, each one bind-mounts the
// node's cache dir over /var/lib/cni inside the mount namespace that
// `ip netns exec` makes, so nothing lands in the host's cache.
func (sn *startupNode) cnitoolRounds(ctx context.Context, env *harness.Env, rounds int) (cnitoolFigures, error) {
	dir := filepath.Join(sn.n.Dir, "bench-netconf")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return cnitoolFigures{}, err
	}
	nets := map[*chain]string{}
	for i, c := range sn.chains() {
		name := "bench-" + strings.TrimPrefix(c.tag, sn.n.Cluster+"-")
		b, err := json.Marshal(withName(c.list, name))
		if err != nil {
			return cnitoolFigures{}, err
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%02d-%s.conflist", i, name)), b, 0o644); err != nil {
			return cnitoolFigures{}, err
		}
		nets[c] = name
	}
	// cpu is what the last run cost on the CPU: the process tree
	// (rusage of ip netns exec, its shell, cnitool and the plugins, which
	// each waited for its children) and the node's weftd meanwhile. Unlike
	// the latency it leaves out the time spent waiting for a CPU on a
	// loaded machine.
	var cpu time.Duration
	run := func(verb string, c *chain) (time.Duration, error) {
		d0, derr := threadsCPU(sn.w.PID)
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", sn.n.NS.Name,
			"sh", "-c", `mount --bind "$0" /var/lib/cni && exec "$@"`,
			sn.n.CacheDir, env.Tool("cnitool"), verb, nets[c], c.pod.NS.Path)
		cmd.Env = append(os.Environ(), "CNI_PATH="+strings.Join(env.CNIPath(), string(os.PathListSeparator)),
			"NETCONFPATH="+dir, "CNI_IFNAME=eth0", "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=cnitool")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		if err != nil {
			return 0, fmt.Errorf("cnitool %s %s on %s: %w: %s", verb, nets[c], sn.n.Name, err, out.String())
		}
		d1, derr1 := threadsCPU(sn.w.PID)
		if derr != nil || derr1 != nil {
			return 0, fmt.Errorf("weftd CPU on %s: %v %v", sn.n.Name, derr, derr1)
		}
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime() + d1 - d0
		return d, nil
	}
	if err := os.MkdirAll("/var/lib/cni", 0o755); err != nil { // the bind mount's mount point
		return cnitoolFigures{}, err
	}
	chains := sn.chains()
	adds, cpus := map[*chain][]time.Duration{}, map[*chain][]time.Duration{}
	for i := -2; i < rounds; i++ { // two rounds of warm-up
		for k := range chains {
			c := chains[(i+2+k)%len(chains)]
			d, err := run("add", c)
			if err != nil {
				return cnitoolFigures{}, err
			}
			addCPU := cpu
			if _, err := run("del", c); err != nil {
				return cnitoolFigures{}, err
			}
			if i >= 0 {
				adds[c] = append(adds[c], d)
				cpus[c] = append(cpus[c], addCPU)
			}
		}
	}
	raw := map[string]Summary{}
	for _, c := range chains {
		raw[c.name] = Summarize(Ms(adds[c]))
		raw[c.name+" CPU"] = Summarize(Ms(cpus[c]))
	}
	return cnitoolFigures{
		weft:      Summarize(paired(adds[sn.weft], adds[sn.bare])),
		tuning:    Summarize(paired(adds[sn.tuning], adds[sn.bare])),
		weftCPU:   Summarize(paired(cpus[sn.weft], cpus[sn.bare])),
		tuningCPU: Summarize(paired(cpus[sn.tuning], cpus[sn.bare])),
		raw:       raw,
	}, nil
}

// withName is list as a conflist document named name.
func withName(list *libcni.NetworkConfigList, name string) map[string]any {
	var doc map[string]any
	_ = json.Unmarshal(list.Bytes, &doc)
	doc["name"] = name
	return doc
}

// p99Of turns the summary of paired differences into a row value whose
// median is their p99, so that the row's ratio compares p99s.
func p99Of(s Summary) Summary {
	return Summary{N: s.N, Median: s.P99, P99: s.P99, Min: s.Min, Max: s.Max}
}

func chainSummaries(nodes []*startupNode, f func(*chain) []time.Duration) map[string]Summary {
	out := map[string]Summary{}
	for _, sn := range nodes {
		for _, c := range sn.chains() {
			out[sn.n.Name+" "+c.name] = Summarize(Ms(f(c)))
		}
	}
	return out
}

// paired returns a[i]-b[i] in milliseconds.
func paired(a, b []time.Duration) []float64 {
	out := make([]float64, min(len(a), len(b)))
	for i := range out {
		out[i] = float64(a[i]-b[i]) / float64(time.Millisecond)
	}
	return out
}

// pluginPhases times what weft's ADD is made of, so that a slow figure 1
// says where the time goes: starting the binary (VERSION does nothing
// else), the whole ADD run by hand with the CNI environment, and the
// daemon's side alone (one API round trip with the state store's durable
// write), each next to tuning's equivalent.
func pluginPhases(ctx context.Context, env *harness.Env, n *harness.Node, o Options) (map[string]Summary, error) {
	iters := o.pick(100, 20)
	out := map[string]Summary{}
	prev := `{"cniVersion":"0.3.1","interfaces":[{"name":"cni0","mac":"02:00:00:00:00:01"},{"name":"veth1","mac":"02:00:00:00:00:02"},{"name":"eth0","mac":"02:00:00:00:00:03","sandbox":"/var/run/netns/x"}],"ips":[{"version":"4","address":"10.1.1.9/24","gateway":"10.1.1.1","interface":2}]}`
	weftConf := fmt.Sprintf(`{"cniVersion":"0.3.1","name":"cbr0","type":"weft","socket":%q,"spoolDir":%q,"prevResult":%s}`, n.Socket, n.SpoolDir, prev)
	runs := []struct {
		name, bin, cmd, stdin string
	}{
		{"weft VERSION (process start)", env.Bin("weft"), "VERSION", `{"cniVersion":"0.3.1"}`},
		{"tuning VERSION (process start)", env.Tool("tuning"), "VERSION", `{"cniVersion":"0.3.1"}`},
		{"weft ADD exec (start + socket round trip)", env.Bin("weft"), "ADD", weftConf},
		{"weft DEL exec", env.Bin("weft"), "DEL", weftConf},
	}
	for _, r := range runs {
		var ds []time.Duration
		for i := 0; i < iters; i++ {
			cmd := exec.CommandContext(ctx, r.bin)
			cmd.Env = append(os.Environ(), "CNI_COMMAND="+r.cmd, "CNI_CONTAINERID=phase-"+fmt.Sprint(i%4),
				"CNI_NETNS=/var/run/netns/x", "CNI_IFNAME=eth0", "CNI_PATH="+env.BinDir, "CNI_ARGS=K8S_POD_NAMESPACE=bench;K8S_POD_NAME=x")
			cmd.Stdin = strings.NewReader(r.stdin)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			t0 := time.Now()
			if err := cmd.Run(); err != nil {
				return out, fmt.Errorf("%s: %w: %s", r.name, err, stderr.String())
			}
			ds = append(ds, time.Since(t0))
		}
		out[r.name] = Summarize(Ms(ds))
	}
	// The daemon side alone, through the same client the plugin uses.
	c := client.New(n.Socket, 2*time.Second)
	var adds, dels []time.Duration
	for i := 0; i < iters; i++ {
		ev := api.Event{Verb: api.VerbAdd, ContainerID: fmt.Sprintf("phase-api-%d", i), IfName: "eth0", Network: "cbr0",
			PodNamespace: "bench", PodName: "x", IPs: []api.PodIP{{Address: "10.1.1.9/24", Gateway: "10.1.1.1"}},
			HostInterfaces: []string{"cni0"}, Time: time.Now()}
		t0 := time.Now()
		if err := c.Add(ctx, ev); err != nil {
			return out, fmt.Errorf("api add: %w", err)
		}
		t1 := time.Now()
		ev.Verb = api.VerbDel
		if err := c.Del(ctx, ev); err != nil {
			return out, fmt.Errorf("api del: %w", err)
		}
		adds, dels = append(adds, t1.Sub(t0)), append(dels, time.Since(t1))
	}
	out["daemon API add round trip (in-process client)"] = Summarize(Ms(adds))
	out["daemon API del round trip (in-process client)"] = Summarize(Ms(dels))
	return out, nil
}

// stateOnTmpfs points the daemon's stateDir at a fresh /dev/shm directory.
// Production keeps stateDir in /run/weft, a tmpfs on every systemd host;
// this machine's /run and /tmp are on disk, which would measure the disk
// instead of weft.
func stateOnTmpfs(env *harness.Env, cfg harness.WeftdConfig) error {
	shm, err := tmpfsDir(env)
	if err != nil {
		return err
	}
	cfg["stateDir"] = shm
	return nil
}

// tmpfsDir is a fresh directory in /dev/shm, removed with env.
func tmpfsDir(env *harness.Env) (string, error) {
	shm, err := os.MkdirTemp("/dev/shm", "weft-bench-")
	if err != nil {
		return "", fmt.Errorf("tmpfs state dir: %w", err)
	}
	env.Defer("dir "+shm, func() error { return os.RemoveAll(shm) })
	return shm, nil
}
