package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/scenario"
	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/dataplane"
	"github.com/weft-net/weft/pkg/netnstest"
	"github.com/weft-net/weft/pkg/topology"
)

// leaseDuration is scenario.WeftLease's duration: the failover promise is
// at most this + 2 s of probe loss.
const leaseDuration = 3 * time.Second

// TestWeftControlPlane is kubernetes.endpoints: weft with three real API
// servers (two clusters and a broker): the weftd configurations give only
// cluster.id, the CIDRs, the cluster's kubeconfig and the broker's; n2 and
// n3 of each cluster carry the gateway label. Both clusters elect a
// gateway on the Lease, publish their ClusterEndpoint, find each other
// through the broker, and the connectivity matrix is green; then the
// gateway dies, is upgraded, and loses its label.
func TestWeftControlPlane(t *testing.T) {
	netnstest.RequireRoot(t)
	env := kubeTestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	s, err := scenario.Build(ctx, env, scenario.Options{Backend: "nftables", ResyncInterval: resync, Topology: scenario.TopologyWeft})
	if err != nil {
		t.Fatal(err)
	}
	dumpOnFailure(t, s)
	dumpTopologyLogs(t, s)
	for _, m := range s.Members {
		for _, key := range []string{"nodes", "gateway:", "remotes", "submariner"} {
			if strings.Contains(string(m.Weftd.Config), key) {
				t.Fatalf("%s: the weftd configuration lists %q:\n%s", m.Node.Name, key, m.Weftd.Config)
			}
		}
	}
	start := time.Now()
	for _, c := range s.Clusters.Clusters() {
		gw := waitHolder(ctx, t, s, c, "")
		s.Elected(gw)
	}
	cctx, ccancel := context.WithTimeout(ctx, 60*time.Second)
	if _, _, err := s.WaitFollow(cctx); err != nil {
		ccancel()
		t.Fatalf("nodes do not follow the elected gateways: %v", err)
	}
	ps, _, err := s.WaitGreen(cctx)
	ccancel()
	if err != nil {
		for _, p := range scenario.Failed(ps) {
			t.Error(p)
		}
		t.Fatalf("matrix: %v", err)
	}
	t.Logf("elected %s and %s; both clusters found each other through the broker; matrix green (%d probes) %s after the Leases were first read",
		s.Gateway("c1").Name, s.Gateway("c2").Name, len(ps), time.Since(start).Round(time.Millisecond))
	checkOneGateway(t, s)
	checkControlStatus(ctx, t, s, 0, nil)
	t.Run("node-paths", func(t *testing.T) { checkNodePaths(ctx, t, s) })

	t.Run("health-check-ip", func(t *testing.T) { checkHealthCheckIP(ctx, t, s) })
	t.Run("rolling-upgrade", func(t *testing.T) { checkRollingUpgrade(ctx, t, s) })
	t.Run("label-removed", func(t *testing.T) { checkLabelRemoved(ctx, t, s) })
	var c3 *harness.Cluster
	if !t.Run("broker-away", func(t *testing.T) { c3 = checkBrokerAway(ctx, t, s) }) {
		t.FailNow()
	}
	t.Run("cluster-leaves", func(t *testing.T) { checkClusterLeaves(ctx, t, s, c3) })
	t.Run("gateway-dies", func(t *testing.T) { checkGatewayDies(ctx, t, s) })
}

