package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/scenario"
	"github.com/weft-net/weft/pkg/netnstest"
)

const (
	// resync is weftd's resyncInterval in this test: drift must be
	// repaired within it (plus driftMargin).
	resync      = 2 * time.Second
	driftMargin = 2 * time.Second
	// moveBudget is how long a gateway move may take, config write to a
	// green matrix.
	moveBudget = 5 * time.Second
)

// TestTwoClusters runs the end-to-end scenario once per packet-filter
// backend; the checks are sequential subtests on one scenario because
// building it is the expensive part, and the later checks (gateway move,
// drift, cleanup) start from the state the earlier ones verified.
func TestTwoClusters(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) { testTwoClusters(t, backend) })
	}
}

func testTwoClusters(t *testing.T, backend string) {
	env := harness.NewTestEnv(t)
	if !env.HasBin("weftd") || !env.HasBin("weft") {
		t.Skipf("weft binaries not built in %s (make build)", env.BinDir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()

	s, err := scenario.Build(ctx, env, scenario.Options{Backend: backend, ResyncInterval: resync})
	if err != nil {
		t.Fatal(err)
	}
	dumpOnFailure(t, s)
	readyCtx, readyCancel := context.WithTimeout(ctx, 20*time.Second)
	took, err := s.WaitAllReady(readyCtx)
	readyCancel()
	if err != nil {
		t.Fatalf("weftd not ready everywhere: %v", err)
	}
	t.Logf("all %d weftd ready %s after start", len(s.Members), took.Round(time.Millisecond))
	sts, err := s.Statuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		if st.PacketFilter != backend {
			t.Fatalf("%s runs packet filter %q, want %q", st.Node, st.PacketFilter, backend)
		}
	}

	t.Run("pod-matrix", func(t *testing.T) { checkPodMatrix(ctx, t, s) })
	t.Run("host-network", func(t *testing.T) { checkHostNetwork(ctx, t, s) })
	t.Run("gateway-move", func(t *testing.T) { checkGatewayMove(ctx, t, s) })
	t.Run("drift", func(t *testing.T) { checkDrift(ctx, t, s, backend) })
	t.Run("cleanup", func(t *testing.T) { checkCleanup(ctx, t, s, backend) })
}

// Every pod reaches every remote pod, both directions, for every
// (gateway, non-gateway) x (gateway, non-gateway) pair, and the remote pod
// sees the original pod IP although the simulated CNI masquerades
// everything that leaves the cluster.
func checkPodMatrix(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	for _, m := range s.Members {
		out, err := m.Node.Exec("iptables-save", "-t", "nat")
		if err != nil || !strings.Contains(out, "-s "+m.Cluster.PodCIDR.String()+" ! -d "+m.Cluster.PodCIDR.String()+" -j MASQUERADE") {
			t.Fatalf("%s: the simulated CNI's masquerade is not in place (%v):\n%s", m.Node.Name, err, out)
		}
	}
	// Control: the same pods reaching something outside both clusters'
	// pod CIDRs (a node's underlay address) are masqueraded, so the
	// original source in the matrix is weft's doing.
	c1pod, c2node := s.Member("c1-n1"), s.Member("c2-n1").Node
	srv, err := harness.ServeTCPEcho(s.Env, c2node.NS, netip.AddrPortFrom(c2node.IP, 7001).String())
	if err != nil {
		t.Fatal(err)
	}
	if src, err := harness.DialTCP(ctx, c1pod.Pod.NS, srv.Addr.String(), []byte("control")); err != nil || src != c1pod.Node.IP {
		t.Errorf("control: pod %s -> node %s: source %s (%v), want the masqueraded %s", c1pod.Pod.IP, srv.Addr, src, err, c1pod.Node.IP)
	}
	_ = srv.Close()

	pairs := map[string]int{}
	for _, p := range s.Matrix(ctx) {
		if p.Kind != scenario.SourcePod {
			continue
		}
		pairs[fmt.Sprintf("%s %s -> %s", p.SrcCluster, p.SrcRole, p.DstRole)]++
		if !p.OK {
			t.Error(p)
		}
	}
	for _, c := range []string{"c1", "c2"} {
		for _, from := range []string{scenario.RoleGateway, scenario.RoleNonGateway} {
			for _, to := range []string{scenario.RoleGateway, scenario.RoleNonGateway} {
				if k := fmt.Sprintf("%s %s -> %s", c, from, to); pairs[k] == 0 {
					t.Errorf("matrix has no probe %s", k)
				}
			}
		}
	}
}

// A host-network process reaches remote pods from a non-gateway and from a
// gateway node, and the remote pod sees the node's CNI IP.
func checkHostNetwork(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	seen := map[string]bool{}
	for _, p := range s.Matrix(ctx) {
		if p.Kind != scenario.SourceHost {
			continue
		}
		seen[p.SrcRole] = true
		if !p.OK {
			t.Error(p)
		}
		if m := s.Member(p.SrcNode); p.Expected != m.CNIIP() || p.Expected == m.Node.IP {
			t.Errorf("%s: expected source %s is not the node's CNI IP %s", p.From(), p.Expected, m.CNIIP())
		}
	}
	if !seen[scenario.RoleGateway] || !seen[scenario.RoleNonGateway] {
		t.Errorf("host probes cover roles %v, want both", seen)
	}
}

// Moving both gateways in the configuration: every node converges to its
// new role without a restart and the matrix is green again within
// moveBudget; the cable device follows the gateway.
func checkGatewayMove(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	pids := map[string]int{}
	for _, m := range s.Members {
		pids[m.Node.Name] = m.Weftd.PID
	}
	c1, c2 := s.Clusters.C1, s.Clusters.C2
	oldGWs := []*harness.Node{s.Gateway("c1"), s.Gateway("c2")}
	newGWs := []*harness.Node{c1.Nodes[2], c2.Nodes[0]}

	start := time.Now()
	mctx, cancel := context.WithDeadline(ctx, start.Add(moveBudget))
	defer cancel()
	for _, gw := range newGWs {
		if err := s.MoveGateway(mctx, gw); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WaitConverged(mctx, start); err != nil {
		t.Fatalf("nodes did not converge within %s: %v", moveBudget, err)
	}
	converged := time.Since(start)
	ps, _, err := s.WaitGreen(mctx)
	if err != nil {
		for _, p := range scenario.Failed(ps) {
			t.Error(p)
		}
		t.Fatalf("after the gateway move: %v", err)
	}
	t.Logf("gateway move: roles converged in %s, matrix green in %s", converged.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	for _, m := range s.Members {
		if !m.Weftd.Running() || m.Weftd.PID != pids[m.Node.Name] {
			t.Errorf("%s: weftd restarted or exited (pid %d, was %d)", m.Node.Name, m.Weftd.PID, pids[m.Node.Name])
		}
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pids[m.Node.Name])); err != nil || strings.TrimSpace(string(comm)) != "weftd" {
			t.Errorf("%s: pid %d is no longer weftd (%q, %v)", m.Node.Name, pids[m.Node.Name], comm, err)
		}
	}
	for _, n := range oldGWs {
		if out, err := n.Exec("ip", "-d", "link", "show", "vx-weft-cable"); err == nil {
			t.Errorf("old gateway %s still has the cable device:\n%s", n.Name, out)
		}
	}
	for _, n := range newGWs {
		if out, err := n.Exec("ip", "-d", "link", "show", "vx-weft-cable"); err != nil || !strings.Contains(out, "vxlan id 101") {
			t.Errorf("new gateway %s has no cable device (%v):\n%s", n.Name, err, out)
		}
	}
}

// drift is one object removed behind weft's back.
type drift struct {
	name    string
	node    *harness.Node
	breakIt [][]string // commands run in the node namespace
	back    func() error
}

// Objects removed behind weft's back come back within the resync interval
// and the node's matrix row passes again.
func checkDrift(ctx context.Context, t *testing.T, s *scenario.Scenario, backend string) {
	// One object per node so every repair is attributable; after the
	// gateway move c1-n1, c1-n2 and c2-n3 are non-gateways and c2-n1 the
	// gateway.
	c1n1, c1n2, c2n1, c2n3 := s.Member("c1-n1").Node, s.Member("c1-n2").Node, s.Member("c2-n1").Node, s.Member("c2-n3").Node
	remoteOfC2 := s.Clusters.C1.PodCIDR.String()
	remoteOfC1 := s.Clusters.C2.PodCIDR.String()
	cases := []drift{
		{
			name: "vx-weft deleted", node: c1n1,
			breakIt: [][]string{{"ip", "link", "del", "vx-weft"}},
			back: func() error {
				out, err := c1n1.Exec("ip", "-d", "link", "show", "vx-weft")
				if err != nil || !strings.Contains(out, "vxlan id 100") {
					return fmt.Errorf("vx-weft missing: %v %s", err, out)
				}
				return nil
			},
		},
		{
			name: "route deleted from table 240 on a non-gateway", node: c2n3,
			breakIt: [][]string{{"ip", "route", "del", remoteOfC2, "table", "240"}},
			back:    routeBack(c2n3, remoteOfC2, "vx-weft"),
		},
		{
			name: "route deleted from table 240 on a gateway", node: c2n1,
			breakIt: [][]string{{"ip", "route", "del", remoteOfC2, "table", "240"}},
			back:    routeBack(c2n1, remoteOfC2, "vx-weft-cable"),
		},
	}
	cases = append(cases, filterDrift(c1n2, backend, remoteOfC1))
	runDrifts(ctx, t, s, cases)
}

// filterDrift removes weft's packet filter of remote's family behind its
// back on n: the nft table ip (ip6) weft, or the iptables (ip6tables)
// WEFT-POSTROUTING chain's rules; back when the SNAT to remote is there
// again.
func filterDrift(n *harness.Node, backend, remote string) drift {
	v6 := strings.Contains(remote, ":")
	if backend == "nftables" {
		fam := map[bool]string{false: "ip", true: "ip6"}[v6]
		return drift{
			name: "nft table " + fam + " weft deleted", node: n,
			breakIt: [][]string{{"nft", "delete", "table", fam, "weft"}},
			back: func() error {
				out, err := n.Exec("nft", "list", "table", fam, "weft")
				if err != nil || !strings.Contains(out, "snat") || !strings.Contains(out, remote) {
					return fmt.Errorf("table %s weft incomplete: %v\n%s", fam, err, out)
				}
				return nil
			},
		}
	}
	tool := map[bool]string{false: "iptables", true: "ip6tables"}[v6]
	return drift{
		name: tool + " WEFT-POSTROUTING flushed", node: n,
		breakIt: [][]string{{tool, "-w", "-t", "nat", "-F", "WEFT-POSTROUTING"}},
		back: func() error {
			out, err := n.Exec(tool, "-w", "-t", "nat", "-S", "WEFT-POSTROUTING")
			if err != nil || !strings.Contains(out, "-A WEFT-POSTROUTING") {
				return fmt.Errorf("%s WEFT-POSTROUTING empty: %v\n%s", tool, err, out)
			}
			return nil
		},
	}
}

// runDrifts breaks each case's object, waits up to resync + driftMargin for
// it to be back, and then for its node's matrix row to be green.
func runDrifts(ctx context.Context, t *testing.T, s *scenario.Scenario, cases []drift) {
	for _, d := range cases {
		t.Run(strings.ReplaceAll(d.name, " ", "-"), func(t *testing.T) {
			if err := d.back(); err != nil {
				t.Fatalf("before breaking it: %v", err)
			}
			for _, c := range d.breakIt {
				if out, err := d.node.Exec(c[0], c[1:]...); err != nil {
					t.Fatalf("%s on %s: %v\n%s", c, d.node.Name, err, out)
				}
			}
			broken := time.Now()
			deadline := broken.Add(resync + driftMargin)
			var err error
			for {
				if err = d.back(); err == nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("%s on %s not repaired within %s: %v", d.name, d.node.Name, resync+driftMargin, err)
			}
			repaired := time.Since(broken)
			rctx, cancel := context.WithDeadline(ctx, deadline)
			defer cancel()
			ps, _, err := s.WaitGreen(rctx, d.node)
			if err != nil {
				for _, p := range scenario.Failed(ps) {
					t.Error(p)
				}
				t.Fatalf("%s row after repair: %v", d.node.Name, err)
			}
			t.Logf("%s on %s: object back after %s, row green after %s", d.name, d.node.Name,
				repaired.Round(time.Millisecond), time.Since(broken).Round(time.Millisecond))
		})
	}
}

func routeBack(n *harness.Node, dst, dev string) func() error {
	// With a table and no -6, ip route show lists IPv4 only.
	args := []string{"route", "show", "table", "240", dst}
	if strings.Contains(dst, ":") {
		args = append([]string{"-6"}, args...)
	}
	return func() error {
		out, err := n.Exec("ip", args...)
		if err != nil || !strings.Contains(out, "dev "+dev) {
			return fmt.Errorf("route %s dev %s missing from table 240: %v %q", dst, dev, err, out)
		}
		return nil
	}
}

// What each inspection command lists, for the cleanup check.
var inspections = []struct {
	name string
	args []string
	// leftover finds weft's objects in the output.
	leftover *regexp.Regexp
}{
	{"links", []string{"ip", "-d", "link", "show"}, regexp.MustCompile(`vx-weft`)},
	{"rules", []string{"ip", "rule", "show"}, regexp.MustCompile(`lookup 240|proto 247`)},
	{"table 240", []string{"ip", "route", "show", "table", "240"}, regexp.MustCompile(`\S`)},
	{"nft", []string{"nft", "list", "ruleset"}, regexp.MustCompile(`table ip weft`)},
	{"iptables", []string{"iptables-save"}, regexp.MustCompile(`WEFT`)},
	{"ipsets", []string{"ipset", "list", "-n"}, regexp.MustCompile(`(?m)^weft-`)},
}

// Packet and byte counters and the bridge's timers change by themselves;
// they are not what a second cleanup could change.
var counters = regexp.MustCompile(`\[\d+:\d+\]|packets \d+ bytes \d+|\w+_timer +[\d.]+`)

// iproute2 prints this for a veth whose peer's namespace is being deleted at
// that moment; on a shared machine other tests delete namespaces while this
// one compares two link dumps (seen twice as "second cleanup changed links").
var peerNetnsNoise = regexp.MustCompile(`(?m)^Error: Peer netns reference is invalid\.\n?`)

func snapshot(t *testing.T, n *harness.Node) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, in := range inspections {
		o, err := n.Exec(in.args[0], in.args[1:]...)
		if err != nil {
			t.Fatalf("%s on %s: %v\n%s", in.args, n.Name, err, o)
		}
		o = counters.ReplaceAllString(o, "")
		o = peerNetnsNoise.ReplaceAllString(o, "")
		if in.name == "iptables" {
			o = stripComments(o)
		}
		out[in.name] = o
	}
	return out
}

