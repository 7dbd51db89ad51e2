package kubecluster_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/kubecluster"
	"github.com/weft-net/weft/pkg/netnstest"
)

// c2Config is daemon/deploy/02-configmap.yaml's weft.yaml as the operator
// of c2 edits it: its own cluster, c1 as the remote.
const c2Config = `    cluster:
      id: c2
      podCIDRs: [10.2.0.0/16]
      serviceCIDRs: [10.102.0.0/16]
      gateway: c2-n1
      nodes:
        - {name: c2-n1, ip: 192.168.20.11}
        - {name: c2-n2, ip: 192.168.20.12}
    remotes:
      - id: c1
        podCIDRs: [10.1.0.0/16]
        serviceCIDRs: [10.101.0.0/16]
        gatewayIP: 192.168.10.11
`

// deployFor copies daemon/deploy/ with weft.yaml's cluster and remotes
// replaced by cfg (the shipped file's are c1's): what a user applies after
// editing the ConfigMap.
func deployFor(t *testing.T, cfg string) string {
	t.Helper()
	dir := t.TempDir()
	ents, err := os.ReadDir(deployDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(deployDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == "02-configmap.yaml" {
			s := string(b)
			i, j := strings.Index(s, "    cluster:\n"), strings.Index(s, "    cable:")
			if i < 0 || j < i {
				t.Fatal("02-configmap.yaml: no cluster ... cable block in weft.yaml")
			}
			b = []byte(s[:i] + cfg + s[j:])
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type clusterPod struct {
	c  *kubecluster.Cluster
	p  podInfo
	ns *netnstest.NS
}

// TestE2ETwoClusters: two real clusters on one underlay, weft from its
// manifests in each (file topology, the ConfigMap edited per cluster), the
// connectivity matrix between their pods, then c1's weft rolled to a new
// image while a pod in c1 probes a pod in c2 across the gateways.
func TestE2ETwoClusters(t *testing.T) {
	env := harness.NewTestEnv(t)
	if m := kubecluster.Missing(env); len(m) > 0 {
		if os.Getenv("WEFT_E2E") != "" {
			t.Fatalf("missing %v", m)
		}
		t.Skipf("missing %v (make e2e builds and installs them)", m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	start := time.Now()
	c1, err := kubecluster.New(ctx, env, kubecluster.Options{ID: "c1", Nodes: 2})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := kubecluster.New(ctx, env, kubecluster.Options{ID: "c2", Nodes: 2, Peer: c1,
		PodCIDR: "10.2.0.0/16", ServiceCIDR: "10.102.0.0/16", NodeIPBase: "192.168.20.0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING two clusters of 2 nodes up: %s", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	dirs := map[*kubecluster.Cluster]string{c1: deployDir, c2: deployFor(t, c2Config)}
	for _, c := range []*kubecluster.Cluster{c1, c2} {
		if _, err := c.Kubectl(ctx, "apply", "-f", dirs[c]); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*kubecluster.Cluster{c1, c2} {
		if err := c.WaitWeftInChain(ctx, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := c.API.KubectlWith(ctx, c.API.AdminKubeconfig, []byte(workload("app", len(c.Nodes))), "apply", "-f", "-"); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*kubecluster.Cluster{c1, c2} {
		if err := c.RolloutStatus(ctx, "weft-system", "daemonset/weft", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := c.RolloutStatus(ctx, "default", "deployment/app", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("TIMING weft applied in both -> every weft pod and app pod Ready: %s", time.Since(start).Round(time.Millisecond))

	var all []clusterPod
	for _, c := range []*kubecluster.Cluster{c1, c2} {
		for _, p := range pods(ctx, t, c, "default", "app=app") {
			n := c.Node(p.node)
			waitUntil(ctx, t, 10*time.Second, "attachment of "+p.name, func() (bool, string) {
				got := attachedPods(t, n, "default")
				return slices.Contains(got, p.name), fmt.Sprint(got)
			})
			pns, err := n.PodNS("default", p.name)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := harness.ServeTCPEcho(env, pns, p.ip+":8080"); err != nil {
				t.Fatal(err)
			}
			all = append(all, clusterPod{c, p, pns})
		}
	}
	// The matrix: every pod to every pod of the other cluster, by TCP.
	var b strings.Builder
	fmt.Fprintf(&b, "%-28s", "from \\ to")
	for _, d := range all {
		fmt.Fprintf(&b, " %-14s", d.c.ID+"/"+d.p.node)
	}
	b.WriteString("\n")
	for _, s := range all {
		fmt.Fprintf(&b, "%-28s", s.c.ID+"/"+s.p.node+" "+s.p.ip)
		for _, d := range all {
			if s.c == d.c {
				fmt.Fprintf(&b, " %-14s", "-")
				continue
			}
			if _, err := harness.ProbeTCP(ctx, s.ns, d.p.ip+":8080", []byte("matrix")); err != nil {
				fmt.Fprintf(&b, " %-14s", "FAIL")
				t.Errorf("%s %s (%s) -> %s %s (%s): %v", s.c.ID, s.p.name, s.p.ip, d.c.ID, d.p.name, d.p.ip, err)
				continue
			}
			fmt.Fprintf(&b, " %-14s", "ok")
		}
		b.WriteString("\n")
	}
	t.Logf("connectivity matrix (TCP echo, real pods):\n%s", b.String())
	if t.Failed() {
		t.FailNow()
	}

	t.Run("rolling-upgrade-c1-while-probing-c2", func(t *testing.T) {
		// From the pod on c1's non-gateway node: its traffic crosses weft's
		// node-to-gateway VXLAN, the cable and c2's host-gw.
		var src, dst clusterPod
		for _, p := range all {
			if p.c == c1 && p.p.node == "c1-n2" {
				src = p
			}
			if p.c == c2 && p.p.node == "c2-n2" {
				dst = p
			}
		}
		if src.ns == nil || dst.ns == nil {
			t.Fatalf("no pods on c1-n2 and c2-n2: %v", all)
		}
		rollingUpgrade(ctx, t, c1, kubecluster.WeftRepo+":v0.1.1-e2e", src.ns, dst.p.ip+":8080")
	})
}
