package kubecluster_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/kubecluster"
	"github.com/weft-net/weft/pkg/netnstest"
)

const deployDir = "../../daemon/deploy/"

type podInfo = kubecluster.Pod

func pods(ctx context.Context, t *testing.T, c *kubecluster.Cluster, ns, selector string) []podInfo {
	t.Helper()
	ps, err := c.Pods(ctx, ns, selector)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func attachedPods(t *testing.T, n *kubecluster.Node, ns string) []string {
	t.Helper()
	as, err := n.Attachments()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range as {
		if a.PodNamespace == ns {
			names = append(names, a.PodName)
		}
	}
	slices.Sort(names)
	return names
}

// servePod waits until weft on n has p's attachment and runs a TCP echo on
// p's address in its netns, which it returns.
func servePod(ctx context.Context, t *testing.T, env *harness.Env, n *kubecluster.Node, p kubecluster.Pod) *netnstest.NS {
	t.Helper()
	waitUntil(ctx, t, 10*time.Second, "attachment of "+p.Name, func() (bool, string) {
		got := attachedPods(t, n, "default")
		return slices.Contains(got, p.Name), fmt.Sprint(got)
	})
	pns, err := n.PodNS("default", p.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := harness.ServeTCPEcho(env, pns, p.IP+":8080"); err != nil {
		t.Fatal(err)
	}
	return pns
}

func waitUntil(ctx context.Context, t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	last := ""
	for {
		ok, s := cond()
		if ok {
			return
		}
		last = s
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %s; last: %s", what, limit, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// rollingUpgrade rolls c's weft DaemonSet to tag (built from bin/ and
// imported on every node) while a TCP probe runs from src to dst every
// 100 ms, pods of a second Deployment are created and deleted, and every
// conflist is read every 20 ms: no probe may be lost, no sandbox fail, and
// weft never be missing from a chain.
func rollingUpgrade(ctx context.Context, t *testing.T, c *kubecluster.Cluster, tag string, src *netnstest.NS, dst string) {
	t.Helper()
	img, err := c.BuildWeftImage(tag)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if err := n.ImportImage(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := harness.ProbeTCP(ctx, src, dst, []byte("probe")); err != nil {
		t.Fatalf("probe before the roll: %v", err)
	}
	rollCtx, stopRoll := context.WithCancel(ctx)
	defer stopRoll()
	type result struct{ probes, lost int }
	probeDone := make(chan result, 1)
	go func() {
		var r result
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for rollCtx.Err() == nil {
			r.probes++
			pctx, cancel := context.WithTimeout(rollCtx, time.Second)
			if _, err := harness.ProbeTCP(pctx, src, dst, []byte("probe")); err != nil && rollCtx.Err() == nil {
				r.lost++
			}
			cancel()
			<-tick.C
		}
		probeDone <- r
	}()
	watchDone := make(chan []string, 1)
	go func() {
		var missing []string
		for rollCtx.Err() == nil {
			for _, n := range c.Nodes {
				types, err := n.ConflistPlugins()
				if err == nil && (len(types) == 0 || types[len(types)-1] != "weft") {
					missing = append(missing, fmt.Sprintf("%s %s %v", time.Now().Format("15:04:05.000"), n.Name, types))
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		watchDone <- missing
	}()
	if err := c.Apply(ctx, kubecluster.Workload("churn", 0)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.Kubectl(ctx, "--namespace=weft-system", "set", "image", "daemonset/weft",
		"install-cni="+tag, "weftd="+tag, "install-cni-watch="+tag); err != nil {
		t.Fatal(err)
	}
	churnErr := make(chan error, 1)
	go func() {
		// Pods created and deleted while the DaemonSet rolls.
		for i := 1; rollCtx.Err() == nil; i++ {
			if _, err := c.Kubectl(rollCtx, "--namespace=default", "scale", "deployment/churn", fmt.Sprintf("--replicas=%d", i%(len(c.Nodes)+1))); err != nil && rollCtx.Err() == nil {
				churnErr <- err
				return
			}
			time.Sleep(time.Second)
		}
		churnErr <- nil
	}()
	rollErr := c.RolloutStatus(ctx, "weft-system", "daemonset/weft", 3*time.Minute)
	took := time.Since(start)
	stopRoll()
	r := <-probeDone
	missing := <-watchDone
	if err := <-churnErr; err != nil {
		t.Errorf("churn: %v", err)
	}
	if rollErr != nil {
		t.Fatal(rollErr)
	}
	t.Logf("TIMING %s: rolling upgrade of %d nodes to %s: %s; probes %s -> %s: %d, lost %d", c.ID, len(c.Nodes), tag, took.Round(time.Millisecond), src.Name, dst, r.probes, r.lost)
	if r.lost > 0 {
		t.Errorf("%d of %d probes lost during the rolling upgrade", r.lost, r.probes)
	}
	if len(missing) > 0 {
		t.Errorf("weft missing from a conflist during the roll: %v", missing)
	}
	for _, p := range pods(ctx, t, c, "weft-system", "app.kubernetes.io/name=weft") {
		out, err := c.Kubectl(ctx, "--namespace=weft-system", "get", "pod", p.Name, "-o", "jsonpath={.spec.containers[*].image}")
		if err != nil || strings.Count(out, tag) != 2 {
			t.Errorf("weft pod %s images %q (%v), want %s", p.Name, out, err, tag)
		}
	}
	out, _ := c.Kubectl(ctx, "--namespace=default", "get", "events", "--field-selector=reason=FailedCreatePodSandBox", "-o", "name")
	if strings.TrimSpace(out) != "" {
		t.Errorf("pod sandboxes failed during the roll: %s", out)
	}
	// Pods created while their node's weftd was being replaced were
	// spooled by the plugin and replayed: weftd knows every one.
	if err := c.RolloutStatus(ctx, "default", "deployment/churn", time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods(ctx, t, c, "default", "app=churn") {
		n := c.Node(p.Node)
		waitUntil(ctx, t, 10*time.Second, "attachment of "+p.Name+" created during the roll", func() (bool, string) {
			got := attachedPods(t, n, "default")
			return slices.Contains(got, p.Name), fmt.Sprint(got)
		})
	}
	if _, err := c.Kubectl(ctx, "--namespace=default", "delete", "deployment/churn", "--wait=true"); err != nil {
		t.Fatal(err)
	}
}

// readmeUninstall returns the kubectl commands of the README's Uninstall
// block, paths made relative to this package: the test runs what users are
// told to run.
func readmeUninstall(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "**Uninstall**")
	if ok {
		_, rest, ok = strings.Cut(rest, "```sh\n")
	}
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README: no sh block after **Uninstall**")
	}
	var cmds [][]string
	for _, l := range strings.Split(strings.TrimSpace(block), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "kubectl" {
			t.Fatalf("README uninstall line %q: want a kubectl command", l)
		}
		for i := range f {
			if strings.HasPrefix(f[i], "daemon/deploy/") {
				f[i] = "../../" + f[i]
			}
		}
		cmds = append(cmds, f[1:])
	}
	return cmds
}

// e2eEnv is the test's harness and a context that ends before the test
// binary's timeout. The clusters run under make e2e (WEFT_E2E set), where
// a missing tool fails the test; make test's ./integration/... skips them
// (CI runs make e2e right after).
func e2eEnv(t *testing.T) (*harness.Env, context.Context) {
	if os.Getenv("WEFT_E2E") == "" {
		t.Skip("real clusters: run by make e2e (WEFT_E2E=1)")
	}
	env := harness.NewTestEnv(t)
	if m := kubecluster.Missing(env); len(m) > 0 {
		t.Fatalf("missing %v (make image kubetools tools; apt-get install containerd runc)", m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	return env, ctx
}

// TestE2E is weft on a real cluster: containerd and kubelet on every node,
// weft installed by `kubectl apply -f daemon/deploy/`, application pods from
// a Deployment, then removed as the README says.
func TestE2E(t *testing.T) {
	env, ctx := e2eEnv(t)
	testStart := time.Now()

	c, err := kubecluster.New(ctx, env, kubecluster.Options{ID: "c1", Nodes: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING control plane up (etcd, kube-apiserver, controller-manager, scheduler): %s", c.ControlPlaneUp.Round(time.Millisecond))
	t.Logf("TIMING %d nodes Ready (containerd, images, kubelet): %s", len(c.Nodes), c.NodesUp.Round(time.Millisecond))

	t.Run("install", func(t *testing.T) {
		start := time.Now()
		if _, err := c.Kubectl(ctx, "apply", "-f", deployDir); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitWeftInChain(ctx, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING kubectl apply -f daemon/deploy/ -> weft last in every conflist: %s", time.Since(start).Round(time.Millisecond))
		for _, n := range c.Nodes {
			if _, err := os.Stat(n.CNIBin + "/weft"); err != nil {
				t.Errorf("node %s: plugin not installed: %v", n.Name, err)
			}
		}
		// weftd is Ready once it knows the node's CNI interface, which the
		// bridge plugin creates with the node's first pod: the
		// application comes now, as onto any cluster.
		if err := c.Apply(ctx, kubecluster.Workload("app", len(c.Nodes))); err != nil {
			t.Fatal(err)
		}
		if err := c.RolloutStatus(ctx, "weft-system", "daemonset/weft", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING kubectl apply -f daemon/deploy/ -> every weft pod Ready: %s", time.Since(start).Round(time.Millisecond))
		ws := pods(ctx, t, c, "weft-system", "app.kubernetes.io/name=weft")
		if len(ws) != len(c.Nodes) {
			t.Fatalf("weft pods %v, want one on each of %d nodes", ws, len(c.Nodes))
		}
		for _, n := range c.Nodes {
			types, err := n.ConflistPlugins()
			if err != nil {
				t.Fatal(err)
			}
			if len(types) < 2 || types[len(types)-1] != "weft" {
				t.Errorf("node %s: conflist chain %v, want weft last", n.Name, types)
			}
		}
		// weftd status as an operator reads it: through kubectl exec.
		out, err := c.Kubectl(ctx, "--namespace=weft-system", "exec", ws[0].Name, "-c", "weftd", "--", "weftd", "status")
		if err != nil {
			t.Fatalf("weftd status in %s: %v", ws[0].Name, err)
		}
		t.Logf("weftd status on %s:\n%s", ws[0].Node, out)
		if !strings.Contains(out, "  ready  ") || strings.Contains(out, "NOT READY") {
			t.Errorf("weftd status does not say ready:\n%s", out)
		}
		// The image carries what packetFilter iptables execs: both
		// flavours read the node's (namespace's) tables from the pod.
		for _, argv := range [][]string{{"iptables-nft-save", "-t", "nat"}, {"iptables-legacy-save"}} {
			args := append([]string{"--namespace=weft-system", "exec", ws[0].Name, "-c", "weftd", "--"}, argv...)
			if out, err := c.Kubectl(ctx, args...); err != nil {
				t.Errorf("%s in the weftd container: %v\n%s", argv[0], err, out)
			}
		}
	})
	if t.Failed() {
		return
	}

	t.Run("pods-attach-and-DEL", func(t *testing.T) {
		if err := c.RolloutStatus(ctx, "default", "deployment/app", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		ps := pods(ctx, t, c, "default", "app=app")
		for _, p := range ps {
			// The pod is reachable from its node and, over the host-gw
			// routes, from the other nodes.
			servePod(ctx, t, env, c.Node(p.Node), p)
			for _, m := range c.Nodes {
				if _, err := harness.ProbeTCP(ctx, m.NS, p.IP+":8080", []byte("weft e2e")); err != nil {
					t.Errorf("%s -> pod %s (%s on %s): %v", m.Name, p.Name, p.IP, p.Node, err)
				}
			}
		}
		victim := ps[0]
		start := time.Now()
		if _, err := c.Kubectl(ctx, "--namespace=default", "delete", "pod", victim.Name, "--wait=false"); err != nil {
			t.Fatal(err)
		}
		n := c.Node(victim.Node)
		waitUntil(ctx, t, 30*time.Second, "DEL of "+victim.Name+" reaching weftd", func() (bool, string) {
			got := attachedPods(t, n, "default")
			return !slices.Contains(got, victim.Name), fmt.Sprint(got)
		})
		t.Logf("TIMING pod deletion -> weftd attachment gone (DEL): %s", time.Since(start).Round(time.Millisecond))
		if err := c.RolloutStatus(ctx, "default", "deployment/app", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("kubelet-restart-no-duplicates", func(t *testing.T) {
		n := c.Nodes[len(c.Nodes)-1]
		before := attachedPods(t, n, "default")
		all, err := n.Attachments()
		if err != nil {
			t.Fatal(err)
		}
		if err := n.StopKubelet(); err != nil {
			t.Fatal(err)
		}
		if err := n.StartKubelet(ctx); err != nil {
			t.Fatal(err)
		}
		// Let the restarted kubelet sync every pod once (syncFrequency 10s).
		time.Sleep(12 * time.Second)
		after, err := n.Attachments()
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != len(all) || !slices.Equal(attachedPods(t, n, "default"), before) {
			t.Errorf("node %s: attachments before kubelet restart %d %v, after %d %v", n.Name, len(all), before, len(after), attachedPods(t, n, "default"))
		}
		seen := map[string]bool{}
		for _, a := range after {
			k := a.PodNamespace + "/" + a.PodName
			if seen[k] {
				t.Errorf("node %s: pod %s attached twice", n.Name, k)
			}
			seen[k] = true
		}
	})

	t.Run("primary-CNI-rewrites-conflist", func(t *testing.T) {
		// flannel and Calico rewrite their conflist on every restart,
		// dropping chained entries: install-cni-watch puts weft back.
		for _, n := range c.Nodes {
			start := time.Now()
			if err := n.WriteConflist(harness.CNIOptions{Layout: harness.LayoutFlannel}); err != nil {
				t.Fatal(err)
			}
			waitUntil(ctx, t, 5*time.Second, "weft back in "+n.Name+"'s conflist", func() (bool, string) {
				types, err := n.ConflistPlugins()
				return err == nil && len(types) > 1 && types[len(types)-1] == "weft", fmt.Sprint(types, err)
			})
			took := time.Since(start)
			t.Logf("TIMING %s: conflist rewritten without weft -> weft back: %s", n.Name, took.Round(time.Millisecond))
			if took > time.Second {
				t.Errorf("%s: weft back in the chain after %s, want within 1 s", n.Name, took)
			}
		}
	})

	t.Run("node-joins", func(t *testing.T) {
		// topology: file lists the nodes: the operator adds the new one to
		// the ConfigMap, then the node joins.
		cm, err := os.ReadFile(deployDir + "02-configmap.yaml")
		if err != nil {
			t.Fatal(err)
		}
		last := "        - {name: c1-n2, ip: 192.168.10.12}\n"
		if !strings.Contains(string(cm), last) {
			t.Fatalf("02-configmap.yaml no longer lists %q", last)
		}
		cm = []byte(strings.Replace(string(cm), last, last+"        - {name: c1-n3, ip: 192.168.10.13}\n", 1))
		if err := c.Apply(ctx, cm); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		n, err := c.AddNode(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING node %s joined (containerd, images, kubelet, Ready): %s", n.Name, time.Since(start).Round(time.Millisecond))
		if err := c.ServeNewNodes(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING node joined -> weft pod Ready there: %s", time.Since(start).Round(time.Millisecond))
		ws := pods(ctx, t, c, "weft-system", "app.kubernetes.io/name=weft")
		if !slices.ContainsFunc(ws, func(p podInfo) bool { return p.Node == n.Name }) {
			t.Fatalf("no weft pod on %s: %v", n.Name, ws)
		}
		for _, p := range pods(ctx, t, c, "default", "app=app") {
			if p.Node == n.Name {
				waitUntil(ctx, t, 10*time.Second, "attachment of "+p.Name, func() (bool, string) {
					got := attachedPods(t, n, "default")
					return slices.Contains(got, p.Name), fmt.Sprint(got)
				})
			}
		}
	})
	if t.Failed() {
		return
	}

	t.Run("rolling-upgrade", func(t *testing.T) {
		ps := pods(ctx, t, c, "default", "app=app")
		if len(ps) < 2 {
			t.Fatalf("app pods %v", ps)
		}
		src, err := c.Node(ps[0].Node).PodNS("default", ps[0].Name)
		if err != nil {
			t.Fatal(err)
		}
		dstNS, err := c.Node(ps[1].Node).PodNS("default", ps[1].Name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := harness.ServeTCPEcho(env, dstNS, ps[1].IP+":8081"); err != nil {
			t.Fatal(err)
		}
		rollingUpgrade(ctx, t, c, kubecluster.WeftRepo+":v0.1.1-e2e", src, ps[1].IP+":8081")
	})
	if t.Failed() {
		return
	}

	t.Run("uninstall", func(t *testing.T) {
		start := time.Now()
		// README "Uninstall", verbatim.
		for _, args := range readmeUninstall(t) {
			if _, err := c.Kubectl(ctx, args...); err != nil {
				t.Fatalf("README uninstall step: %v\n%s", err, c.Describe(ctx, "weft-system"))
			}
			if slices.Contains(args, "rollout") {
				for _, p := range pods(ctx, t, c, "weft-system", "app.kubernetes.io/name=weft-uninstall") {
					out, _ := c.Kubectl(ctx, "--namespace=weft-system", "logs", p.Name, "-c", "cleanup")
					t.Logf("weftd cleanup on %s:\n%s", p.Node, strings.TrimSpace(out))
				}
			}
		}
		t.Logf("TIMING uninstall (README's four commands): %s", time.Since(start).Round(time.Millisecond))
		for _, n := range c.Nodes {
			left, err := n.WeftLeftovers()
			if err != nil {
				t.Fatal(err)
			}
			if len(left) > 0 {
				t.Errorf("node %s: weft left behind: %v", n.Name, left)
			}
		}
		// Pods still start and stop without weft.
		old := pods(ctx, t, c, "default", "app=app")
		if _, err := c.Kubectl(ctx, "--namespace=default", "delete", "pods", "-l", "app=app", "--wait=true", "--timeout=1m"); err != nil {
			t.Fatal(err)
		}
		if err := c.RolloutStatus(ctx, "default", "deployment/app", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		now := pods(ctx, t, c, "default", "app=app")
		if len(now) != len(c.Nodes) {
			t.Fatalf("after uninstall: pods %v, want %d", now, len(c.Nodes))
		}
		for i := range now {
			for _, o := range old {
				if now[i].Name == o.Name {
					t.Errorf("pod %s not replaced", o.Name)
				}
			}
		}
		if _, err := c.Kubectl(ctx, "delete", "deployment", "app", "--namespace=default", "--wait=true", "--timeout=1m"); err != nil {
			t.Fatal(err)
		}
		waitUntil(ctx, t, time.Minute, "app pods gone", func() (bool, string) {
			out, _ := c.Kubectl(ctx, "--namespace=default", "get", "pods", "-o", "name")
			return strings.TrimSpace(out) == "", out
		})
	})
	t.Logf("TIMING whole test: %s", time.Since(testStart).Round(time.Millisecond))
}

// e2ePair is the start of every two-cluster test: two real clusters of two
// nodes each on one underlay.
func e2ePair(t *testing.T) (*harness.Env, context.Context, *kubecluster.Cluster, *kubecluster.Cluster) {
	env, ctx := e2eEnv(t)
	start := time.Now()
	c1, c2, err := kubecluster.NewPair(ctx, env, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING two clusters of 2 nodes up: %s", time.Since(start).Round(time.Millisecond))
	return env, ctx, c1, c2
}
