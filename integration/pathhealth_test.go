package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/scenario"
	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/netnstest"
)

// pathPromise is issue 13's: a broken hop is reported within a second of
// the break, and the report clears within a second of the repair.
const pathPromise = time.Second

// TestPathHealth breaks each hop of the path from c1 to c2 in turn, on
// both backends, and times how long the right condition takes to name the
// right hop, and to clear after the repair: with the default ICMP probes,
// then with protocol udp (weftd's responder) after a reload.
func TestPathHealth(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) { testPathHealth(t, backend) })
	}
}

// pathCase is one break: apply it, and what each watched node must say.
type pathCase struct {
	name    string
	breakIt func(t *testing.T) (repair func())
	// want: node name -> condition type -> substring of its message
	// while broken (the condition is false).
	want map[string]map[string]string
	// healthy: node name -> condition that must stay true meanwhile.
	healthy map[string]string
}

func testPathHealth(t *testing.T, backend string) {
	env := harness.NewTestEnv(t)
	if !env.HasBin("weftd") || !env.HasBin("weft") {
		t.Skipf("weft binaries not built in %s (make build)", env.BinDir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	s, err := scenario.Build(ctx, env, scenario.Options{Backend: backend, HealthCheckIPs: true})
	if err != nil {
		t.Fatal(err)
	}
	dumpOnFailure(t, s)
	readyCtx, readyCancel := context.WithTimeout(ctx, 20*time.Second)
	_, err = s.WaitAllReady(readyCtx)
	readyCancel()
	if err != nil {
		t.Fatal(err)
	}
	n1, gw1, gw2 := s.Member("c1-n1"), s.Member("c1-n2"), s.Member("c2-n2")
	if s.Gateway("c1") != gw1.Node || s.Gateway("c2") != gw2.Node {
		t.Fatalf("scenario gateways are %s and %s, want c1-n2 and c2-n2", s.Gateway("c1").Name, s.Gateway("c2").Name)
	}
	waitHealthy(ctx, t, s)

	t.Run("rtt", func(t *testing.T) { checkPathRTT(ctx, t, s, env) })

	ul := s.Clusters.Underlay.NS
	cases := []pathCase{
		{
			name:    "node-gateway-underlay",
			breakIt: func(t *testing.T) func() { return cutUnderlay(t, ul, n1.Node.IP, gw1.Node.IP) },
			want: map[string]map[string]string{
				"c1-n1": {
					"GatewayReachable": "this node → gateway c1-n2",
					"RemotesReachable": "whole path to cluster c2: this node → gateway is broken",
				},
			},
			healthy: map[string]string{"c1-n2": "RemotesReachable", "c1-n3": "GatewayReachable"},
		},
		{
			name:    "gateway-remote-gateway-underlay",
			breakIt: func(t *testing.T) func() { return cutUnderlay(t, ul, gw1.Node.IP, gw2.Node.IP) },
			want: map[string]map[string]string{
				"c1-n2": {"RemotesReachable": "gateway → remote gateway of c2"},
				"c1-n1": {"RemotesReachable": "whole path to cluster c2 (" + n1.CNIIP().String() + " → "},
			},
			healthy: map[string]string{"c1-n1": "GatewayReachable"},
		},
		{
			name: "foreign-drop-on-remote-gateway",
			breakIt: func(t *testing.T) func() {
				return foreignDrop(t, gw2.Node.NS, gw2.CNIIP(), config.HealthCheckICMP)
			},
			want: map[string]map[string]string{
				"c1-n1": {"RemotesReachable": "whole path to cluster c2 (" + n1.CNIIP().String() + " → " + gw2.CNIIP().String()},
				"c1-n2": {"RemotesReachable": "whole path to cluster c2 (" + gw1.CNIIP().String() + " → " + gw2.CNIIP().String()},
			},
			healthy: map[string]string{"c1-n1": "GatewayReachable"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { checkPathBreak(ctx, t, s, tc) })
	}
	if responderAccepted(s.Member("c1-n1"), backend) {
		t.Error("with ICMP probes weft's filter still accepts the UDP responder's port")
	}

	// protocol udp: every weftd answers on the port, and the foreign
	// rule that breaks the path is a UDP one.
	for _, m := range s.Members {
		writeHealthCheck(t, s, m, map[string]any{"protocol": config.HealthCheckUDP})
	}
	t.Run("udp", func(t *testing.T) {
		waitProtocol(ctx, t, s, config.HealthCheckUDP)
		c := cases[2]
		c.name = "udp-" + c.name
		c.breakIt = func(t *testing.T) func() {
			return foreignDrop(t, gw2.Node.NS, gw2.CNIIP(), config.HealthCheckUDP)
		}
		c.want = map[string]map[string]string{
			"c1-n1": {"RemotesReachable": "whole path to cluster c2 (" + n1.CNIIP().String() + " → " + netip.AddrPortFrom(gw2.CNIIP(), config.DefaultHealthCheckPort).String()},
		}
		t.Run(c.name, func(t *testing.T) { checkPathBreak(ctx, t, s, c) })
		t.Run("switched-off-and-on", func(t *testing.T) { checkHealthCheckReload(ctx, t, s, backend) })
	})
}

// writeHealthCheck rewrites m's weftd file with this healthCheck section
// (weftd reloads it).
func writeHealthCheck(t *testing.T, s *scenario.Scenario, m *scenario.Member, hc map[string]any) {
	t.Helper()
	cfg := s.Config(m.Node)
	cfg["healthCheck"] = hc
	if err := m.Node.RewriteWeftdConfig(cfg.MustYAML()); err != nil {
		t.Fatal(err)
	}
}

// waitProtocol waits until every weftd probes with protocol and is healthy.
func waitProtocol(ctx context.Context, t *testing.T, s *scenario.Scenario, protocol string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, m := range s.Members {
		if _, err := m.Weftd.WaitFor(wctx, func(st api.Status) bool {
			return st.PathHealth != nil && st.PathHealth.Protocol == protocol
		}); err != nil {
			t.Fatalf("%s never switched to %s probes: %v", m.Node.Name, protocol, err)
		}
	}
	waitHealthy(ctx, t, s)
}

// responderAccepted reports whether weft's filter on m accepts the UDP
// responder's default port.
func responderAccepted(m *scenario.Member, backend string) bool {
	if backend == "nftables" {
		out, _ := m.Node.Exec("nft", "list", "chain", "ip", "weft", "input")
		return strings.Contains(out, fmt.Sprintf("udp dport %d accept", config.DefaultHealthCheckPort))
	}
	out, _ := m.Node.Exec("iptables-save", "-t", "filter")
	return strings.Contains(out, fmt.Sprintf("-A WEFT-INPUT -p udp -m udp --dport %d -j ACCEPT", config.DefaultHealthCheckPort))
}

// checkHealthCheckReload turns the udp health check off on c1-n1 by a
// reload: the responder's accept rule, the conditions and pathHealth go;
// turned back on, they return, without a restart.
func checkHealthCheckReload(ctx context.Context, t *testing.T, s *scenario.Scenario, backend string) {
	m := s.Member("c1-n1")
	rule := func() bool { return responderAccepted(m, backend) }
	if !rule() {
		t.Fatal("the responder's port is not accepted in weft's input chain")
	}
	write := func(on bool) {
		writeHealthCheck(t, s, m, map[string]any{"enabled": on, "protocol": config.HealthCheckUDP})
	}
	write(false)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := m.Weftd.WaitFor(wctx, func(st api.Status) bool {
		_, gw := condOf(st, "GatewayReachable")
		_, rm := condOf(st, "RemotesReachable")
		return st.PathHealth == nil && !gw && !rm && st.Ready && !rule()
	}); err != nil {
		t.Fatalf("health check off: %v", err)
	}
	write(true)
	if _, err := m.Weftd.WaitFor(wctx, func(st api.Status) bool {
		return condIs(st, "GatewayReachable", true) && condIs(st, "RemotesReachable", true) && st.PathHealth != nil && rule()
	}); err != nil {
		t.Fatalf("health check back on: %v", err)
	}
}

// waitHealthy waits until every node of both clusters reports both path
// conditions true with every target probed.
func waitHealthy(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, m := range s.Members {
		want := 2 // gateway/<gw> + remote/<other>
		if s.Role(m.Node) == scenario.RoleGateway {
			want = 2 // cable/<other> + remote/<other>
		}
		if _, err := m.Weftd.WaitFor(wctx, func(st api.Status) bool {
			return condIs(st, "GatewayReachable", true) && condIs(st, "RemotesReachable", true) &&
				st.PathHealth != nil && len(st.PathHealth.Targets) == want && allUp(st.PathHealth)
		}); err != nil {
			t.Fatalf("%s never healthy: %v", m.Node.Name, err)
		}
	}
}

func allUp(h *api.PathHealth) bool {
	for _, t := range h.Targets {
		if !t.Up || t.Sent == 0 || t.Sent == t.Lost {
			return false
		}
	}
	return true
}

func condIs(st api.Status, typ string, status bool) bool {
	c, ok := condOf(st, typ)
	return ok && c.Status == status
}

func checkPathBreak(ctx context.Context, t *testing.T, s *scenario.Scenario, tc pathCase) {
	waitHealthy(ctx, t, s)
	// The break takes effect while breakIt runs (one nft transaction):
	// detection is timed from before it, an upper bound.
	brokeAt := time.Now()
	repair := tc.breakIt(t)
	t.Logf("break applied in %s", time.Since(brokeAt).Round(time.Millisecond))
	repaired := false
	defer func() {
		if !repaired {
			repair()
		}
	}()
	for node, conds := range tc.want {
		m := s.Member(node)
		for typ, msg := range conds {
			st, err := m.Weftd.WaitFor(ctx, func(st api.Status) bool {
				c, ok := condOf(st, typ)
				return ok && !c.Status && strings.Contains(c.Message, msg)
			})
			if err != nil {
				t.Fatalf("%s %s never named %q: %v", node, typ, msg, err)
			}
			c, _ := condOf(st, typ)
			// Since is weftd's own record of the change (same clock as
			// the test's): the poll only bounds it from above.
			took := c.Since.Sub(brokeAt)
			t.Logf("%s %s: detected in %s (seen by the poll after %s): %s; fix: %s", node, typ, took.Round(time.Millisecond),
				time.Since(brokeAt).Round(time.Millisecond), c.Message, c.Fix)
			if took > pathPromise {
				t.Errorf("%s %s: detected after %s, promise is %s", node, typ, took.Round(time.Millisecond), pathPromise)
			}
			if c.Fix == "" {
				t.Errorf("%s %s: no fix line", node, typ)
			}
			if !st.Ready {
				t.Errorf("%s: a broken path made the node unready", node)
			}
		}
	}
	for node, typ := range tc.healthy {
		st, err := s.Member(node).Weftd.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c, _ := condOf(st, typ); !c.Status {
			t.Errorf("%s %s = %+v: the break is not on this node's hop", node, typ, c)
		}
	}

	repairedAt := time.Now()
	repair()
	repaired = true
	for node, conds := range tc.want {
		m := s.Member(node)
		for typ := range conds {
			st, err := m.Weftd.WaitFor(ctx, func(st api.Status) bool { return condIs(st, typ, true) })
			if err != nil {
				t.Fatalf("%s %s never cleared: %v", node, typ, err)
			}
			c, _ := condOf(st, typ)
			took := c.Since.Sub(repairedAt)
			t.Logf("%s %s: cleared in %s (seen by the poll after %s)", node, typ, took.Round(time.Millisecond), time.Since(repairedAt).Round(time.Millisecond))
			if took > pathPromise {
				t.Errorf("%s %s: cleared after %s, promise is %s", node, typ, took.Round(time.Millisecond), pathPromise)
			}
		}
	}
}

// cutUnderlay drops every IPv4 packet between a and b on the underlay
// bridge (the wire between two nodes), in the test's underlay namespace,
// in one nft transaction.
func cutUnderlay(t *testing.T, ul *netnstest.NS, a, b netip.Addr) func() {
	t.Helper()
	nftScript(t, ul, fmt.Sprintf(`table bridge cut {
	chain forward {
		type filter hook forward priority 0;
		ip saddr %[1]s ip daddr %[2]s drop
		ip saddr %[2]s ip daddr %[1]s drop
	}
}
`, a, b))
	return func() { ul.MustExec(t, "nft", "delete", "table", "bridge", "cut") }
}

// foreignDrop is another tool's rule on a node: a foreign nft table that
// drops the probes of this protocol to addr (ICMP echo requests, or UDP to
// the responder's port; weft's own accept cannot override it).
func foreignDrop(t *testing.T, n *netnstest.NS, addr netip.Addr, protocol string) func() {
	t.Helper()
	what := "icmp type echo-request"
	if protocol == config.HealthCheckUDP {
		what = fmt.Sprintf("udp dport %d", config.DefaultHealthCheckPort)
	}
	nftScript(t, n, fmt.Sprintf(`table ip foreign {
	chain input {
		type filter hook input priority -10;
		ip daddr %s %s drop
	}
}
`, addr, what))
	return func() { n.MustExec(t, "nft", "delete", "table", "ip", "foreign") }
}

func nftScript(t *testing.T, n *netnstest.NS, script string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "break.nft")
	if err := os.WriteFile(f, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	n.MustExec(t, "nft", "-f", f)
}

// checkPathRTT compares weft's RTT figures with the test's own UDP round
// trips over the same path (same source, same destination address).
func checkPathRTT(ctx context.Context, t *testing.T, s *scenario.Scenario, env *harness.Env) {
	n1, gw2 := s.Member("c1-n1"), s.Member("c2-n2")
	type ref struct {
		target   string
		src      netip.Addr
		echoIn   *netnstest.NS
		echoAddr netip.Addr
		rtts     chan []float64
	}
	refs := []*ref{
		{target: "gateway/c1-n2", src: netip.MustParseAddr("240.168.10.11"), echoIn: s.Member("c1-n2").Node.NS, echoAddr: netip.MustParseAddr("240.168.10.12")},
		{target: "remote/c2", src: n1.CNIIP(), echoIn: gw2.Node.NS, echoAddr: gw2.CNIIP()},
	}
	// The reference probes run while the prober's window fills (one
	// every 100 ms), so both see the same machine.
	stop := make(chan struct{})
	for _, r := range refs {
		echo, err := harness.ServeUDPEcho(env, r.echoIn, net.JoinHostPort(r.echoAddr.String(), "0"))
		if err != nil {
			t.Fatal(err)
		}
		r.rtts = make(chan []float64, 1)
		go func() {
			out, err := udpRTTs(n1.Node.NS, r.src, netip.AddrPortFrom(r.echoAddr, echo.Addr.Port()), stop)
			if err != nil {
				t.Error(err)
			}
			r.rtts <- out
		}()
	}
	// The comparison waits for 40 answers of each target (one every
	// 400 ms). The start-up losses (neighbour resolution, the remote cni0
	// not there yet) do not count in the RTT figures, which are over the
	// answered probes only.
	wctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	start := time.Now()
	st, err := n1.Weftd.WaitFor(wctx, func(st api.Status) bool {
		if st.PathHealth == nil || time.Since(start) < 17*time.Second {
			return false
		}
		for _, pt := range st.PathHealth.Targets {
			if pt.Sent-pt.Lost < 40 {
				return false
			}
		}
		return true
	})
	close(stop)
	if err != nil {
		t.Fatalf("never 40 answers of each target: %v", err)
	}
	for _, r := range refs {
		rtts := <-r.rtts
		if len(rtts) < 50 {
			t.Fatalf("%s: only %d reference round trips", r.target, len(rtts))
		}
		var pt *api.PathTarget
		for i := range st.PathHealth.Targets {
			if st.PathHealth.Targets[i].Name == r.target {
				pt = &st.PathHealth.Targets[i]
			}
		}
		if pt == nil {
			t.Fatalf("no target %s in %+v", r.target, st.PathHealth)
		}
		refMean := mean(rtts)
		slices.Sort(rtts)
		t.Logf("c1-n1 %s: weft rtt last %.3f min %.3f mean %.3f max %.3f stddev %.3f ms over %d probes (%d lost); reference mean %.3f median %.3f min %.3f max %.3f ms over %d round trips in the same period",
			r.target, pt.RTT.LastMs, pt.RTT.MinMs, pt.RTT.MeanMs, pt.RTT.MaxMs, pt.RTT.StdDevMs, pt.Sent, pt.Lost,
			refMean, rtts[len(rtts)/2], rtts[0], rtts[len(rtts)-1], len(rtts))
		if q := pt.RTT.MeanMs / refMean; q < 0.1 || q > 10 {
			t.Errorf("%s: weft's mean RTT %.3f ms and the reference's %.3f ms differ by more than an order of magnitude", r.target, pt.RTT.MeanMs, refMean)
		}
		if pt.RTT.MinMs <= 0 || pt.RTT.MinMs > pt.RTT.MeanMs || pt.RTT.MeanMs > pt.RTT.MaxMs {
			t.Errorf("%s: rtt %+v not ordered min ≤ mean ≤ max", r.target, pt.RTT)
		}
	}
}

// udpRTTs times round trips from src (in ns) to dst, one every 100 ms,
// until stop is closed, in milliseconds.
func udpRTTs(n *netnstest.NS, src netip.Addr, dst netip.AddrPort, stop <-chan struct{}) ([]float64, error) {
	var c *net.UDPConn
	if err := n.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		return nil, err
	}
	defer c.Close()
	buf := make([]byte, 512)
	payload := make([]byte, 32) // the size of weft's probe
	var out []float64
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return out, nil
		case <-tick.C:
		}
		start := time.Now()
		if _, err := c.Write(payload); err != nil {
			return out, err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(buf); err != nil {
			continue // lost like a start-up probe: not a round trip
		}
		out = append(out, float64(time.Since(start).Microseconds())/1000)
	}
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// checkWholePathProbed: every node probes the whole path to the other
// cluster's gateway cni0 (its health-check IP, from the topology
// source), and it answers.
func checkWholePathProbed(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	for _, m := range s.Members {
		other := "c2"
		if m.Cluster.ID == "c2" {
			other = "c1"
		}
		want := scenario.BridgeCNIIP(s.Gateway(other)).String() // an ICMP target: no port
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		st, err := m.Weftd.WaitFor(wctx, func(st api.Status) bool {
			if st.PathHealth == nil {
				return false
			}
			for _, pt := range st.PathHealth.Targets {
				if pt.Name == "remote/"+other && pt.Address == want && pt.Up && pt.Sent > pt.Lost {
					return condIs(st, "RemotesReachable", true)
				}
			}
			return false
		})
		cancel()
		if err != nil {
			t.Fatalf("%s never probed the whole path to %s: %v", m.Node.Name, other, err)
		}
		for _, pt := range st.PathHealth.Targets {
			if pt.Name == "remote/"+other {
				t.Logf("%s → %s: %s from %s, rtt mean %.3f ms", m.Node.Name, other, pt.Address, pt.Source, pt.RTT.MeanMs)
			}
		}
	}
}
