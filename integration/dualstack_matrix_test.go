package integration

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/scenario"
	"github.com/weft-net/weft/pkg/netnstest"
	"github.com/weft-net/weft/pkg/topology"
)

// dsUnderlayMTU is c1's first gateway's underlay MTU in
// TestDualStackMatrix: frames above it are dropped at its bridge port.
const dsUnderlayMTU = 1400

// TestDualStackMatrix is the two-cluster scenario with the real weftd on
// every node, pods attached by the real bridge + host-local + weft chain
// (one address of each family), host-gw routes and flannel's ipMasq
// masquerade per family: dual stack over an IPv4 underlay and IPv6 only
// over an IPv6 underlay, on both packet-filter backends. One build per
// case:
//   - every pod, host network and host network bound to its underlay
//     address to every remote pod over each family: pod IPs kept, host
//     traffic seen as cni0's address of that family;
//   - non-gateway VTEP <-> gateway VTEP over IPv6 (and IPv4) not
//     rewritten by the host SNAT;
//   - 4 MB pod -> remote pod over IPv6 (IPv4 beside it) through a gateway
//     whose underlay MTU is 1400 and drops larger frames: it completes and
//     the SYN's MSS seen by the server is clamped;
//   - both gateways move; every node converges and the matrix holds again;
//   - IPv6 objects removed behind weft's back are repaired within the
//     resync interval;
//   - weftd cleanup leaves no IPv6 object.
func TestDualStackMatrix(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, fam := range []harness.Family{harness.FamilyDual, harness.FamilyIPv6} {
		for _, backend := range []string{"nftables", "iptables"} {
			t.Run(strings.ReplaceAll(fam.String(), " ", "-")+"/"+backend, func(t *testing.T) { testDualStackMatrix(t, fam, backend) })
		}
	}
}

func testDualStackMatrix(t *testing.T, fam harness.Family, backend string) {
	env := harness.NewTestEnv(t)
	if !env.HasBin("weftd") || !env.HasBin("weft") {
		t.Skipf("weft binaries not built in %s (make build)", env.BinDir)
	}
	ctx := ctxFor(t, 120*time.Second)
	s, err := scenario.Build(ctx, env, scenario.Options{
		NodesPerCluster: 2, Backend: backend, Family: fam, ResyncInterval: resync,
		HostUnderlayProbes: true, GatewayUnderlayMTU: dsUnderlayMTU,
	})
	if err != nil {
		t.Fatal(err)
	}
	dumpOnFailure(t, s)
	dsDumpOnFailure(t, s)
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	took, err := s.WaitAllReady(rctx)
	rcancel()
	if err != nil {
		t.Fatalf("weftd not ready everywhere: %v", err)
	}
	t.Logf("%s, %s: all %d weftd ready %s after start", fam, backend, len(s.Members), took.Round(time.Millisecond))
	sts, err := s.Statuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range sts {
		m := s.Members[i]
		if st.PacketFilter != backend || st.CNIInterface == nil || st.CNIInterface.IP6 != m.CNIIPOf(scenario.IPv6).String() {
			t.Fatalf("%s: packet filter %q, CNI interface %+v; want %s and cni0's IPv6 %s", m.Node.Name, st.PacketFilter, st.CNIInterface, backend, m.CNIIPOf(scenario.IPv6))
		}
	}

	// weft's VXLAN runs over the underlay the plan says: IPv4 in dual
	// stack, IPv6 (and nothing IPv4 on the node) in IPv6 only.
	for _, m := range s.Members {
		out, _ := m.Node.Exec("ip", "-d", "link", "show", "dev", "vx-weft")
		want := "local " + m.Node.IP.String()
		if fam == harness.FamilyIPv6 {
			want = "local " + m.Node.IP6.String()
			if v4, _ := m.Node.Exec("ip", "-4", "-o", "addr", "show", "dev", "eth0"); strings.TrimSpace(v4) != "" {
				t.Errorf("%s: IPv4 on the IPv6-only underlay: %s", m.Node.Name, v4)
			}
		}
		if !strings.Contains(out, want) {
			t.Errorf("%s: vx-weft not over %s:\n%s", m.Node.Name, want, out)
		}
	}
	t.Run("masquerade-control", func(t *testing.T) { dsMasqueradeControl(ctx, t, s) })
	t.Run("matrix", func(t *testing.T) { dsCheckMatrix(ctx, t, s, 20*time.Second) })
	t.Run("vtep-to-vtep", func(t *testing.T) { dsCheckVTEPs(ctx, t, s) })
	t.Run("mss", func(t *testing.T) { dsCheckTransfer(ctx, t, s) })
	t.Run("gateway-move", func(t *testing.T) {
		start := time.Now()
		for _, gw := range []*harness.Node{s.Clusters.C1.Nodes[0], s.Clusters.C2.Nodes[0]} {
			if err := s.MoveGateway(ctx, gw); err != nil {
				t.Fatal(err)
			}
		}
		mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := s.WaitConverged(mctx, start); err != nil {
			t.Fatalf("nodes did not converge: %v", err)
		}
		t.Logf("roles converged %s after the move", time.Since(start).Round(time.Millisecond))
		dsCheckMatrix(ctx, t, s, 10*time.Second)
		t.Logf("matrix green %s after the move", time.Since(start).Round(time.Millisecond))
		dsCheckVTEPs(ctx, t, s)
	})
	t.Run("drift", func(t *testing.T) { runDrifts(ctx, t, s, dsDrifts(s, backend)) })
	t.Run("cleanup", func(t *testing.T) { dsCheckCleanup(ctx, t, s, backend) })
}

