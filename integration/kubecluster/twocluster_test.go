package kubecluster_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/kubecluster"
)

// TestE2ETwoClusters: two real clusters on one underlay, weft from its
// manifests in each (file topology, the ConfigMap edited per cluster), the
// connectivity matrix between their pods, then c1's weft rolled to a new
// image while a pod in c1 probes a pod in c2 across the gateways.
func TestE2ETwoClusters(t *testing.T) {
	_, ctx, c1, c2 := e2ePair(t)

	start := time.Now()
	// c1 applies the manifests as shipped (they describe c1); c2's
	// operator edits the ConfigMap first.
	c2Dir, err := c2.DeployDir(deployDir, c2.WeftTopology(c1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubecluster.InstallWithApp(ctx, []*kubecluster.Cluster{c1, c2}, []string{deployDir, c2Dir}); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING weft applied in both -> every weft pod and app pod Ready: %s", time.Since(start).Round(time.Millisecond))
	for _, c := range []*kubecluster.Cluster{c1, c2} {
		for _, p := range pods(ctx, t, c, "default", "app=app") {
			n := c.Node(p.Node)
			waitUntil(ctx, t, 10*time.Second, "attachment of "+p.Name, func() (bool, string) {
				got := attachedPods(t, n, "default")
				return slices.Contains(got, p.Name), fmt.Sprint(got)
			})
		}
	}
	all, err := kubecluster.MatrixPods(ctx, c1, c2)
	if err != nil {
		t.Fatal(err)
	}
	table, errs := kubecluster.Matrix(ctx, all)
	t.Logf("connectivity matrix (TCP echo, real pods):\n%s", table)
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("rolling-upgrade-c1-while-probing-c2", func(t *testing.T) {
		// From the pod on c1's non-gateway node: its traffic crosses weft's
		// node-to-gateway VXLAN, the cable and c2's host-gw.
		var src, dst kubecluster.MatrixPod
		for _, p := range all {
			if p.Node == "c1-n2" {
				src = p
			}
			if p.Node == "c2-n2" {
				dst = p
			}
		}
		if src.NS == nil || dst.NS == nil {
			t.Fatalf("no pods on c1-n2 and c2-n2: %v", all)
		}
		rollingUpgrade(ctx, t, c1, kubecluster.WeftRepo+":v0.1.1-e2e", src.NS, dst.IP+":8080")
	})
}