// stripComments drops iptables-save's "# Generated … on <date>" lines.
func stripComments(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// After weftd stops, `weftd cleanup` removes everything weft owns on every
// node, and a second run changes nothing and still succeeds.
func checkCleanup(ctx context.Context, t *testing.T, s *scenario.Scenario, backend string) {
	for _, m := range s.Members {
		// Everything the cleanup must remove is there before it.
		before := snapshot(t, m.Node)
		owned := []string{"links", "rules", "table 240", "nft"}
		if backend == "iptables" {
			owned = []string{"links", "rules", "table 240", "iptables", "ipsets"}
		}
		for _, name := range owned {
			if !findLeftover(name, before[name]) {
				t.Errorf("%s: nothing of weft's in %s before cleanup:\n%s", m.Node.Name, name, before[name])
			}
		}
		if err := m.Weftd.Stop(); err != nil {
			t.Errorf("%s: stop weftd: %v", m.Node.Name, err)
		}
		// SIGTERM leaves the data plane in place.
		if !findLeftover("links", snapshot(t, m.Node)["links"]) {
			t.Errorf("%s: weftd's SIGTERM removed vx-weft", m.Node.Name)
		}
	}
	for _, m := range s.Members {
		if out, err := m.Node.WeftdCleanup(ctx); err != nil {
			t.Errorf("%s: %v\n%s", m.Node.Name, err, out)
			continue
		}
		first := snapshot(t, m.Node)
		for _, in := range inspections {
			if in.leftover.MatchString(first[in.name]) {
				t.Errorf("%s: %s still lists weft objects after cleanup:\n%s", m.Node.Name, in.name, first[in.name])
			}
		}
		// The simulated CNI's own rule is not weft's to remove.
		if !strings.Contains(first["iptables"], "MASQUERADE") {
			t.Errorf("%s: cleanup removed the CNI's masquerade rule:\n%s", m.Node.Name, first["iptables"])
		}
		if out, err := m.Node.WeftdCleanup(ctx); err != nil {
			t.Errorf("%s: second cleanup: %v\n%s", m.Node.Name, err, out)
			continue
		}
		second := snapshot(t, m.Node)
		for _, in := range inspections {
			if first[in.name] != second[in.name] {
				t.Errorf("%s: second cleanup changed %s:\nbefore:\n%s\nafter:\n%s", m.Node.Name, in.name, first[in.name], second[in.name])
			}
		}
	}
}

func findLeftover(name, out string) bool {
	for _, in := range inspections {
		if in.name == name {
			return in.leftover.MatchString(out)
		}
	}
	return false
}

// dumpOnFailure logs, when t failed, each node's weft state and weftd log
// tail: the first thing anyone debugging a red run needs.
func dumpOnFailure(t *testing.T, s *scenario.Scenario) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, m := range s.Members {
			var b strings.Builder
			fmt.Fprintf(&b, "=== %s (netns %s) ===\n", m.Node.Name, m.Node.NS.Name)
			for _, c := range [][]string{
				{"ip", "-br", "addr"}, {"ip", "rule"}, {"ip", "route", "show", "table", "240"},
				{"bridge", "fdb", "show", "dev", "vx-weft"}, {"bridge", "fdb", "show", "dev", "vx-weft-cable"},
				{"nft", "list", "ruleset"}, {"iptables-save"}, {"ipset", "list", "-n"},
			} {
				out, _ := m.Node.Exec(c[0], c[1:]...)
				fmt.Fprintf(&b, "$ %s\n%s\n", strings.Join(c, " "), out)
			}
			if m.Weftd != nil {
				fmt.Fprintf(&b, "--- weftd log tail (%s)\n%s", filepath.Base(m.Weftd.LogPath), m.Weftd.LogTail(3000))
			}
			t.Log(b.String())
		}
	})
}