// dsMasqueradeControl: a pod reaching something outside both clusters'
// pod CIDRs (a remote node's underlay address) is masqueraded by the
// simulated CNI in each family, so the kept pod IPs of the matrix are
// weft's doing.
func dsMasqueradeControl(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	src, dst := s.Member("c1-n1"), s.Member("c2-n1")
	for _, fam := range s.Families() {
		srv, err := harness.ServeTCPEcho(s.Env, dst.Node.NS, netip.AddrPortFrom(dst.UnderlayIPOf(fam), 7001).String())
		if err != nil {
			t.Fatal(err)
		}
		seen, err := harness.DialTCP(ctx, src.Pod.NS, srv.Addr.String(), []byte("control"))
		if want := src.UnderlayIPOf(fam); err != nil || seen != want {
			t.Errorf("%s control: pod %s -> node %s: source %s (%v), want the masqueraded %s", fam, src.PodIPOf(fam), srv.Addr, seen, err, want)
		}
		_ = srv.Close()
	}
}

// dsCheckMatrix waits (up to limit) for the whole matrix to be green,
// logs every probe with the source the remote pod saw, and checks that it
// covers every family, source kind and role pair.
func dsCheckMatrix(ctx context.Context, t *testing.T, s *scenario.Scenario, limit time.Duration) {
	t.Helper()
	gctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	ps, took, err := s.WaitGreen(gctx)
	for _, p := range ps {
		t.Logf("%s %s", p.Family, p)
	}
	if err != nil {
		for _, p := range scenario.Failed(ps) {
			t.Errorf("%s %s", p.Family, p)
		}
		t.Fatalf("matrix: %v", err)
	}
	t.Logf("matrix of %d probes green after %s", len(ps), took.Round(time.Millisecond))
	seen := map[string]int{}
	for _, p := range ps {
		seen[fmt.Sprintf("%s %s %s->%s", p.Family, p.Kind, p.SrcRole, p.DstRole)]++
		m := s.Member(p.SrcNode)
		want := m.CNIIPOf(p.Family)
		if p.Kind == scenario.SourcePod {
			want = m.PodIPOf(p.Family)
		}
		if p.Seen != want || !want.IsValid() || want.Is6() != (p.Family == scenario.IPv6) {
			t.Errorf("%s %s: seen %s, want %s", p.Family, p, p.Seen, want)
		}
	}
	for _, fam := range s.Families() {
		for _, kind := range []string{scenario.SourcePod, scenario.SourceHost, scenario.SourceHostUnderlay} {
			for _, from := range []string{scenario.RoleGateway, scenario.RoleNonGateway} {
				for _, to := range []string{scenario.RoleGateway, scenario.RoleNonGateway} {
					if k := fmt.Sprintf("%s %s %s->%s", fam, kind, from, to); seen[k] == 0 {
						t.Errorf("matrix has no probe %s", k)
					}
				}
			}
		}
	}
}

// dsVTEP is the global address of a family on n's vx-weft.
func dsVTEP(t *testing.T, n *harness.Node, fam string) netip.Addr {
	t.Helper()
	flag := "-4"
	if fam == scenario.IPv6 {
		flag = "-6"
	}
	out, err := n.Exec("ip", "-o", flag, "addr", "show", "dev", "vx-weft", "scope", "global")
	if err != nil {
		t.Fatalf("%s: vx-weft addresses: %v %s", n.Name, err, out)
	}
	f := strings.Fields(out)
	for i := range f {
		if (f[i] == "inet" || f[i] == "inet6") && i+1 < len(f) {
			if p, err := netip.ParsePrefix(f[i+1]); err == nil {
				return p.Addr()
			}
		}
	}
	t.Fatalf("%s: no %s address on vx-weft:\n%s", n.Name, fam, out)
	return netip.Addr{}
}