// waitHolder waits until c's Lease has a holder other than not, and
// returns it.
func waitHolder(ctx context.Context, t *testing.T, s *scenario.Scenario, c *harness.Cluster, not string) *harness.Node {
	t.Helper()
	n, err := s.WaitHolder(ctx, c, not, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkOneGateway checks the kernel of every live candidate of every
// cluster: only the elected one has the cable device, and its routes to
// every other cluster's pods go over the cable; every other candidate
// routes them to the gateway over vx-weft, as a non-gateway does.
func checkOneGateway(t *testing.T, s *scenario.Scenario) {
	t.Helper()
	clusters := s.AllClusters()
	for _, c := range clusters {
		for _, n := range c.Nodes[1:] {
			if m := s.Member(n.Name); m == nil || !m.Weftd.Running() {
				continue // dead: its underlay is down, it acts as nothing
			}
			_, err := n.Exec("ip", "link", "show", "vx-weft-cable")
			has := err == nil
			want := s.Gateway(c.ID) == n
			if has != want {
				t.Errorf("%s: cable device present %v, want %v (gateway %s)", n.Name, has, want, s.Gateway(c.ID).Name)
			}
			dev := "vx-weft"
			if want {
				dev = "vx-weft-cable"
			}
			for _, r := range clusters {
				if r == c {
					continue
				}
				out, err := n.Exec("ip", "route", "show", "table", "240", r.PodCIDR.String())
				if err != nil || !slices.Contains(strings.Fields(out), dev) || !strings.Contains(out, "dev "+dev) {
					t.Errorf("%s (gateway %v): route to %s in table 240 not via %s: %v %q", n.Name, want, r.PodCIDR, dev, err, out)
				}
			}
		}
	}
}

// checkControlStatus checks weftd status: every candidate names the Lease
// holder (renewed within the Lease duration), only the holder leads and
// has the BrokerSynced condition, and the leader's broker sync is in order; the c1 candidates saw changes
// leadership changes (unless changes < 0).
func checkControlStatus(ctx context.Context, t *testing.T, s *scenario.Scenario, changes int, notCandidate *harness.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	remotes := len(s.AllClusters()) - 1
	for _, m := range s.Members {
		gw := s.Gateway(m.Cluster.ID)
		candidate := m.Node != m.Cluster.Nodes[0] && m.Node != notCandidate
		st, err := m.Weftd.WaitFor(ctx, func(st api.Status) bool {
			if st.Topology == nil {
				return false
			}
			c := st.Topology.Control
			if c == nil || c.Candidate != candidate || c.Leading != (m.Node == gw) {
				return false
			}
			// BrokerSynced is the leader's alone: no other node talks to
			// the broker.
			if slices.ContainsFunc(st.Conditions, func(c api.Condition) bool { return c.Type == "BrokerSynced" }) != c.Leading {
				return false
			}
			if !candidate {
				return true
			}
			ok := c.LeaseHolder == gw.Name && c.LeaseRenewTime != nil && time.Since(*c.LeaseRenewTime) < leaseDuration
			if c.Leading {
				ok = ok && c.Broker != nil && c.Broker.Synced && c.Broker.Remotes == remotes
			}
			return ok
		})
		if err != nil || st.Topology == nil {
			t.Errorf("%s: control status (gateway %s): %v", m.Node.Name, gw.Name, err)
			continue
		}
		if c := st.Topology.Control; changes >= 0 && candidate && m.Cluster.ID == "c1" && c.LeadershipChanges != changes {
			t.Errorf("%s: %d leadership changes in status, want %d", m.Node.Name, c.LeadershipChanges, changes)
		}
	}
}

// probePair is a pod on a non-candidate of c2 probing one on a
// non-candidate of c1: every probe crosses both gateways.
func probePair(s *scenario.Scenario) (from, to *scenario.Member) {
	return s.Member(s.Clusters.C2.Nodes[0].Name), s.Member(s.Clusters.C1.Nodes[0].Name)
}

// A rolling upgrade: the gateway's weftd gets SIGTERM and a new one
// starts within the Lease duration: no probe lost, the same holder, the
// same ClusterEndpoint.
func checkRollingUpgrade(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	gw := s.Gateway("c1")
	m := s.Member(gw.Name)
	_, trans0, err := s.Kube.LeaseHolder(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	objects := func() []string {
		var rvs []string
		for _, get := range []func() ([]byte, error){
			func() ([]byte, error) { return s.Kube.ClusterEndpoint(ctx, "c1", "c1") },
			func() ([]byte, error) { return s.Kube.BrokerEndpoint(ctx, "c1") },
			func() ([]byte, error) { return s.Kube.ClusterEndpoint(ctx, "c2", "c1") },
		} {
			b, err := get()
			if err != nil {
				t.Fatal(err)
			}
			rvs = append(rvs, rv(b))
		}
		return rvs
	}
	ce0 := objects()
	from, to := probePair(s)
	p := scenario.StartProber(from, to)
	time.Sleep(time.Second)
	stopped := time.Now()
	if err := m.Weftd.Stop(); err != nil {
		p.Finish()
		t.Fatal(err)
	}
	w, err := m.Node.StartWeftd(ctx, s.Config(gw).MustYAML())
	if err != nil {
		p.Finish()
		t.Fatal(err)
	}
	m.Weftd = w
	restarted := time.Since(stopped)
	if _, err := w.WaitReady(ctx); err != nil {
		p.Finish()
		t.Fatal(err)
	}
	time.Sleep(2 * leaseDuration) // past the old Lease's expiry
	p.Finish()
	h, trans, err := s.Kube.LeaseHolder(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	ce := objects()
	t.Logf("rolling upgrade of %s's weftd (new one started %s after SIGTERM): %d probes, %d lost, longest gap %s; holder %s, transitions %d -> %d",
		gw.Name, restarted.Round(time.Millisecond), p.Sent, p.Lost, p.Gap.Round(time.Millisecond), h, trans0, trans)
	if p.Lost != 0 {
		t.Errorf("%d of %d probes lost across the rolling upgrade", p.Lost, p.Sent)
	}
	if h != gw.Name || trans != trans0 {
		t.Errorf("leadership changed: holder %s (was %s), transitions %d (was %d)", h, gw.Name, trans, trans0)
	}
	if !slices.Equal(ce, ce0) {
		t.Errorf("c1's ClusterEndpoint changed across the upgrade (resourceVersions in c1, on the broker, in c2): %v, was %v", ce, ce0)
	}
	checkOneGateway(t, s)
}

// rv is a raw object's resourceVersion.
func rv(obj []byte) string {
	s := string(obj)
	i := strings.Index(s, `"resourceVersion":"`)
	if i < 0 {
		return ""
	}
	s = s[i+len(`"resourceVersion":"`):]
	return s[:strings.IndexByte(s, '"')]
}

// followThenFinish ends a handover: every node follows the new holder
// (within 30 s), the probe runs a second more and is stopped.
func followThenFinish(ctx context.Context, t *testing.T, s *scenario.Scenario, p *scenario.Prober) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, _, err := s.WaitFollow(cctx); err != nil {
		p.Finish()
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	p.Finish()
}

// The gateway's label is removed: it releases the Lease, the other
// candidate takes it at once (no expiry wait), both clusters follow.
func checkLabelRemoved(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	old := s.Gateway("c1")
	from, to := probePair(s)
	p := scenario.StartProber(from, to)
	time.Sleep(time.Second)
	start := time.Now()
	if err := s.Kube.SetCandidate(ctx, old, false); err != nil {
		p.Finish()
		t.Fatal(err)
	}
	gw := waitHolder(ctx, t, s, s.Clusters.C1, old.Name)
	took := time.Since(start)
	s.Elected(gw)
	followThenFinish(ctx, t, s, p)
	t.Logf("label removed from %s: %s holds the Lease after %s; probe gap %s (%d of %d lost; goal ≤ 2s)",
		old.Name, gw.Name, took.Round(time.Millisecond), p.Gap.Round(time.Millisecond), p.Lost, p.Sent)
	if took > 2*time.Second {
		t.Errorf("handover took %s: the Lease was not released", took)
	}
	if p.Gap > 2*time.Second {
		t.Errorf("label removal: probe gap %s > the goal of 2 s", p.Gap.Round(time.Millisecond))
	}
	checkOneGateway(t, s)
	checkControlStatus(ctx, t, s, 1, old)
	if _, err := old.Exec("ip", "link", "show", "vx-weft-cable"); err == nil {
		t.Errorf("%s, no longer a candidate, still has the cable device", old.Name)
	}
	// Back as a candidate for the next step: not elected (the Lease is
	// held), nothing moves.
	_, trans0, err := s.Kube.LeaseHolder(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Kube.SetCandidate(ctx, old, true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(leaseDuration)
	if h, trans, err := s.Kube.LeaseHolder(ctx, "c1"); err != nil || h != gw.Name || trans != trans0 {
		t.Errorf("%s labelled again: Lease holder %s (want %s), transitions %d (were %d) %v", old.Name, h, gw.Name, trans, trans0, err)
	}
	checkOneGateway(t, s)
}

// The gateway node dies: underlay down and its weftd killed. The other
// candidate takes the Lease when it expires; the gap is at most the
// Lease duration + 2 s.
func checkGatewayDies(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	old := s.Gateway("c1")
	m := s.Member(old.Name)
	from, to := probePair(s)
	p := scenario.StartProber(from, to)
	time.Sleep(time.Second)
	start := time.Now()
	revive, err := scenario.KillNode(m)
	defer func() {
		if err := revive(); err != nil {
			t.Error(err)
		}
	}()
	if err != nil {
		p.Finish()
		t.Fatal(err)
	}
	gw := waitHolder(ctx, t, s, s.Clusters.C1, old.Name)
	took := time.Since(start)
	s.Elected(gw)
	// The dead node is out of the scenario's matrix and convergence.
	if err := s.RemoveMember(m); err != nil {
		t.Fatal(err)
	}
	followThenFinish(ctx, t, s, p)
	t.Logf("gateway %s died: %s holds the Lease after %s; probe gap %s (%d of %d lost; goal ≤ %s)",
		old.Name, gw.Name, took.Round(time.Millisecond), p.Gap.Round(time.Millisecond), p.Lost, p.Sent, leaseDuration+2*time.Second)
	if p.Gap > leaseDuration+2*time.Second {
		t.Errorf("failover gap %s > Lease duration %s + 2 s", p.Gap.Round(time.Millisecond), leaseDuration)
	}
	checkOneGateway(t, s)
}

// brokerAway is how long the broker's API server stays down (the issue's
// figure).
const brokerAway = 30 * time.Second

// c3Spec is the cluster that joins while the broker is down.
var c3Spec = harness.ClusterSpec{ID: "c3", Nodes: 2, PodCIDR: "10.3.0.0/16", ServiceCIDR: "10.103.0.0/16", NodeIPBase: "192.168.30.0"}

// The broker is down for 30 s: the matrix stays green on what was copied
// and the leaders' BrokerSynced condition says why; meanwhile a third
// cluster starts (its own API server, nodes and weftds) and elects its
// gateway, but cannot publish. The broker back, the three clusters find
// each other: c1 and c2 route to c3 and c3 to them (the matrix, not only
// the objects), and every leader's condition is true again.
func checkBrokerAway(ctx context.Context, t *testing.T, s *scenario.Scenario) *harness.Cluster {
	leaders := []*scenario.Member{s.Member(s.Gateway("c1").Name), s.Member(s.Gateway("c2").Name)}
	for _, m := range leaders {
		checkBrokerCond(ctx, t, m, true)
	}
	if err := s.Kube.Broker.Kill(); err != nil {
		t.Fatal(err)
	}
	downAt := time.Now()
	type joined struct {
		c   *harness.Cluster
		ms  []*scenario.Member
		err error
		at  time.Duration
	}
	join := make(chan joined, 1)
	go func() {
		c, ms, err := s.AddCluster(ctx, c3Spec)
		if err == nil {
			wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			for _, m := range ms {
				if _, err = m.Weftd.WaitReady(wctx); err != nil {
					err = fmt.Errorf("%s not ready: %w", m.Node.Name, err)
					break
				}
			}
			cancel()
		}
		join <- joined{c, ms, err, time.Since(downAt)}
	}()
	for _, m := range leaders {
		checkBrokerCond(ctx, t, m, false)
	}
	probes := 0
	for time.Since(downAt) < brokerAway {
		ps := s.Matrix(ctx)
		probes += len(ps)
		if bad := scenario.Failed(ps); len(bad) > 0 {
			t.Fatalf("broker down %s: %d probes fail, first %s", time.Since(downAt).Round(time.Second), len(bad), bad[0])
		}
		time.Sleep(time.Second)
	}
	j := <-join
	if j.err != nil {
		t.Fatalf("c3 joining while the broker is down: %v", j.err)
	}
	c3 := j.c
	gw3 := waitHolder(ctx, t, s, c3, "")
	s.Elected(gw3)
	lead3 := s.Member(gw3.Name)
	for _, m := range j.ms {
		if m.Node == gw3 {
			lead3 = m
		}
	}
	// Down all along: c3 knows no remote, and its leader says why.
	for _, m := range j.ms {
		st, err := m.Weftd.Status(ctx)
		if err != nil || st.Topology == nil || len(st.Topology.Remotes) != 0 {
			t.Errorf("%s before the broker is back: remotes %+v, %v", m.Node.Name, st.Topology, err)
		}
	}
	checkBrokerCond(ctx, t, lead3, false)
	down := time.Since(downAt)
	if err := s.Kube.Broker.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	s.Adopt(j.ms...)
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	slowest, _, err := s.WaitFollow(cctx)
	if err != nil {
		t.Fatalf("after the broker is back: %v", err)
	}
	found := time.Since(back)
	if found > 2*time.Second {
		for _, m := range []*scenario.Member{s.Member(slowest), leaders[0], leaders[1], lead3} {
			t.Logf("%s was slow to follow; %s's log:\n%s", slowest, m.Node.Name, m.Weftd.LogTail(30))
		}
	}
	ps, _, err := s.WaitGreen(cctx)
	if err != nil {
		for _, p := range scenario.Failed(ps) {
			t.Error(p)
		}
		t.Fatalf("matrix with c3: %v", err)
	}
	to3 := 0
	for _, p := range ps {
		if p.SrcCluster == "c3" || strings.HasPrefix(p.DstNode, "c3-") {
			to3++
		}
	}
	green := time.Since(back)
	for _, m := range append(leaders, lead3) {
		checkBrokerCond(ctx, t, m, true)
	}
	checkOneGateway(t, s)
	checkControlStatus(ctx, t, s, -1, nil)
	t.Logf("broker down %s (%d probes, all green; c3 with %d nodes ready %s after the broker went down, gateway %s): back, every node follows the three clusters after %s (%s last), matrix green after %s (%d probes, %d from or to c3)",
		down.Round(time.Millisecond), probes, len(j.ms), j.at.Round(time.Millisecond), gw3.Name, found.Round(time.Millisecond), slowest, green.Round(time.Millisecond), len(ps), to3)
	return c3
}

// checkBrokerCond waits until m's BrokerSynced condition has status want,
// in the JSON status and in `weftd status`; false must name the broker
// as unreachable since a time and carry a fix.
func checkBrokerCond(ctx context.Context, t *testing.T, m *scenario.Member, want bool) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var got api.Condition
	st, err := m.Weftd.WaitFor(wctx, func(st api.Status) bool {
		for _, c := range st.Conditions {
			if c.Type == "BrokerSynced" {
				got = c
				return c.Status == want && (want || (strings.Contains(c.Message, "broker unreachable since ") && c.Fix != ""))
			}
		}
		return false
	})
	if err != nil {
		t.Errorf("%s: BrokerSynced %v wanted: %v; conditions %+v", m.Node.Name, want, err, st.Conditions)
		return
	}
	out, _, err := m.Node.WeftdCommand(ctx, "status", "--socket", m.Node.Socket)
	line := ""
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "BrokerSynced") {
			line = l
		}
	}
	mark := "ok  "
	if !want {
		mark = "FAIL"
	}
	if err != nil || !strings.Contains(line, mark+" BrokerSynced") || (!want && !strings.Contains(string(out), "fix: ")) {
		t.Errorf("%s: weftd status does not show BrokerSynced %v (%v):\n%s", m.Node.Name, want, err, out)
	}
	if !want {
		t.Logf("%s: %s %s: %s (fix: %s)", m.Node.Name, got.Type, got.Reason, got.Message, got.Fix)
	}
}

// kernelMentions is every line of n's routes, rules, neighbours, FDB and
// nftables ruleset that names cluster c: its CIDRs, its gateway's underlay
// address, VTEP or VTEP MAC. The underlay's own ARP entries (dev eth0) are
// the kernel's, not weft's, and age out by themselves; so are unresolved
// entries on weft's devices.
func kernelMentions(t *testing.T, n *harness.Node, c *harness.Cluster, gw *harness.Node) []string {
	t.Helper()
	vtep := topology.VTEPIP(netip.MustParsePrefix("241.0.0.0/8"), gw.IP)
	needles := []string{c.PodCIDR.String(), c.ServiceCIDR.String(), gw.IP.String() + " ", vtep.String() + " ", dataplane.MACFor(vtep).String()}
	var out []string
	for _, cmd := range [][]string{
		{"ip", "route", "show", "table", "all"}, {"ip", "rule"}, {"ip", "neigh", "show"},
		{"bridge", "fdb", "show"}, {"nft", "list", "ruleset"},
	} {
		o, err := n.Exec(cmd[0], cmd[1:]...)
		if err != nil {
			t.Errorf("%s: %v: %v", n.Name, cmd, err)
			continue
		}
		for _, l := range strings.Split(o, "\n") {
			// Unresolved entries (FAILED, INCOMPLETE) are the kernel's
			// record of a packet sent after the static neighbour went: a
			// health probe in flight when the cluster left. weft's own
			// neighbours are PERMANENT.
			if cmd[1] == "neigh" && (strings.Contains(l, " dev eth0 ") || strings.HasSuffix(l, " FAILED") || strings.HasSuffix(l, " INCOMPLETE")) {
				continue
			}
			for _, nd := range needles {
				if strings.Contains(l+" ", nd) {
					out = append(out, strings.Join(cmd[:2], " ")+": "+strings.TrimSpace(l))
					break
				}
			}
		}
	}
	return out
}

// A cluster leaves. First its ClusterEndpoint is deleted from the broker
// while its weft still runs: its leader pushes it again (the object is its
// registration, re-asserted like the local one), and the others route to
// it again. Then it really leaves: its weftds stop (an uninstall) and its
// object is deleted from the broker: the copies in c1 and c2 go, and so do
// its routes, rules, set elements, neighbours and FDB entries on every node
// of c1 and c2.
func checkClusterLeaves(ctx context.Context, t *testing.T, s *scenario.Scenario, c3 *harness.Cluster) {
	gw3 := s.Gateway(c3.ID)
	var stayers []*harness.Node
	for _, m := range s.Members {
		if m.Cluster != c3 {
			stayers = append(stayers, m.Node)
		}
	}
	before := 0
	for _, n := range stayers {
		l := kernelMentions(t, n, c3, gw3)
		if len(l) == 0 {
			t.Fatalf("%s has nothing of c3 in its kernel before c3 leaves: the check below could not fail", n.Name)
		}
		before += len(l)
	}
	ce0, err := s.Kube.BrokerEndpoint(ctx, c3.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Kube.DeleteBrokerEndpoint(ctx, c3.ID); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	var back time.Duration
	for {
		ce, err := s.Kube.BrokerEndpoint(ctx, c3.ID)
		if err == nil && rv(ce) != rv(ce0) {
			back = time.Since(deleted)
			break
		}
		if time.Since(deleted) > 10*time.Second {
			t.Fatalf("c3 still runs, its ClusterEndpoint deleted from the broker: not pushed again within 10 s (%v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, _, err := s.WaitFollow(cctx); err != nil {
		t.Fatalf("c3's ClusterEndpoint pushed again: %v", err)
	}
	if ps, _, err := s.WaitGreen(cctx); err != nil {
		for _, p := range scenario.Failed(ps) {
			t.Error(p)
		}
		t.Fatalf("matrix after c3's object came back: %v", err)
	}
	t.Logf("c3's ClusterEndpoint deleted from the broker while c3 runs: pushed again by its leader after %s, matrix green again", back.Round(time.Millisecond))

	if err := s.RemoveCluster(c3); err != nil {
		t.Fatal(err)
	}
	if err := s.Kube.DeleteBrokerEndpoint(ctx, c3.ID); err != nil {
		t.Fatal(err)
	}
	left := time.Now()
	for _, c := range s.AllClusters() {
		for {
			_, err := s.Kube.ClusterEndpoint(ctx, c.ID, c3.ID)
			if err != nil && strings.Contains(err.Error(), "404") {
				break
			}
			if time.Since(left) > 15*time.Second {
				t.Fatalf("%s: the copy of c3's ClusterEndpoint still there 15 s after c3 left the broker (%v)", c.ID, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	copies := time.Since(left)
	if _, _, err := s.WaitFollow(cctx); err != nil {
		t.Fatalf("after c3 left: %v", err)
	}
	clean := true
	for _, n := range stayers {
		var rest []string
		for {
			if rest = kernelMentions(t, n, c3, gw3); len(rest) == 0 || time.Since(left) > 20*time.Second {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if len(rest) > 0 {
			clean = false
			t.Errorf("%s: c3 left 20 s ago, its kernel still names it:\n%s", n.Name, strings.Join(rest, "\n"))
		}
	}
	gone := time.Since(left)
	if ps, _, err := s.WaitGreen(cctx); err != nil {
		for _, p := range scenario.Failed(ps) {
			t.Error(p)
		}
		t.Fatalf("matrix after c3 left: %v", err)
	}
	checkOneGateway(t, s)
	if clean {
		t.Logf("c3 left (weftds stopped, its object deleted from the broker): the copies in c1 and c2 gone after %s; the %d kernel lines naming c3 on %d nodes (routes, rules, set elements, neighbours, FDB) all gone after %s",
			copies.Round(time.Millisecond), before, len(stayers), gone.Round(time.Millisecond))
	}
}

// checkHealthCheckIP: each leader publishes its CNI interface IP as its
// ClusterEndpoint's spec.healthCheckIP, and the other cluster's nodes
// probe the whole path to it (issue 13).
func checkHealthCheckIP(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	for _, c := range s.Clusters.Clusters() {
		gw := s.Gateway(c.ID)
		want := scenario.BridgeCNIIP(gw).String()
		deadline := time.Now().Add(10 * time.Second)
		for {
			raw, err := s.Kube.ClusterEndpoint(ctx, c.ID, c.ID)
			var ce struct {
				Spec struct {
					HealthCheckIP string `json:"healthCheckIP"`
				} `json:"spec"`
			}
			if err == nil {
				err = json.Unmarshal(raw, &ce)
			}
			if err == nil && ce.Spec.HealthCheckIP == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: ClusterEndpoint spec.healthCheckIP = %q (%v), want the leader %s's cni0 %s", c.ID, ce.Spec.HealthCheckIP, err, gw.Name, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	checkWholePathProbed(ctx, t, s)
}
