package reliability

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/client"
	"github.com/weft-net/weft/pkg/state"
)

// Promise 2a: kill -9 while remote CIDRs are being applied. Each round
// switches the configuration between two disjoint sets of RemoteCIDRs /24s
// (so every start has a large diff to apply), kills weftd at a random
// moment of that apply, restarts it and requires the node to converge to
// exactly the state a clean start produces: no duplicate rule, no leftover
// route or set element.
func TestCrashDuringApply(t *testing.T) {
	defer run.sum.TrackSkip(t, PCrash)() // its cases are subtests; a skip before them counts too
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) { crashDuringApply(t, backend) })
	}
}

func crashDuringApply(t *testing.T, backend string) {
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 240*time.Second)
	r := rng(t)
	sets := [2][]string{manyCIDRs(run.size.RemoteCIDRs, false), manyCIDRs(run.size.RemoteCIDRs, true)}
	n, cfgA := oneNode(t, env, nodeSpec{backend: backend, remoteCIDRs: sets[0]})
	cfgB := harness.WeftdConfig{}
	for k, v := range cfgA {
		cfgB[k] = v
	}
	cfgB["remotes"] = []any{map[string]any{
		"id": "c2", "podCIDRs": sets[1], "serviceCIDRs": []string{"10.102.0.0/16"}, "gatewayIP": "192.168.20.11",
	}}
	cfgs := [2][]byte{cfgA.MustYAML(), cfgB.MustYAML()}
	if _, err := n.RunPod(ctx, "default", "anchor"); err != nil {
		t.Fatal(err)
	}

	// Clean references: one start per set, with no kill.
	var refs [2]string
	var applyTime time.Duration
	for i := range cfgs {
		start := time.Now()
		w, err := n.StartWeftd(ctx, cfgs[i])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		applyTime = max(applyTime, time.Since(start))
		time.Sleep(300 * time.Millisecond)
		refs[i] = snapshot(n, "cni0")
		checkRemoteState(t, n, backend, refs[i], sets[i], sets[1-i])
		if err := w.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("clean apply of %d CIDRs: %v (seed %d)", run.size.RemoteCIDRs, applyTime.Round(time.Millisecond), run.seed)

	var worst time.Duration
	for k := 0; k < run.size.ApplyKills; k++ {
		ok := t.Run(fmt.Sprintf("kill-%d", k), func(t *testing.T) {
			defer run.sum.Track(t, PCrash)()
			i := (k + 1) % 2 // the other set than the one in place
			w, err := n.StartWeftd(ctx, cfgs[i])
			if err != nil {
				t.Fatal(err)
			}
			delay := time.Duration(r.Int64N(int64(applyTime)))
			time.Sleep(delay)
			killed := time.Now()
			if err := w.Kill(); err != nil {
				t.Fatal(err)
			}
			w, err = n.StartWeftd(ctx, cfgs[i])
			if err != nil {
				t.Fatal(err)
			}
			cctx := ctxFor(t, 30*time.Second)
			d, err := converge(cctx, w, refs[i], "cni0", killed)
			if err != nil {
				t.Fatalf("killed %v after start: %v", delay, err)
			}
			t.Logf("killed %v after start; converged %v after the kill", delay.Round(time.Millisecond), d.Round(time.Millisecond))
			worst = max(worst, d)
			if err := w.Stop(); err != nil {
				t.Fatal(err)
			}
		})
		if !ok {
			break
		}
	}
	run.sum.Figure(PCrash, "%s apply of %d CIDRs: %d kills, worst converge %s", backend, run.size.RemoteCIDRs, run.size.ApplyKills, Ms(worst))
}

// checkRemoteState asserts the clean reference itself is right: every
// remote CIDR routed exactly once and present in the filter's remote set,
// none of the other set's.
func checkRemoteState(t *testing.T, n *harness.Node, backend, ref string, want, notWant []string) {
	t.Helper()
	routes, err := n.Exec("ip", "route", "show", "table", "240")
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, l := range strings.Split(routes, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			count[f[0]]++
		}
	}
	var members string
	if backend == "nftables" {
		members, err = n.Exec("nft", "list", "set", "ip", "weft", "remote")
	} else {
		members, err = n.Exec("ipset", "list", "weft-remote")
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range want {
		if count[c] != 1 {
			t.Fatalf("route %s present %d times in table 240, want 1", c, count[c])
		}
		if !strings.Contains(members, c) {
			t.Fatalf("%s missing from the remote set", c)
		}
	}
	for _, c := range notWant[:10] {
		if count[c] != 0 || strings.Contains(members, c) {
			t.Fatalf("%s of the other configuration left behind", c)
		}
	}
	if len(count) != len(want)+1 { // + the remote service CIDR
		t.Fatalf("table 240 holds %d destinations, want %d", len(count), len(want)+1)
	}
}

