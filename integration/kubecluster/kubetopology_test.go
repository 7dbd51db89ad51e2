package kubecluster_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/kubecluster"
	"github.com/weft-net/weft/integration/scenario"
)

// TestE2EKubernetesTopology: two real clusters, weft from its manifests in
// topology: kubernetes mode (the ConfigMap's commented variant, applied as
// an operator would), its in-cluster client reaching the API server through
// the `kubernetes` Service's ClusterIP; the gateways and remotes only from
// Submariner Endpoint objects. Every weft pod Ready, the matrix between
// real pods, then a new kubelet joins c1: without any ConfigMap edit it is
// in the gateway's FDB and its pod reaches c2's pods and back.
func TestE2EKubernetesTopology(t *testing.T) {
	env, ctx, c1, c2 := e2ePair(t)
	start := time.Now()
	if err := kubecluster.PublishGateways(ctx, c1, c2); err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, c := range []*kubecluster.Cluster{c1, c2} {
		d, err := c.KubernetesDeployDir(deployDir)
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	if _, err := kubecluster.InstallWithApp(ctx, []*kubecluster.Cluster{c1, c2}, dirs); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING Endpoints + weft (topology: kubernetes) applied -> every weft pod and app pod Ready: %s", time.Since(start).Round(time.Millisecond))
	// weftd status as an operator reads it: the gateway comes from its
	// Endpoint, not from a file.
	for _, c := range []*kubecluster.Cluster{c1, c2} {
		ws := pods(ctx, t, c, "weft-system", "app.kubernetes.io/name=weft")
		if len(ws) != len(c.Nodes) {
			t.Fatalf("%s: weft pods %v, want one per node", c.ID, ws)
		}
		out, err := c.Kubectl(ctx, "--namespace=weft-system", "exec", ws[0].Name, "-c", "weftd", "--", "weftd", "status", "--json")
		if err != nil {
			t.Fatalf("weftd status in %s: %v", ws[0].Name, err)
		}
		if want := "Endpoint " + scenario.SubmarinerNamespace + "/" + c.ID + "-submariner-cable-"; !strings.Contains(out, want) {
			t.Fatalf("%s: weftd status on %s does not take the gateway from %s…:\n%s", c.ID, ws[0].Node, want, out)
		}
	}
	all, err := kubecluster.MatrixPods(ctx, c1, c2)
	if err != nil {
		t.Fatal(err)
	}
	table, errs := kubecluster.Matrix(ctx, all)
	t.Logf("connectivity matrix (TCP echo, real pods, topology: kubernetes):\n%s", table)
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("node-joins-without-configmap-edit", func(t *testing.T) {
		gw := c1.Nodes[0]
		start := time.Now()
		n, err := c1.AddNode(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING node %s joined (containerd, images, kubelet, Ready): %s", n.Name, time.Since(start).Round(time.Millisecond))
		// The Node object the kubelet registered is all weft learns from.
		took, err := scenario.WaitFDB(ctx, gw.Node, n.IP.String(), true, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING %s Ready -> in gateway %s's FDB: %s", n.Name, gw.Name, took.Round(time.Millisecond))
		if err := c1.ServeNewNodes(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING node joined -> weft and app pods Ready there: %s", time.Since(start).Round(time.Millisecond))
		var p *kubecluster.Pod
		for _, q := range pods(ctx, t, c1, "default", "app=app") {
			if q.Node == n.Name {
				p = &q
			}
		}
		if p == nil {
			t.Fatalf("no app pod on %s", n.Name)
		}
		pns := servePod(ctx, t, env, n, *p)
		var rows []string
		for _, d := range all {
			if d.Cluster != c2 {
				continue
			}
			for _, probe := range []struct {
				from, to string
				do       func() error
			}{
				{n.Name, d.Node, func() error { _, err := harness.ProbeTCP(ctx, pns, d.IP+":8080", []byte("join")); return err }},
				{d.Node, n.Name, func() error { _, err := harness.ProbeTCP(ctx, d.NS, p.IP+":8080", []byte("join")); return err }},
			} {
				res := "ok"
				if err := probe.do(); err != nil {
					res = "FAIL"
					t.Errorf("%s -> %s: %v", probe.from, probe.to, err)
				}
				rows = append(rows, fmt.Sprintf("%s -> %s: %s", probe.from, probe.to, res))
			}
		}
		t.Logf("new node's pod %s (%s) and c2's pods:\n%s", p.Name, p.IP, strings.Join(rows, "\n"))
	})
}
