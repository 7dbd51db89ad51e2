package topology

import (
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/dataplane"
	"github.com/weft-net/weft/pkg/packetfilter"
)

var (
	ip  = netip.MustParseAddr
	pfx = netip.MustParsePrefix
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestVTEPIP(t *testing.T) {
	tests := []struct {
		cidr, node string
		want       string // "" = invalid
	}{
		{"240.0.0.0/8", "192.168.10.12", "240.168.10.12"},
		{"241.0.0.0/8", "192.168.20.11", "241.168.20.11"},
		{"240.7.0.0/16", "192.168.10.12", "240.7.10.12"},
		{"240.7.3.0/24", "10.1.2.200", "240.7.3.200"},
		{"240.0.0.0/4", "192.168.10.12", "240.168.10.12"}, // 192 = 1100 0000: its low nibble is 0
		{"240.0.0.0/4", "207.1.2.3", "255.1.2.3"},
		{"0.0.0.0/0", "10.1.2.3", "10.1.2.3"},
		{"240.1.2.3/32", "10.9.9.9", "240.1.2.3"},
		{"240.0.0.0/8", "fd00::1", ""},
		// IPv6 ranges: an IPv4 node address is the low 32 bits, an IPv6
		// one gives its host bits.
		{"fd57:6566:7400::/96", "192.168.10.12", "fd57:6566:7400::c0a8:a0c"},
		{"fd57:6566:7400:1::/96", "192.168.20.11", "fd57:6566:7400:1:0:0:c0a8:140b"},
		{"fd57:6566:7400::/96", "fd00:10::12", "fd57:6566:7400::12"},
		{"fd57:6566:7400::/100", "fd00:10::ffff:1234", "fd57:6566:7400::fff:1234"},
		{"fd57:6566:7400::/126", "fd00:10::7", "fd57:6566:7400::3"},
		{"fd00::/8", "10.1.2.3", "fd00::a01:203"},
	}
	for _, tc := range tests {
		got := VTEPIP(pfx(tc.cidr), ip(tc.node))
		var want netip.Addr
		if tc.want != "" {
			want = ip(tc.want)
		}
		if got != want {
			t.Errorf("VTEPIP(%s, %s) = %v, want %v", tc.cidr, tc.node, got, want)
		}
	}
	if got := VTEPIP(netip.Prefix{}, ip("10.1.2.3")); got.IsValid() {
		t.Errorf("invalid prefix gave %v", got)
	}
}

const baseYAML = `
nodeName: NODE
cluster:
  id: c1
  podCIDRs: [10.1.0.0/16]
  serviceCIDRs: [10.101.0.0/16]
  gateway: GATEWAY
  nodes:
    - {name: c1-n1, ip: 192.168.10.11}
    - {name: c1-n2, ip: 192.168.10.12}
    - {name: c1-n3, ip: 192.168.10.13}
remotes:
  - id: c3
    podCIDRs: [10.3.0.0/16]
    gatewayIP: 192.168.30.11
  - id: c2
    podCIDRs: [10.2.0.0/16]
    serviceCIDRs: [10.102.0.0/16]
    gatewayIP: 192.168.20.11
cable: CABLE
`

func parse(t *testing.T, node, gateway, cable string, extra string) *config.Config {
	t.Helper()
	y := strings.NewReplacer("NODE", node, "GATEWAY", gateway, "CABLE", cable).Replace(baseYAML) + extra
	cfg, err := config.ParseWith([]byte(y), config.Env{})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func inputs(nodeIP string) Inputs {
	return Inputs{
		NodeIP:      ip(nodeIP),
		UnderlayIf:  "eth0",
		UnderlayMTU: 1500,
		CNIIf:       "cni0",
		CNIIP:       ip("10.1.2.1"),
	}
}

var wantFilter = packetfilter.Model{
	LocalCIDRs:  []netip.Prefix{pfx("10.1.0.0/16"), pfx("10.101.0.0/16")},
	RemoteCIDRs: []netip.Prefix{pfx("10.2.0.0/16"), pfx("10.3.0.0/16"), pfx("10.102.0.0/16")},
	Devices:     []string{"vx-weft"},
	CNIIP:       ip("10.1.2.1"),
	VXLANPorts:  []uint16{4800},
	// The health check is on by default (issue 13) with ICMP probes: no
	// responder port to accept.
	MSS: packetfilter.MSS{Mode: "pmtu"},
}

// The filter accepts the responder's port exactly when a responder runs:
// health check on with protocol udp.
func TestHealthCheckPortFollowsTheResponder(t *testing.T) {
	for _, tc := range []struct {
		extra string
		want  uint16
	}{
		{"healthCheck: {enabled: false}\n", 0},
		{"healthCheck: {enabled: false, protocol: udp}\n", 0},
		{"", 0},
		{"healthCheck: {protocol: icmp}\n", 0},
		{"healthCheck: {protocol: udp}\n", 4803},
		{"healthCheck: {protocol: udp, port: 4900}\n", 4900},
	} {
		cfg := parse(t, "c1-n2", "c1-n1", "vxlan", tc.extra)
		res, err := Desired(cfg, inputs("192.168.10.12"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Filter.HealthCheckPort != tc.want {
			t.Errorf("%q: filter accepts health-check port %d, want %d", tc.extra, res.Filter.HealthCheckPort, tc.want)
		}
	}
}

func TestDesiredNonGateway(t *testing.T) {
	for _, cable := range []string{"vxlan", "none"} {
		t.Run(cable, func(t *testing.T) {
			res, err := Desired(parse(t, "c1-n2", "c1-n1", cable, ""), inputs("192.168.10.12"))
			if err != nil {
				t.Fatal(err)
			}
			gwVTEP := ip("240.168.10.11")
			want := Result{
				Role: RoleNonGateway,
				Dataplane: dataplane.State{
					Devices: []dataplane.VXLAN{{
						Name: "vx-weft", VNI: 100, Port: 4800, Underlay: "eth0", LocalIP: ip("192.168.10.12"),
						MTU: 1450, Addr: pfx("240.168.10.12/8"), MAC: mac("02:57:f0:a8:0a:0c"),
						Peers: []dataplane.Peer{{VTEP: gwVTEP, MAC: mac("02:57:f0:a8:0a:0b"), Underlay: ip("192.168.10.11")}},
					}},
					// Remotes route through the gateway whatever the cable.
					Routes: []dataplane.Route{
						{Dst: pfx("10.2.0.0/16"), Via: gwVTEP, Dev: "vx-weft", Src: ip("10.1.2.1")},
						{Dst: pfx("10.3.0.0/16"), Via: gwVTEP, Dev: "vx-weft", Src: ip("10.1.2.1")},
						{Dst: pfx("10.102.0.0/16"), Via: gwVTEP, Dev: "vx-weft", Src: ip("10.1.2.1")},
					},
					Table:         240,
					RulePriority:  240,
					LooseRPFilter: []string{"cni0", "eth0", "vx-weft"},
				},
				Filter: wantFilter,
			}
			if !reflect.DeepEqual(res, want) {
				t.Errorf("got\n%+v\nwant\n%+v", res, want)
			}
		})
	}
}

func TestDesiredGatewayCableVXLAN(t *testing.T) {
	res, err := Desired(parse(t, "c1-n1", "c1-n1", "vxlan", "cableVxlan: {mtu: 1400}\nmss: {mode: fixed, value: 1300}\nrouteTable: 1000\nrulePriority: 100\n"), inputs("192.168.10.11"))
	if err != nil {
		t.Fatal(err)
	}
	c2, c3 := ip("241.168.20.11"), ip("241.168.30.11")
	filter := wantFilter
	filter.Devices = []string{"vx-weft", "vx-weft-cable"}
	filter.VXLANPorts = []uint16{4800, 4801}
	filter.MSS = packetfilter.MSS{Mode: "fixed", Value: 1300}
	want := Result{
		Role: RoleGateway,
		Dataplane: dataplane.State{
			Devices: []dataplane.VXLAN{
				{
					Name: "vx-weft", VNI: 100, Port: 4800, Underlay: "eth0", LocalIP: ip("192.168.10.11"),
					MTU: 1450, Addr: pfx("240.168.10.11/8"), MAC: mac("02:57:f0:a8:0a:0b"),
					Peers: []dataplane.Peer{
						{VTEP: ip("240.168.10.12"), MAC: mac("02:57:f0:a8:0a:0c"), Underlay: ip("192.168.10.12")},
						{VTEP: ip("240.168.10.13"), MAC: mac("02:57:f0:a8:0a:0d"), Underlay: ip("192.168.10.13")},
					},
				},
				{
					Name: "vx-weft-cable", VNI: 101, Port: 4801, Underlay: "eth0", LocalIP: ip("192.168.10.11"),
					MTU: 1400, Addr: pfx("241.168.10.11/8"), MAC: mac("02:57:f1:a8:0a:0b"),
					Peers: []dataplane.Peer{
						{VTEP: c2, MAC: mac("02:57:f1:a8:14:0b"), Underlay: ip("192.168.20.11")},
						{VTEP: c3, MAC: mac("02:57:f1:a8:1e:0b"), Underlay: ip("192.168.30.11")},
					},
				},
			},
			Routes: []dataplane.Route{
				{Dst: pfx("10.2.0.0/16"), Via: c2, Dev: "vx-weft-cable", Src: ip("10.1.2.1")},
				{Dst: pfx("10.3.0.0/16"), Via: c3, Dev: "vx-weft-cable", Src: ip("10.1.2.1")},
				{Dst: pfx("10.102.0.0/16"), Via: c2, Dev: "vx-weft-cable", Src: ip("10.1.2.1")},
			},
			Table:         1000,
			RulePriority:  100,
			LooseRPFilter: []string{"cni0", "eth0", "vx-weft", "vx-weft-cable"},
		},
		Filter: filter,
	}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("got\n%+v\nwant\n%+v", res, want)
	}
}

func TestDesiredGatewayCableNone(t *testing.T) {
	res, err := Desired(parse(t, "c1-n1", "c1-n1", "none", ""), inputs("192.168.10.11"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Role != RoleGateway {
		t.Errorf("role %q", res.Role)
	}
	if len(res.Dataplane.Devices) != 1 || res.Dataplane.Devices[0].Name != "vx-weft" || len(res.Dataplane.Devices[0].Peers) != 2 {
		t.Errorf("devices %+v, want only vx-weft with 2 peers", res.Dataplane.Devices)
	}
	if len(res.Dataplane.Routes) != 0 {
		t.Errorf("routes %+v, want none: the external engine routes", res.Dataplane.Routes)
	}
	// The filter still knows the remote CIDRs: SNAT and MSS apply to traffic
	// the external engine carries.
	if !reflect.DeepEqual(res.Filter, wantFilter) {
		t.Errorf("filter %+v, want %+v", res.Filter, wantFilter)
	}
}

func TestGatewayChangeFlipsRole(t *testing.T) {
	in := inputs("192.168.10.12")
	before, err := Desired(parse(t, "c1-n2", "c1-n1", "vxlan", ""), in)
	if err != nil {
		t.Fatal(err)
	}
	after, err := Desired(parse(t, "c1-n2", "c1-n2", "vxlan", ""), in)
	if err != nil {
		t.Fatal(err)
	}
	if before.Role != RoleNonGateway || after.Role != RoleGateway {
		t.Fatalf("roles %q → %q", before.Role, after.Role)
	}
	if n := len(before.Dataplane.Devices); n != 1 {
		t.Errorf("non-gateway has %d devices", n)
	}
	if n := len(after.Dataplane.Devices); n != 2 {
		t.Errorf("gateway has %d devices", n)
	}
	var peers []string
	for _, p := range after.Dataplane.Devices[0].Peers {
		peers = append(peers, p.Underlay.String())
	}
	if want := []string{"192.168.10.11", "192.168.10.13"}; !reflect.DeepEqual(peers, want) {
		t.Errorf("gateway peers %v, want %v (every other node)", peers, want)
	}
	for _, r := range after.Dataplane.Routes {
		if r.Dev != "vx-weft-cable" {
			t.Errorf("gateway route %+v not on the cable", r)
		}
	}
	// The old gateway becomes a non-gateway routing via the new one.
	old, err := Desired(parse(t, "c1-n1", "c1-n2", "vxlan", ""), inputs("192.168.10.11"))
	if err != nil {
		t.Fatal(err)
	}
	if old.Role != RoleNonGateway || old.Dataplane.Routes[0].Via != ip("240.168.10.12") {
		t.Errorf("old gateway: role %q, routes %+v", old.Role, old.Dataplane.Routes)
	}
}

func TestCNIIPUnknown(t *testing.T) {
	in := inputs("192.168.10.12")
	in.CNIIf, in.CNIIP = "", netip.Addr{}
	res, err := Desired(parse(t, "c1-n2", "c1-n1", "vxlan", ""), in)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Dataplane.Routes) != 3 {
		t.Fatalf("routes %+v", res.Dataplane.Routes)
	}
	for _, r := range res.Dataplane.Routes {
		if r.Src.IsValid() {
			t.Errorf("route %+v has a source while the CNI IP is unknown", r)
		}
	}
	if res.Filter.CNIIP.IsValid() {
		t.Errorf("filter CNIIP %v", res.Filter.CNIIP)
	}
	if want := []string{"eth0", "vx-weft"}; !reflect.DeepEqual(res.Dataplane.LooseRPFilter, want) {
		t.Errorf("LooseRPFilter %v, want %v", res.Dataplane.LooseRPFilter, want)
	}
}

func TestProblems(t *testing.T) {
	tests := []struct {
		name     string
		node, gw string
		nodeIP   string
		extra    string
		nodes    string // replaces the node list
		want     []string
	}{
		{
			name: "none", node: "c1-n2", gw: "c1-n1", nodeIP: "192.168.10.12",
		},
		{
			name: "node VTEP collision", node: "c1-n2", gw: "c1-n1", nodeIP: "192.168.10.12",
			extra: "vxlan: {vtepCIDR: 240.7.0.0/16}\n",
			nodes: "    - {name: c1-n1, ip: 192.168.10.11}\n    - {name: c1-n2, ip: 192.168.10.12}\n    - {name: c1-n3, ip: 172.16.10.12}\n",
			want:  []string{`VTEP collision: node "c1-n2" (192.168.10.12) and node "c1-n3" (172.16.10.12) both map to 240.7.10.12 in vxlan.vtepCIDR 240.7.0.0/16`},
		},
		{
			name: "cable VTEP collision", node: "c1-n1", gw: "c1-n1", nodeIP: "192.168.10.11",
			extra: "cableVxlan: {vtepCIDR: 241.0.0.0/24}\n",
			nodes: "    - {name: c1-n1, ip: 192.168.10.11}\n",
			want: []string{
				`VTEP collision: local gateway "c1-n1" (192.168.10.11) and remote "c3" gateway (192.168.30.11) both map to 241.0.0.11 in cableVxlan.vtepCIDR 241.0.0.0/24`,
				`VTEP collision: local gateway "c1-n1" (192.168.10.11) and remote "c2" gateway (192.168.20.11) both map to 241.0.0.11`,
			},
		},
		{
			name: "node not listed", node: "c1-n9", gw: "c1-n1", nodeIP: "192.168.10.19",
			want: []string{`warning: this node "c1-n9" (192.168.10.19) is not in cluster.nodes`},
		},
		{
			name: "unlisted node collides", node: "c1-n9", gw: "c1-n1", nodeIP: "10.168.10.12",
			want: []string{
				`warning: this node "c1-n9"`,
				`VTEP collision: node "c1-n2" (192.168.10.12) and node "c1-n9" (10.168.10.12) both map to 240.168.10.12`,
			},
		},
		{
			name: "node IP differs from list", node: "c1-n2", gw: "c1-n1", nodeIP: "192.168.10.99",
			want: []string{`node "c1-n2" runs with node IP 192.168.10.99 but cluster.nodes lists 192.168.10.12`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			y := strings.NewReplacer("NODE", tc.node, "GATEWAY", tc.gw, "CABLE", "vxlan").Replace(baseYAML) + tc.extra
			if tc.nodes != "" {
				start := strings.Index(y, "  nodes:\n") + len("  nodes:\n")
				end := strings.Index(y, "remotes:")
				y = y[:start] + tc.nodes + y[end:]
			}
			cfg, err := config.ParseWith([]byte(y), config.Env{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := Desired(cfg, inputs(tc.nodeIP))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Problems) != len(tc.want) {
				t.Fatalf("problems %q, want %d matching %q", res.Problems, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(res.Problems[i], w) {
					t.Errorf("problem %d = %q, want prefix %q", i, res.Problems[i], w)
				}
			}
		})
	}
}

func TestDesiredNeedsInputs(t *testing.T) {
	cfg := parse(t, "c1-n2", "c1-n1", "vxlan", "")
	tests := []struct {
		name string
		mod  func(*Inputs)
		want string
	}{
		{"no node IP", func(in *Inputs) { in.NodeIP = netip.Addr{} }, "node IPv4 address"},
		{"IPv6 node IP", func(in *Inputs) { in.NodeIP = ip("fd00::1") }, "node IPv4 address"},
		{"no underlay", func(in *Inputs) { in.UnderlayIf = "" }, "underlay interface"},
		{"no MTU", func(in *Inputs) { in.UnderlayMTU = 0 }, "underlay MTU"},
	}
	for _, tc := range tests {
		in := inputs("192.168.10.12")
		tc.mod(&in)
		if _, err := Desired(cfg, in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want mention of %q", tc.name, err, tc.want)
		}
	}
	// Configured MTUs make the underlay MTU unnecessary.
	fixed := parse(t, "c1-n2", "c1-n1", "vxlan", "vxlan: {mtu: 1400}\ncableVxlan: {mtu: 1400}\n")
	in := inputs("192.168.10.12")
	in.UnderlayMTU = 0
	res, err := Desired(fixed, in)
	if err != nil || res.Dataplane.Devices[0].MTU != 1400 {
		t.Errorf("fixed MTU: %v, %+v", err, res.Dataplane.Devices)
	}
	if _, err := Desired(&config.Config{}, in); err == nil {
		t.Error("unvalidated config accepted")
	}
	if _, err := Desired(nil, in); err == nil {
		t.Error("nil config accepted")
	}
}

func TestDesiredDeterministic(t *testing.T) {
	// Remotes and nodes listed in another order give the same state.
	a := parse(t, "c1-n1", "c1-n1", "vxlan", "")
	b := parse(t, "c1-n1", "c1-n1", "vxlan", "")
	b.Parsed.Remotes[0], b.Parsed.Remotes[1] = b.Parsed.Remotes[1], b.Parsed.Remotes[0]
	b.Parsed.Nodes[1], b.Parsed.Nodes[2] = b.Parsed.Nodes[2], b.Parsed.Nodes[1]
	ra, err := Desired(a, inputs("192.168.10.11"))
	if err != nil {
		t.Fatal(err)
	}
	rb, err := Desired(b, inputs("192.168.10.11"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ra, rb) {
		t.Errorf("order-dependent:\n%+v\n%+v", ra, rb)
	}
}
