package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/kubeapi"
	"github.com/weft-net/weft/integration/scenario"
	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/netnstest"
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
	env := harness.NewTestEnv(t)
	if !env.HasBin("weftd") || !env.HasBin("weft") {
		t.Skipf("weft binaries not built in %s (make build)", env.BinDir)
	}
	if m := kubeapi.MissingTools(env); len(m) > 0 {
		t.Skipf("%s not built in %s (make kubetools)", strings.Join(m, ", "), env.ToolsDir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
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
	if err := waitFollow(cctx, s); err != nil {
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

	t.Run("rolling-upgrade", func(t *testing.T) { checkRollingUpgrade(ctx, t, s) })
	t.Run("label-removed", func(t *testing.T) { checkLabelRemoved(ctx, t, s) })
	t.Run("broker-away", func(t *testing.T) { checkBrokerAway(ctx, t, s) })
	t.Run("gateway-dies", func(t *testing.T) { checkGatewayDies(ctx, t, s) })
}

// waitHolder waits until c's Lease has a holder other than not, and
// returns it.
func waitHolder(ctx context.Context, t *testing.T, s *scenario.Scenario, c *harness.Cluster, not string) *harness.Node {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		h, _, err := s.Kube.LeaseHolder(ctx, c.ID)
		if err == nil && h != "" && h != not {
			for _, n := range c.Nodes {
				if n.Name == h {
					return n
				}
			}
			t.Fatalf("%s: Lease holder %q is no node of the cluster", c.ID, h)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no Lease holder (other than %q) after 30 s: %q %v", c.ID, not, h, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFollow waits until every weftd's topology names its cluster's
// elected gateway from the ClusterEndpoint, has the other cluster as its
// remote, and acts in the matching role.
func waitFollow(ctx context.Context, s *scenario.Scenario) error {
	for _, m := range s.Members {
		gw, other := s.Gateway(m.Cluster.ID), "c2"
		if m.Cluster.ID == "c2" {
			other = "c1"
		}
		ogw := s.Gateway(other)
		want := s.Role(m.Node)
		if _, err := m.Weftd.WaitFor(ctx, func(st api.Status) bool {
			tp := st.Topology
			return tp != nil && tp.Synced && tp.Gateway != nil && tp.Gateway.Name == gw.Name &&
				tp.Gateway.From == "ClusterEndpoint weft-system/"+m.Cluster.ID &&
				len(tp.Remotes) == 1 && tp.Remotes[0].ID == other && tp.Remotes[0].GatewayIP == ogw.IP.String() &&
				st.Role == want && st.Ready
		}); err != nil {
			st, _ := m.Weftd.Status(context.Background())
			return fmt.Errorf("%s (want gateway %s, remote %s via %s): %w; topology %+v", m.Node.Name, gw.Name, other, ogw.IP, err, st.Topology)
		}
	}
	return nil
}

// checkOneGateway checks the kernel: of each cluster's candidates, only
// the elected one has the cable device.
func checkOneGateway(t *testing.T, s *scenario.Scenario) {
	t.Helper()
	for _, c := range s.Clusters.Clusters() {
		for _, n := range c.Nodes[1:] {
			if m := s.Member(n.Name); m == nil || !m.Weftd.Running() {
				continue // dead: its kernel state is no gateway's
			}
			_, err := n.Exec("ip", "link", "show", "vx-weft-cable")
			has := err == nil
			if want := s.Gateway(c.ID) == n; has != want {
				t.Errorf("%s: cable device present %v, want %v (gateway %s)", n.Name, has, want, s.Gateway(c.ID).Name)
			}
		}
	}
}

// checkControlStatus checks weftd status: every candidate names the Lease
// holder (renewed within the Lease duration), only the holder leads, and
// the leader's broker sync is in order; the c1 candidates saw changes
// leadership changes.
func checkControlStatus(ctx context.Context, t *testing.T, s *scenario.Scenario, changes int, notCandidate *harness.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
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
			if !candidate {
				return true
			}
			ok := c.LeaseHolder == gw.Name && c.LeaseRenewTime != nil && time.Since(*c.LeaseRenewTime) < leaseDuration
			if c.Leading {
				ok = ok && c.Broker != nil && c.Broker.Synced && c.Broker.Remotes == 1
			}
			return ok
		})
		if err != nil || st.Topology == nil {
			t.Errorf("%s: control status (gateway %s): %v", m.Node.Name, gw.Name, err)
			continue
		}
		if c := st.Topology.Control; candidate && m.Cluster.ID == "c1" && c.LeadershipChanges != changes {
			t.Errorf("%s: %d leadership changes in status, want %d", m.Node.Name, c.LeadershipChanges, changes)
		}
	}
}

// prober sends pod->remote-pod TCP probes every 100 ms and records the
// longest run without an answer.
type prober struct {
	stop       chan struct{}
	done       chan struct{}
	sent, lost int
	gap        time.Duration
}

func startProber(s *scenario.Scenario, from, to *scenario.Member) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		lastOK := time.Now()
		failing := false
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			_, err := harness.ProbeTCP(ctx, from.Pod.NS, to.PodAddr().String(), []byte("probe"))
			cancel()
			p.sent++
			now := time.Now()
			if err != nil {
				p.lost++
				failing = true
			} else {
				if failing && now.Sub(lastOK) > p.gap {
					p.gap = now.Sub(lastOK)
				}
				failing = false
				lastOK = now
			}
			select {
			case <-p.stop:
				if failing && now.Sub(lastOK) > p.gap {
					p.gap = now.Sub(lastOK)
				}
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

func (p *prober) finish() { close(p.stop); <-p.done }

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
	ce0, err := s.Kube.ClusterEndpoint(ctx, "c1", "c1")
	if err != nil {
		t.Fatal(err)
	}
	from, to := probePair(s)
	p := startProber(s, from, to)
	time.Sleep(time.Second)
	stopped := time.Now()
	if err := m.Weftd.Stop(); err != nil {
		p.finish()
		t.Fatal(err)
	}
	w, err := m.Node.StartWeftd(ctx, s.Config(gw).MustYAML())
	if err != nil {
		p.finish()
		t.Fatal(err)
	}
	m.Weftd = w
	restarted := time.Since(stopped)
	if _, err := w.WaitReady(ctx); err != nil {
		p.finish()
		t.Fatal(err)
	}
	time.Sleep(2 * leaseDuration) // past the old Lease's expiry
	p.finish()
	h, trans, err := s.Kube.LeaseHolder(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	ce, err := s.Kube.ClusterEndpoint(ctx, "c1", "c1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rolling upgrade of %s's weftd (new one started %s after SIGTERM): %d probes, %d lost, longest gap %s; holder %s, transitions %d -> %d",
		gw.Name, restarted.Round(time.Millisecond), p.sent, p.lost, p.gap.Round(time.Millisecond), h, trans0, trans)
	if p.lost != 0 {
		t.Errorf("%d of %d probes lost across the rolling upgrade", p.lost, p.sent)
	}
	if h != gw.Name || trans != trans0 {
		t.Errorf("leadership changed: holder %s (was %s), transitions %d (was %d)", h, gw.Name, trans, trans0)
	}
	if rv(ce) != rv(ce0) {
		t.Errorf("ClusterEndpoint changed across the upgrade:\n%s\n%s", ce0, ce)
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

// The gateway's label is removed: it releases the Lease, the other
// candidate takes it at once (no expiry wait), both clusters follow.
func checkLabelRemoved(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	old := s.Gateway("c1")
	from, to := probePair(s)
	p := startProber(s, from, to)
	time.Sleep(time.Second)
	start := time.Now()
	if err := s.Kube.SetCandidate(ctx, old, false); err != nil {
		p.finish()
		t.Fatal(err)
	}
	gw := waitHolder(ctx, t, s, s.Clusters.C1, old.Name)
	took := time.Since(start)
	s.Elected(gw)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := waitFollow(cctx, s); err != nil {
		p.finish()
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	p.finish()
	t.Logf("label removed from %s: %s holds the Lease after %s; probe gap %s (%d of %d lost; goal ≤ 2s)",
		old.Name, gw.Name, took.Round(time.Millisecond), p.gap.Round(time.Millisecond), p.lost, p.sent)
	if took > 2*time.Second {
		t.Errorf("handover took %s: the Lease was not released", took)
	}
	checkOneGateway(t, s)
	checkControlStatus(ctx, t, s, 1, old)
	if _, err := old.Exec("ip", "link", "show", "vx-weft-cable"); err == nil {
		t.Errorf("%s, no longer a candidate, still has the cable device", old.Name)
	}
	// Back as a candidate for the next step (not elected: the Lease is held).
	if err := s.Kube.SetCandidate(ctx, old, true); err != nil {
		t.Fatal(err)
	}
}

// The gateway node dies: underlay down and its weftd killed. The other
// candidate takes the Lease when it expires; the gap is at most the
// Lease duration + 2 s.
func checkGatewayDies(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	old := s.Gateway("c1")
	m := s.Member(old.Name)
	from, to := probePair(s)
	p := startProber(s, from, to)
	time.Sleep(time.Second)
	start := time.Now()
	if _, err := old.Exec("ip", "link", "set", "eth0", "down"); err != nil {
		p.finish()
		t.Fatal(err)
	}
	// The node comes back at the end (without weftd), so that the API
	// server's connections to the dead weftd are reset and its shutdown
	// does not wait for them to time out.
	defer func() {
		for _, c := range [][]string{{"link", "set", "eth0", "up"}, {"route", "replace", "default", "via", harness.UnderlayNextHop.String(), "dev", "eth0"}} {
			if out, err := old.Exec("ip", c...); err != nil {
				t.Errorf("revive %s: ip %v: %v %s", old.Name, c, err, out)
			}
		}
	}()
	if err := m.Weftd.Kill(); err != nil {
		p.finish()
		t.Fatal(err)
	}
	gw := waitHolder(ctx, t, s, s.Clusters.C1, old.Name)
	took := time.Since(start)
	s.Elected(gw)
	// The dead node is out of the scenario's matrix and convergence.
	if err := s.RemoveMember(m); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := waitFollow(cctx, s); err != nil {
		p.finish()
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	p.finish()
	t.Logf("gateway %s died: %s holds the Lease after %s; probe gap %s (%d of %d lost; goal ≤ %s)",
		old.Name, gw.Name, took.Round(time.Millisecond), p.gap.Round(time.Millisecond), p.lost, p.sent, leaseDuration+2*time.Second)
	if p.gap > leaseDuration+2*time.Second {
		t.Errorf("failover gap %s > Lease duration %s + 2 s", p.gap.Round(time.Millisecond), leaseDuration)
	}
	checkOneGateway(t, s)
}

// brokerAway is how long the broker's API server stays down.
const brokerAway = 30 * time.Second

// The broker is down for 30 s: the matrix stays green on what was copied,
// the leaders say the broker sync failed, and recover when it is back.
func checkBrokerAway(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	if err := s.Kube.Broker.Kill(); err != nil {
		t.Fatal(err)
	}
	downAt := time.Now()
	leaders := []*scenario.Member{s.Member(s.Gateway("c1").Name), s.Member(s.Gateway("c2").Name)}
	for _, m := range leaders {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := m.Weftd.WaitFor(wctx, func(st api.Status) bool {
			c := st.Topology.Control
			return c != nil && c.Broker != nil && !c.Broker.Synced && c.Broker.Message != "" && c.Broker.Errors > 0
		})
		cancel()
		if err != nil {
			t.Errorf("%s: broker down, status does not say so: %v %+v", m.Node.Name, err, st.Topology)
		}
	}
	for time.Since(downAt) < brokerAway {
		if bad := scenario.Failed(s.Matrix(ctx)); len(bad) > 0 {
			t.Fatalf("broker down %s: %d probes fail, first %s", time.Since(downAt).Round(time.Second), len(bad), bad[0])
		}
		time.Sleep(2 * time.Second)
	}
	if err := s.Kube.Broker.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	for _, m := range leaders {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := m.Weftd.WaitFor(wctx, func(st api.Status) bool {
			c := st.Topology.Control
			return c != nil && c.Broker != nil && c.Broker.Synced && c.Broker.Remotes == 1
		})
		cancel()
		if err != nil {
			t.Errorf("%s: broker back, sync not re-established: %v", m.Node.Name, err)
		}
	}
	t.Logf("broker down %s: matrix green throughout; broker sync back %s after the restart", brokerAway, time.Since(back).Round(time.Millisecond))
}
