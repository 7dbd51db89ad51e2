package pathprobe

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/pathhealth"
	"github.com/weft-net/weft/pkg/topology"
)

const planYAML = `
nodeName: NODE
cluster:
  id: c1
  podCIDRs: [10.1.0.0/16]
  gateway: c1-n1
  nodes:
    - {name: c1-n1, ip: 192.168.10.11}
    - {name: c1-n2, ip: 192.168.10.12}
remotes:
  - {id: c2, podCIDRs: [10.2.0.0/16], gatewayIP: 192.168.20.11, healthCheckIP: 10.2.1.1}
  - {id: c3, podCIDRs: [10.3.0.0/16], gatewayIP: 192.168.30.11}
`

func planFor(t *testing.T, node, ip, role string, extra string) Plan {
	t.Helper()
	cfg, err := config.ParseWith([]byte(strings.ReplaceAll(planYAML, "NODE", node)+extra), config.Env{})
	if err != nil {
		t.Fatal(err)
	}
	return PlanFor(cfg, topology.Inputs{NodeIP: netip.MustParseAddr(ip), CNIIP: netip.MustParseAddr("10.1." + ip[len(ip)-2:] + ".1")}, role)
}

func TestPlanFor(t *testing.T) {
	ap := netip.MustParseAddrPort
	a := netip.MustParseAddr
	tests := []struct {
		name, node, ip, role, extra string
		want                        []pathhealth.Target
	}{
		{"non-gateway", "c1-n2", "192.168.10.12", topology.RoleNonGateway, "", []pathhealth.Target{
			{Name: "gateway/c1-n1", Hop: pathhealth.HopGateway, Cluster: "c1", Node: "c1-n1", Address: ap("240.168.10.11:0"), Source: a("240.168.10.12")},
			// c3 has no health-check IP: its whole path is not probed.
			{Name: "remote/c2", Hop: pathhealth.HopRemote, Cluster: "c2", Address: ap("10.2.1.1:0"), Source: a("10.1.12.1")},
		}},
		{"gateway", "c1-n1", "192.168.10.11", topology.RoleGateway, "", []pathhealth.Target{
			{Name: "cable/c2", Hop: pathhealth.HopCable, Cluster: "c2", Address: ap("241.168.20.11:0"), Source: a("241.168.10.11")},
			{Name: "cable/c3", Hop: pathhealth.HopCable, Cluster: "c3", Address: ap("241.168.30.11:0"), Source: a("241.168.10.11")},
			{Name: "remote/c2", Hop: pathhealth.HopRemote, Cluster: "c2", Address: ap("10.2.1.1:0"), Source: a("10.1.11.1")},
		}},
		// udp probes go to the responder's port.
		{"udp", "c1-n2", "192.168.10.12", topology.RoleNonGateway, "healthCheck: {protocol: udp}\n", []pathhealth.Target{
			{Name: "gateway/c1-n1", Hop: pathhealth.HopGateway, Cluster: "c1", Node: "c1-n1", Address: ap("240.168.10.11:4803"), Source: a("240.168.10.12")},
			{Name: "remote/c2", Hop: pathhealth.HopRemote, Cluster: "c2", Address: ap("10.2.1.1:4803"), Source: a("10.1.12.1")},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := planFor(t, tc.node, tc.ip, tc.role, tc.extra)
			want := Timing{Protocol: config.HealthCheckICMP, Port: 4803, Interval: 400 * time.Millisecond, Fast: 50 * time.Millisecond, LossThreshold: 3}
			if tc.extra != "" {
				want.Protocol = config.HealthCheckUDP
			}
			if !p.Enabled || p.Timing != want {
				t.Errorf("plan settings %+v, want %+v", p, want)
			}
			checkTargets(t, p.Targets, tc.want)
		})
	}
}