// Promise 2b: kill -9 at random moments while pods are attached and
// detached concurrently (failPolicy open: the plugin spools while weftd is
// away). Afterwards the daemon knows exactly the pods still attached, and
// no attachment recorded before a kill is lost.
func TestCrashDuringChurn(t *testing.T) {
	defer run.sum.Track(t, PCrash)()
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 240*time.Second)
	r := rng(t)
	n, cfg := oneNode(t, env, nodeSpec{cni: harness.CNIOptions{WeftOptions: map[string]any{"timeout": "1s"}}})
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	total := run.size.Pods
	var (
		mu      sync.Mutex
		live    = map[string]*harness.Pod{}
		failed  atomic.Int64
		done    atomic.Bool
		firstEr error
	)
	work := make(chan int)
	var wg sync.WaitGroup
	for range run.size.InFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				p, err := n.NewPod("default", fmt.Sprintf("crash-%d", i))
				if err == nil {
					_, err = n.AttachLibcni(ctx, p)
				}
				if err == nil && i%3 != 0 { // two in three are detached again
					err = n.DetachLibcni(ctx, p)
					p = nil
				}
				mu.Lock()
				if err != nil {
					failed.Add(1)
					if firstEr == nil {
						firstEr = err
					}
				} else if p != nil {
					live[p.ContainerID] = p
				}
				mu.Unlock()
			}
		}()
	}
	var killsDone atomic.Bool
	fed := atomic.Int64{}
	go func() {
		// At least total pods, and on until every kill has happened.
		for i := 0; i < total || (!killsDone.Load() && i < 20*total); i++ {
			work <- i
			fed.Add(1)
		}
		close(work)
		wg.Wait()
		done.Store(true)
	}()

	kills := 0
	var restarts []time.Duration
	for kills < run.size.ChurnKills && !done.Load() {
		time.Sleep(time.Duration(100+r.IntN(400)) * time.Millisecond)
		if err := w.Kill(); err != nil {
			t.Fatal(err)
		}
		kills++
		time.Sleep(time.Duration(r.IntN(500)) * time.Millisecond) // away for a while
		start := time.Now()
		if w, err = n.StartWeftd(ctx, cfg.MustYAML()); err != nil {
			t.Fatal(err)
		}
		restarts = append(restarts, time.Since(start))
	}
	killsDone.Store(true)
	for !done.Load() {
		time.Sleep(50 * time.Millisecond)
	}
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d verbs failed during kills (first: %v)", f, firstEr)
	}
	if kills < run.size.ChurnKills {
		t.Errorf("churn ended after %d kills, want %d: too few pods for the kills", kills, run.size.ChurnKills)
	}
	want := len(live)
	wctx := ctxFor(t, 30*time.Second)
	// Events spooled while the last weftd was still replaying at start-up
	// are drained by its watcher shortly after: wait for an empty spool.
	st, err := w.WaitFor(wctx, func(s api.Status) bool {
		pending, _ := filepath.Glob(filepath.Join(n.SpoolDir, "*.json"))
		return s.Ready && s.Attachments == want && len(pending) == 0
	})
	if err != nil {
		t.Fatalf("attachments after %d kills: %d, want %d (%v); records:\n%s", kills, st.Attachments, want, err, extraRecords(n, live))
	}
	cl := client.New(n.Socket, 2*time.Second)
	for id := range live {
		resp, err := cl.Check(ctx, api.CheckRequest{ContainerID: id, IfName: harness.PodIfName})
		if err != nil || !resp.Known {
			t.Fatalf("attached pod %s unknown after kills: %+v %v\n%s\nextra:\n%s", id, resp, err, mentions(n, id), extraRecords(n, live))
		}
	}
	// A last kill: the durable record alone must hold them all.
	if err := w.Kill(); err != nil {
		t.Fatal(err)
	}
	if w, err = n.StartWeftd(ctx, cfg.MustYAML()); err != nil {
		t.Fatal(err)
	}
	if st, err = w.Status(ctx); err != nil || st.Attachments != want {
		t.Fatalf("after the final restart: attachments %d (%v), want %d", st.Attachments, err, want)
	}
	run.sum.Figure(PCrash, "churn of %d pods: %d kills survived, %d attachments exact", fed.Load(), kills+1, want)
}

// extraRecords names the recorded attachments that are not live pods, with
// the weftd log lines that mention them (for a failure message).
func extraRecords(n *harness.Node, live map[string]*harness.Pod) string {
	c, err := state.Read(n.StateDir)
	if err != nil {
		return err.Error()
	}
	out := c.Problems
	for _, a := range c.Attachments {
		if live[a.ContainerID] != nil {
			continue
		}
		out = append(out, "extra "+a.ContainerID, mentions(n, a.ContainerID))
	}
	return strings.Join(out, "\n")
}

// mentions returns the weftd and plugin log lines naming id, with the
// daemon's start marks for orientation.
func mentions(n *harness.Node, id string) string {
	logb, _ := os.ReadFile(n.WeftdLogPath())
	pl, _ := os.ReadFile(n.PluginLogPath())
	var out []string
	for _, l := range strings.Split(string(logb)+string(pl), "\n") {
		if strings.Contains(l, id) || strings.Contains(l, "=== harness") || strings.Contains(l, "spool") && !strings.Contains(l, "plugin=weft") {
			out = append(out, "  "+l)
		}
	}
	return strings.Join(out, "\n")
}