// dsCheckVTEPs: in each cluster the non-gateway and the gateway reach each
// other's vx-weft address, and each sees the other's VTEP address as the
// source: the host SNAT (oifname vx-weft, source outside the local CIDRs)
// must not touch it, which only its match on the remote CIDRs ensures.
func dsCheckVTEPs(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	t.Helper()
	for _, c := range s.Clusters.Clusters() {
		gw := s.Gateway(c.ID)
		var ngw *harness.Node
		for _, n := range c.Nodes {
			if n != gw {
				ngw = n
				break
			}
		}
		for _, fam := range s.Families() {
			for _, pair := range [][2]*harness.Node{{ngw, gw}, {gw, ngw}} {
				from, to := pair[0], pair[1]
				src, dst := dsVTEP(t, from, fam), dsVTEP(t, to, fam)
				srv, err := harness.ServeUDPEcho(s.Env, to.NS, netip.AddrPortFrom(dst, 7002).String())
				if err != nil {
					t.Fatal(err)
				}
				uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				seen, err := harness.UDPRoundTrip(uctx, from.NS, netip.Addr{}, srv.Addr, []byte("vtep"))
				cancel()
				_ = srv.Close()
				if err != nil {
					t.Errorf("%s VTEP %s (%s) -> %s (%s): %v", fam, from.Name, src, to.Name, dst, err)
					continue
				}
				t.Logf("%s VTEP %s %s -> %s %s: seen from %s", fam, from.Name, s.Role(from), to.Name, dst, seen.Addr())
				if seen.Addr() != src {
					t.Errorf("%s VTEP %s -> %s: seen from %s, want its VTEP address %s (rewritten by SNAT?)", fam, from.Name, to.Name, seen.Addr(), src)
				}
			}
		}
	}
}

// dsCheckTransfer moves 4 MB between the pods of the two non-gateways
// through c1's gateway, whose underlay MTU is dsUnderlayMTU and whose
// bridge port drops larger frames: over each family it completes only
// with the SYN's MSS clamped to the route MTU of weft's devices there.
func dsCheckTransfer(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	src, dst := s.Member("c1-n1"), s.Member("c2-n1")
	if s.Role(src.Node) != scenario.RoleNonGateway || s.Role(dst.Node) != scenario.RoleNonGateway {
		t.Fatalf("roles %s %s: the transfer must run between non-gateways", s.Role(src.Node), s.Role(dst.Node))
	}
	overhead := topology.VXLANOverhead
	if s.Opts.Family == harness.FamilyIPv6 {
		overhead = topology.VXLANOverhead6
	}
	for _, fam := range s.Families() {
		hdr := 40
		if fam == scenario.IPv6 {
			hdr = 60
		}
		bound := dsUnderlayMTU - overhead - hdr
		addr := dst.PodAddrOf(fam).String()
		tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		tr, err := harness.TransferTCP(tctx, src.Pod.NS, addr, 4<<20)
		cancel()
		if err != nil {
			t.Errorf("%s: 4 MB %s -> %s: %v (server MSS %d)", fam, src.PodIPOf(fam), addr, err, tr.ServerMSS)
			continue
		}
		t.Logf("%s: 4 MB %s -> %s in %s; server MSS %d, client MSS %d, bound %d; source %s",
			fam, src.PodIPOf(fam), addr, tr.Duration.Round(time.Millisecond), tr.ServerMSS, tr.ClientMSS, bound, tr.Src.Addr())
		if tr.ServerMSS > bound || tr.ServerMSS < bound-40 {
			t.Errorf("%s: server MSS %d, want the SYN clamped to ≤ %d (and not far below)", fam, tr.ServerMSS, bound)
		}
		if tr.ClientMSS > bound {
			t.Errorf("%s: client MSS %d, want the SYN-ACK clamped to ≤ %d", fam, tr.ClientMSS, bound)
		}
		if tr.Src.Addr() != src.PodIPOf(fam) {
			t.Errorf("%s: server saw %s, want the pod IP %s", fam, tr.Src.Addr(), src.PodIPOf(fam))
		}
	}
}