func checkTargets(t *testing.T, got, want []pathhealth.Target) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("targets %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("target %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

const planYAML6 = `
nodeName: NODE
cluster:
  id: c1
  podCIDRs: [fd01::/48]
  gateway: c1-n1
  nodes:
    - {name: c1-n1, ip6: "fd00:10::11"}
    - {name: c1-n2, ip6: "fd00:10::12"}
remotes:
  - {id: c2, podCIDRs: ["fd02::/48"], gatewayIP: "fd00:20::11"}
`

// An IPv6-only cluster probes its IPv6 VTEPs, and a remote whose
// health-check IP is IPv6 is probed from the CNI interface's IPv6 address.
func TestPlanForIPv6(t *testing.T) {
	a := netip.MustParseAddr
	ap := func(s string) netip.AddrPort { return netip.AddrPortFrom(a(s), 0) }
	for _, tc := range []struct {
		name, node, ip, role string
		want                 []pathhealth.Target
	}{
		{"non-gateway", "c1-n2", "fd00:10::12", topology.RoleNonGateway, []pathhealth.Target{
			{Name: "gateway/c1-n1", Hop: pathhealth.HopGateway, Cluster: "c1", Node: "c1-n1", Address: ap("fd57:6566:7400::11"), Source: a("fd57:6566:7400::12")},
			{Name: "remote/c2", Hop: pathhealth.HopRemote, Cluster: "c2", Address: ap("fd02:0:0:1::1"), Source: a("fd01:0:0:12::1")},
		}},
		{"gateway", "c1-n1", "fd00:10::11", topology.RoleGateway, []pathhealth.Target{
			{Name: "cable/c2", Hop: pathhealth.HopCable, Cluster: "c2", Address: ap("fd57:6566:7400:1::11"), Source: a("fd57:6566:7400:1::11")},
			{Name: "remote/c2", Hop: pathhealth.HopRemote, Cluster: "c2", Address: ap("fd02:0:0:1::1"), Source: a("fd01:0:0:11::1")},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.ParseWith([]byte(strings.ReplaceAll(planYAML6, "NODE", tc.node)), config.Env{})
			if err != nil {
				t.Fatal(err)
			}
			// The topology sources fill it in (the file's healthCheckIP6, a
			// Submariner Endpoint's healthCheckIPs).
			cfg.Parsed.Remotes[0].HealthCheckIP6 = a("fd02:0:0:1::1")
			in := topology.Inputs{NodeIP: a(tc.ip), CNIIP6: a("fd01:0:0:" + tc.ip[len(tc.ip)-2:] + "::1")}
			checkTargets(t, PlanFor(cfg, in, tc.role).Targets, tc.want)
		})
	}
	// A dual-stack remote with a target of each family, probed from a
	// dual-stack node: one whole-path probe per family, each from the CNI
	// address of its family; a node without an IPv4 CNI address probes the
	// IPv6 one alone, under the plain name.
	cfg, err := config.ParseWith([]byte(strings.ReplaceAll(planYAML6, "NODE", "c1-n2")), config.Env{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Parsed.Remotes[0].HealthCheckIP = a("10.2.1.1")
	cfg.Parsed.Remotes[0].HealthCheckIP6 = a("fd02:0:0:1::1")
	remotes := func(ts []pathhealth.Target) (out []pathhealth.Target) {
		for _, x := range ts {
			if x.Hop == pathhealth.HopRemote {
				out = append(out, x)
			}
		}
		return out
	}
	in := topology.Inputs{NodeIP: a("fd00:10::12"), CNIIP: a("10.1.12.1"), CNIIP6: a("fd01:0:0:12::1")}
	checkTargets(t, remotes(PlanFor(cfg, in, topology.RoleNonGateway).Targets), []pathhealth.Target{
		{Name: "remote/c2", Hop: pathhealth.HopRemote, Cluster: "c2", Address: ap("10.2.1.1"), Source: a("10.1.12.1")},
		{Name: "remote/c2/ipv6", Hop: pathhealth.HopRemote, Cluster: "c2", Address: ap("fd02:0:0:1::1"), Source: a("fd01:0:0:12::1")},
	})
	in.CNIIP = netip.Addr{}
	checkTargets(t, remotes(PlanFor(cfg, in, topology.RoleNonGateway).Targets), []pathhealth.Target{
		{Name: "remote/c2", Hop: pathhealth.HopRemote, Cluster: "c2", Address: ap("fd02:0:0:1::1"), Source: a("fd01:0:0:12::1")},
	})
}

func TestReportNamesTheBrokenHop(t *testing.T) {
	gw := pathhealth.TargetStatus{Target: pathhealth.Target{Name: "gateway/c1-n1", Hop: pathhealth.HopGateway, Node: "c1-n1", Address: netip.MustParseAddrPort("240.168.10.11:4803")}, Up: true}
	remote := pathhealth.TargetStatus{Target: pathhealth.Target{Name: "remote/c2", Hop: pathhealth.HopRemote, Cluster: "c2", Address: netip.MustParseAddrPort("10.2.1.1:4803"), Source: netip.MustParseAddr("10.1.12.1")}, Up: true}
	cable := pathhealth.TargetStatus{Target: pathhealth.Target{Name: "cable/c2", Hop: pathhealth.HopCable, Cluster: "c2", Address: netip.MustParseAddrPort("241.168.20.11:4803")}, Up: true}
	down := func(s pathhealth.TargetStatus) pathhealth.TargetStatus {
		s.Up, s.Message = false, "no answer"
		return s
	}
	tests := []struct {
		name        string
		role        string
		targets     []pathhealth.TargetStatus
		gwOK, remOK bool
		gwMsg       string
		remMsg      string
	}{
		{"all up", topology.RoleNonGateway, []pathhealth.TargetStatus{gw, remote}, true, true, "answers", "answering: c2"},
		{"node to gateway", topology.RoleNonGateway, []pathhealth.TargetStatus{down(gw), down(remote)}, false, false, "this node → gateway c1-n1", "whole path to cluster c2: this node → gateway is broken"},
		{"beyond the gateway", topology.RoleNonGateway, []pathhealth.TargetStatus{gw, down(remote)}, true, false, "answers", "whole path to cluster c2 (10.1.12.1 → 10.2.1.1:4803)"},
		{"cable", topology.RoleGateway, []pathhealth.TargetStatus{down(cable), down(remote)}, true, false, "this node is the gateway", "gateway → remote gateway of c2 (cable VTEP 241.168.20.11)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, conds := Report(pathhealth.Snapshot{Targets: tc.targets}, Plan{Role: tc.role, Timing: Timing{Protocol: config.HealthCheckUDP, Port: 4803}, VXLANPort: 4800, CablePort: 4801})
			if len(h.Targets) != len(tc.targets) || len(conds) != 2 {
				t.Fatalf("report %+v %+v", h, conds)
			}
			for _, c := range []struct {
				ok  bool
				msg string
				i   int
			}{{tc.gwOK, tc.gwMsg, 0}, {tc.remOK, tc.remMsg, 1}} {
				got := conds[c.i]
				if got.Status != c.ok || !strings.Contains(got.Message, c.msg) || (!got.Status && got.Fix == "") {
					t.Errorf("%s = %v %q (fix %q), want %v containing %q and a fix when false", got.Type, got.Status, got.Message, got.Fix, c.ok, c.msg)
				}
			}
		})
	}
}

func TestReportThrottle(t *testing.T) {
	t0 := time.Unix(1000, 0)
	up := pathhealth.TargetStatus{Target: pathhealth.Target{Name: "remote/c2"}, Up: true}
	down := up
	down.Up = false
	snap := func(at time.Duration, ts ...pathhealth.TargetStatus) pathhealth.Snapshot {
		return pathhealth.Snapshot{At: t0.Add(at), Targets: ts}
	}
	var th reportThrottle
	steps := []struct {
		s    pathhealth.Snapshot
		want bool
	}{
		{snap(0, up), true},
		{snap(100*time.Millisecond, up), false},  // RTT only: waits
		{snap(200*time.Millisecond, down), true}, // a target went down: at once
		{snap(300*time.Millisecond, down), false},
		{snap(400*time.Millisecond, up), true},  // and back up: at once
		{snap(1400*time.Millisecond, up), true}, // a second later: refreshed
		{snap(1500 * time.Millisecond), true},   // the target went away
	}
	for i, st := range steps {
		if got := th.due(st.s); got != st.want {
			t.Errorf("step %d: due = %v, want %v", i, got, st.want)
		}
	}
}
