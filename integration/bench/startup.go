package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
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
	c, err := harness.NewCluster(env, u, harness.ClusterSpec{
		ID: "c1", Nodes: 1, PodCIDR: "10.1.0.0/16", ServiceCIDR: "10.101.0.0/16", NodeIPBase: "192.168.10.0",
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

// StartupCost is figure 1: ADD+DEL cycles through libcni for three chains
// in interleaved order; what a chained plugin adds is its chain's latency
// minus the bare chain's, paired per round so that load drifting during the
// run cancels out.
func StartupCost(ctx context.Context, env *harness.Env, o Options) ([]Row, error) {
	cycles := o.pick(300, 30)
	n, cfg, err := oneNode(env, harness.LayoutFlannel)
	if err != nil {
		return nil, err
	}
	// Row 1c repeats weft's chain with the state on disk.
	if err := stateOnTmpfs(env, cfg); err != nil {
		return nil, err
	}
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		return nil, err
	}
	base, tun, wft, err := conflists(n)
	if err != nil {
		return nil, err
	}
	var chains []*chain
	for _, c := range []struct {
		name string
		b    []byte
	}{{"bridge+host-local", base}, {"bridge+host-local+tuning", tun}, {"bridge+host-local+weft", wft}} {
		list, err := libcni.ConfListFromBytes(c.b)
		if err != nil {
			return nil, fmt.Errorf("conflist %s: %w", c.name, err)
		}
		pod, err := n.NewPod("bench", "startup-"+strings.ReplaceAll(c.name, "+", "-"))
		if err != nil {
			return nil, err
		}
		chains = append(chains, &chain{name: c.name, tag: fmt.Sprint(len(chains)), list: list, pod: pod})
	}
	cni := libcni.NewCNIConfigWithCacheDir(env.CNIPath(), n.CacheDir, nil)
	cycle := func(c *chain, i int, record bool) error {
		rt := &libcni.RuntimeConf{
			ContainerID: fmt.Sprintf("bench-%d-%s", i, c.tag),
			NetNS:       c.pod.NS.Path,
			IfName:      "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "bench"},
				{"K8S_POD_NAME", fmt.Sprintf("p%d", i)}},
		}
		return n.NS.Do(func(ns.NetNS) error {
			t0 := time.Now()
			if _, err := cni.AddNetworkList(ctx, c.list, rt); err != nil {
				return fmt.Errorf("%s ADD %d: %w", c.name, i, err)
			}
			t1 := time.Now()
			if err := cni.DelNetworkList(ctx, c.list, rt); err != nil {
				return fmt.Errorf("%s DEL %d: %w", c.name, i, err)
			}
			if record {
				c.add = append(c.add, t1.Sub(t0))
				c.del = append(c.del, time.Since(t1))
			}
			return nil
		})
	}
	// Warm-up: page cache, the bridge, the daemon's first reconcile.
	for i := 0; i < 5; i++ {
		for _, c := range chains {
			if err := cycle(c, 100000+i, false); err != nil {
				return nil, err
			}
		}
	}
	if _, err := w.WaitReady(ctx); err != nil {
		return nil, err
	}
	measure := func(chains []*chain, rounds int) error {
		for i := 0; i < rounds; i++ {
			// Rotate the order every round so no chain always runs first.
			for k := range chains {
				c := chains[(i+k)%len(chains)]
				if err := cycle(c, i, true); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := measure(chains, cycles); err != nil {
		return nil, err
	}
	// The daemon must have recorded exactly the attachments it was told
	// about: nothing left over after the DELs.
	st, err := client.New(n.Socket, 2*time.Second).Status(ctx)
	if err != nil {
		return nil, err
	}

	bare, tuning, weft := chains[0], chains[1], chains[2]
	addedWeft, addedTuning := paired(weft.add, bare.add), paired(tuning.add, bare.add)
	sw, st2 := Summarize(addedWeft), Summarize(addedTuning)
	// The p99 of what is added is the p99 of the chain minus the bare
	// chain's p99; the paired per-round differences have their own p99,
	// kept in Extra.
	bw, bt, bb := Summarize(Ms(weft.add)), Summarize(Ms(tuning.add)), Summarize(Ms(bare.add))
	phases, perr := pluginPhases(ctx, env, n, o)
	extra := map[string]any{
		"cycles": cycles, "order": "interleaved, rotated per round",
		"addMs":                  map[string]Summary{bare.name: bb, tuning.name: bt, weft.name: bw},
		"delMs":                  map[string]Summary{bare.name: Summarize(Ms(bare.del)), tuning.name: Summarize(Ms(tuning.del)), weft.name: Summarize(Ms(weft.del))},
		"pairedAddedP99":         map[string]float64{"weft": sw.P99, "tuning": st2.P99},
		"daemonAttachmentsAfter": st.Attachments,
		"pluginPhasesMs":         phases,
	}
	if perr != nil {
		extra["pluginPhasesError"] = perr.Error()
	}
	rowMed := Row{
		ID: "1a", Figure: "ADD latency added by the plugin, median", Unit: "ms",
		Weft: sw, RefName: "tuning", Ref: &st2,
		Goal:  &Goal{Text: "≤ 1.2× tuning and ≤ 3 ms", MaxRatio: 1.2, Max: 3},
		Extra: extra,
		Note:  "paired per round: chain ADD − bare bridge+host-local ADD; min/max are of the paired differences",
	}
	p99w := Summary{N: bw.N, Median: bw.P99 - bb.P99, P99: bw.P99 - bb.P99, Min: sw.Min, Max: sw.Max}
	p99t := Summary{N: bt.N, Median: bt.P99 - bb.P99, P99: bt.P99 - bb.P99, Min: st2.Min, Max: st2.Max}
	rowP99 := Row{
		ID: "1b", Figure: "ADD latency added by the plugin, p99", Unit: "ms",
		Weft: p99w, RefName: "tuning", Ref: &p99t,
		Note: "p99(chain ADD) − p99(bare ADD); no goal in the issue, reported for the tail",
	}
	rows := []Row{rowMed, rowP99}

	// 1c: the same weft chain with the state store on this machine's disk.
	if err := w.Stop(); err != nil {
		return rows, err
	}
	cfg["stateDir"] = n.StateDir
	if w, err = n.StartWeftd(ctx, cfg.MustYAML()); err != nil {
		return rows, err
	}
	if _, err := w.WaitReady(ctx); err != nil {
		return rows, err
	}
	diskBare := &chain{name: bare.name, tag: "d0", list: bare.list, pod: bare.pod}
	diskWeft := &chain{name: weft.name + " (state on disk)", tag: "d2", list: weft.list, pod: weft.pod}
	for i := 0; i < 3; i++ {
		if err := cycle(diskWeft, 100000+i, false); err != nil {
			return rows, err
		}
	}
	if err := measure([]*chain{diskBare, diskWeft}, max(cycles/3, 10)); err != nil {
		return rows, err
	}
	sd := Summarize(paired(diskWeft.add, diskBare.add))
	rows = append(rows, Row{
		ID: "1c", Figure: "ADD latency added by weft, state dir on disk", Unit: "ms",
		Weft: sd, RefName: "tuning (1a)", Ref: &st2,
		Goal: &Goal{Text: "≤ 1.2× tuning and ≤ 3 ms", MaxRatio: 1.2, Max: 3},
		Note: "stateDir on this machine's disk (/tmp) instead of tmpfs: every ADD waits for the state store's fsync (group commit)",
	})
	return rows, nil
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
// Production keeps stateDir in /run/weft, a tmpfs on every systemd host,
// where the state store's fsync is nearly free; this machine's /run and
// /tmp are on disk, which would measure the disk instead of weft.
func stateOnTmpfs(env *harness.Env, cfg harness.WeftdConfig) error {
	shm, err := os.MkdirTemp("/dev/shm", "weft-bench-")
	if err != nil {
		return fmt.Errorf("tmpfs state dir: %w", err)
	}
	env.Defer("dir "+shm, func() error { return os.RemoveAll(shm) })
	cfg["stateDir"] = shm
	return nil
}