// dsDrifts are the IPv6 objects removed behind weft's back, one per node
// (after the gateway move: n1 the gateways, n2 the non-gateways).
func dsDrifts(s *scenario.Scenario, backend string) []drift {
	c1n1, c1n2, c2n1, c2n2 := s.Member("c1-n1").Node, s.Member("c1-n2").Node, s.Member("c2-n1").Node, s.Member("c2-n2").Node
	remoteOfC2 := s.Clusters.C1.PodCIDR6.String()
	cases := []drift{
		{
			name: "IPv6 route deleted from table 240 on a non-gateway", node: c2n2,
			breakIt: [][]string{{"ip", "-6", "route", "del", remoteOfC2, "table", "240"}},
			back:    routeBack(c2n2, remoteOfC2, "vx-weft"),
		},
		{
			name: "IPv6 route deleted from table 240 on a gateway", node: c2n1,
			breakIt: [][]string{{"ip", "-6", "route", "del", remoteOfC2, "table", "240"}},
			back:    routeBack(c2n1, remoteOfC2, "vx-weft-cable"),
		},
		{
			name: "IPv6 rule deleted", node: c1n2,
			breakIt: [][]string{{"ip", "-6", "rule", "del", "priority", "240"}},
			back: func() error {
				out, err := c1n2.Exec("ip", "-6", "rule", "show")
				if err != nil || !strings.Contains(out, "lookup 240") {
					return fmt.Errorf("ip -6 rule missing: %v\n%s", err, out)
				}
				return nil
			},
		},
	}
	return append(cases, filterDrift(c1n1, backend, s.Clusters.C2.PodCIDR6.String()))
}

// dsCheckCleanup: after weftd stops, `weftd cleanup` leaves none of weft's
// IPv6 objects (nor IPv4 ones) and the CNI's ip6tables masquerade stays.
func dsCheckCleanup(ctx context.Context, t *testing.T, s *scenario.Scenario, backend string) {
	checks := []struct {
		args []string
		bad  []string
	}{
		{[]string{"ip", "-6", "rule", "show"}, []string{"lookup 240"}},
		{[]string{"ip", "-6", "route", "show", "table", "240"}, []string{"via", "dev"}},
		{[]string{"ip", "-d", "link", "show"}, []string{"vx-weft"}},
		{[]string{"ip", "-6", "neigh", "show"}, []string{"fd57:"}},
		{[]string{"nft", "list", "ruleset"}, []string{"table ip6 weft", "table ip weft", "table inet weft"}},
		{[]string{"ip6tables-save"}, []string{"WEFT"}},
		{[]string{"ipset", "list", "-n"}, []string{"weft-"}},
	}
	for _, m := range s.Members {
		before, _ := m.Node.Exec("ip", "-6", "rule", "show")
		if !strings.Contains(before, "lookup 240") {
			t.Errorf("%s: no ip -6 rule before cleanup:\n%s", m.Node.Name, before)
		}
		if err := m.Weftd.Stop(); err != nil {
			t.Errorf("%s: stop weftd: %v", m.Node.Name, err)
		}
		if out, err := m.Node.WeftdCleanup(ctx); err != nil {
			t.Errorf("%s: %v\n%s", m.Node.Name, err, out)
			continue
		}
		for _, c := range checks {
			out, err := m.Node.Exec(c.args[0], c.args[1:]...)
			if err != nil {
				t.Errorf("%s: %v: %v\n%s", m.Node.Name, c.args, err, out)
				continue
			}
			for _, b := range c.bad {
				if strings.Contains(out, b) {
					t.Errorf("%s after cleanup (%s): %v still shows %q:\n%s", m.Node.Name, backend, c.args, b, out)
				}
			}
		}
		if out, _ := m.Node.Exec("ip6tables-save", "-t", "nat"); !strings.Contains(out, "MASQUERADE") {
			t.Errorf("%s: cleanup removed the CNI's ip6tables masquerade:\n%s", m.Node.Name, out)
		}
	}
}

// dsDumpOnFailure adds the IPv6 half of each node's state to
// dumpOnFailure's.
func dsDumpOnFailure(t *testing.T, s *scenario.Scenario) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, m := range s.Members {
			var b strings.Builder
			fmt.Fprintf(&b, "=== %s IPv6 ===\n", m.Node.Name)
			for _, c := range [][]string{
				{"ip", "-6", "rule"}, {"ip", "-6", "route", "show", "table", "all"}, {"ip", "-6", "neigh"},
				{"ip", "-d", "link", "show", "vx-weft"}, {"ip6tables-save"},
			} {
				out, _ := m.Node.Exec(c[0], c[1:]...)
				fmt.Fprintf(&b, "$ %s\n%s\n", strings.Join(c, " "), out)
			}
			t.Log(b.String())
		}
	})
}
