package topology

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/dataplane"
)

// dual gives a parsed IPv4 configuration the IPv6 half of a dual-stack
// cluster, as Validate would parse it once config accepts IPv6 (the file
// cannot say it yet: config refuses IPv6 until weft carries it).
func dual(cfg *config.Config) *config.Config {
	p := &cfg.Parsed
	p.PodCIDRs = append(p.PodCIDRs, pfx("fd00:1::/56"))
	p.ServiceCIDRs = append(p.ServiceCIDRs, pfx("fd00:101::/112"))
	for i := range p.Nodes {
		b := p.Nodes[i].IP.As4()
		p.Nodes[i].IP6 = ip(fmt.Sprintf("fd00:10::%d", b[3])) // c1-n1: fd00:10::11
	}
	for i := range p.Remotes {
		r := &p.Remotes[i]
		r.PodCIDRs = append(r.PodCIDRs, pfx("fd00:"+r.ID[1:]+"::/56"))
	}
	return cfg
}

func dualInputs(nodeIP string) Inputs {
	in := inputs(nodeIP)
	in.CNIIP6 = ip("fd00:1:0:2::1")
	return in
}

func TestDesiredDualStackNonGateway(t *testing.T) {
	res, err := Desired(dual(parse(t, "c1-n2", "c1-n1", "vxlan", "")), dualInputs("192.168.10.12"))
	if err != nil {
		t.Fatal(err)
	}
	gw := dataplane.Peer{VTEP: ip("240.168.10.11"), VTEP6: ip("fd57:6566:7400::c0a8:a0b"), MAC: mac("02:57:f0:a8:0a:0b"), Underlay: ip("192.168.10.11")}
	v4, v6 := ip("10.1.2.1"), ip("fd00:1:0:2::1")
	want := dataplane.State{
		Devices: []dataplane.VXLAN{{
			Name: "vx-weft", VNI: 100, Port: 4800, Underlay: "eth0", LocalIP: ip("192.168.10.12"),
			MTU: 1450, Addr: pfx("240.168.10.12/8"), Addr6: pfx("fd57:6566:7400::c0a8:a0c/96"),
			MAC:   mac("02:57:f0:a8:0a:0c"), // the IPv4 VTEP's: unchanged by dual stack
			Peers: []dataplane.Peer{gw},
		}},
		Routes: []dataplane.Route{
			{Dst: pfx("10.2.0.0/16"), Via: gw.VTEP, Dev: "vx-weft", Src: v4},
			{Dst: pfx("10.3.0.0/16"), Via: gw.VTEP, Dev: "vx-weft", Src: v4},
			{Dst: pfx("10.102.0.0/16"), Via: gw.VTEP, Dev: "vx-weft", Src: v4},
			{Dst: pfx("fd00:2::/56"), Via: gw.VTEP6, Dev: "vx-weft", Src: v6},
			{Dst: pfx("fd00:3::/56"), Via: gw.VTEP6, Dev: "vx-weft", Src: v6},
		},
		Table: 240, RulePriority: 240, LooseRPFilter: []string{"cni0", "eth0", "vx-weft"},
	}
	if !reflect.DeepEqual(res.Dataplane, want) {
		t.Errorf("got\n%+v\nwant\n%+v", res.Dataplane, want)
	}
	if len(res.Problems) != 0 {
		t.Errorf("problems %q", res.Problems)
	}
	wantLocal := []netip.Prefix{pfx("10.1.0.0/16"), pfx("10.101.0.0/16"), pfx("fd00:1::/56"), pfx("fd00:101::/112")}
	if !reflect.DeepEqual(res.Filter.LocalCIDRs, wantLocal) {
		t.Errorf("filter local %v, want %v", res.Filter.LocalCIDRs, wantLocal)
	}
	if res.Filter.CNIIP != v4 || res.Filter.CNIIP6 != v6 {
		t.Errorf("filter CNI addresses %v / %v, want %v / %v (the host SNAT sources)", res.Filter.CNIIP, res.Filter.CNIIP6, v4, v6)
	}

	// The CNI interface's IPv6 address not known yet: IPv6 routes
	// without a source, as IPv4 ones.
	in := dualInputs("192.168.10.12")
	in.CNIIP6 = netip.Addr{}
	res, err = Desired(dual(parse(t, "c1-n2", "c1-n1", "vxlan", "")), in)
	if err != nil || res.Dataplane.Routes[3].Src.IsValid() || res.Dataplane.Routes[0].Src != v4 {
		t.Errorf("CNI IPv6 unknown: %v %+v", err, res.Dataplane.Routes)
	}
}

// An IPv6-only cluster: IPv6 underlay (local address, peers, cable), no
// IPv4 VTEP, the IPv6-derived MAC, MTU − 70.
func TestDesiredIPv6OnlyGateway(t *testing.T) {
	cfg := parse(t, "c1-n1", "c1-n1", "vxlan", "")
	p := &cfg.Parsed
	p.PodCIDRs, p.ServiceCIDRs = []netip.Prefix{pfx("fd00:1::/56")}, []netip.Prefix{pfx("fd00:101::/112")}
	for i := range p.Nodes {
		b := p.Nodes[i].IP.As4()
		p.Nodes[i].IP, p.Nodes[i].IP6 = netip.Addr{}, ip(fmt.Sprintf("fd00:10::%d", b[3])) // c1-n1: fd00:10::11
	}
	p.Underlay6, p.Cable6 = true, true
	p.Remotes = []config.ParsedRemote{{ID: "c2", PodCIDRs: []netip.Prefix{pfx("fd00:2::/56")}, GatewayIP: ip("fd00:20::21")}}
	in := Inputs{NodeIP: ip("fd00:10::11"), UnderlayIf: "eth0", UnderlayMTU: 1500, CNIIf: "cni0", CNIIP6: ip("fd00:1:0:1::1")}
	res, err := Desired(cfg, in)
	if err != nil {
		t.Fatal(err)
	}
	c2 := ip("fd57:6566:7400:1::21")
	want := dataplane.State{
		Devices: []dataplane.VXLAN{
			{
				Name: "vx-weft", VNI: 100, Port: 4800, Underlay: "eth0", LocalIP: in.NodeIP, MTU: 1430,
				Addr6: pfx("fd57:6566:7400::11/96"), MAC: mac("02:58:00:00:00:11"),
				Peers: []dataplane.Peer{
					{VTEP6: ip("fd57:6566:7400::12"), MAC: mac("02:58:00:00:00:12"), Underlay: ip("fd00:10::12")},
					{VTEP6: ip("fd57:6566:7400::13"), MAC: mac("02:58:00:00:00:13"), Underlay: ip("fd00:10::13")},
				},
			},
			{
				Name: "vx-weft-cable", VNI: 101, Port: 4801, Underlay: "eth0", LocalIP: in.NodeIP, MTU: 1430,
				Addr6: pfx("fd57:6566:7400:1::11/96"), MAC: mac("02:58:00:00:00:11"),
				Peers: []dataplane.Peer{{VTEP6: c2, MAC: mac("02:58:00:00:00:21"), Underlay: ip("fd00:20::21")}},
			},
		},
		Routes:        []dataplane.Route{{Dst: pfx("fd00:2::/56"), Via: c2, Dev: "vx-weft-cable", Src: in.CNIIP6}},
		Table:         240,
		RulePriority:  240,
		LooseRPFilter: []string{"cni0", "eth0", "vx-weft", "vx-weft-cable"},
	}
	if !reflect.DeepEqual(res.Dataplane, want) {
		t.Errorf("got\n%+v\nwant\n%+v", res.Dataplane, want)
	}
	if len(res.Problems) != 0 {
		t.Errorf("problems %q", res.Problems)
	}
	// The node's IPv4 address is no underlay address here.
	in.NodeIP = ip("192.168.10.11")
	if _, err := Desired(cfg, in); err == nil || !strings.Contains(err.Error(), "node IPv6 address (the cluster's underlay is IPv6)") {
		t.Errorf("IPv4 node IP on an IPv6 underlay: err %v", err)
	}
}

func TestDualStackProblems(t *testing.T) {
	tests := []struct {
		name string
		mod  func(p *config.Parsed)
		want []string
	}{
		{"none", func(*config.Parsed) {}, nil},
		{"IPv6 remote CIDR without local IPv6", func(p *config.Parsed) {
			p.PodCIDRs, p.ServiceCIDRs = p.PodCIDRs[:1], p.ServiceCIDRs[:1]
		}, []string{
			`remote "c3": its IPv6 CIDRs (fd00:3::/56, …) are not routed: this cluster has no IPv6 pod CIDR`,
			`remote "c2": its IPv6 CIDRs (fd00:2::/56, …) are not routed`,
		}},
		{"IPv6 VTEP collision", func(p *config.Parsed) {
			p.VTEPCIDR6 = pfx("fd57:6566:7400::/120") // 8 host bits: .12 and .268 → 0x0c both
			p.Nodes[2].IP = ip("192.168.11.12")
		}, []string{`VTEP collision: node "c1-n2" (192.168.10.12) and node "c1-n3" (192.168.11.12) both map to fd57:6566:7400::c in vxlan.vtepCIDR6 fd57:6566:7400::/120`}},
		{"remote gateway of another family", func(p *config.Parsed) {
			p.Remotes[0].GatewayIP = ip("fd00:30::11")
		}, []string{`remote "c3": gateway fd00:30::11 is not of this cluster's underlay family (node IP 192.168.10.11): no cable to it`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := dual(parse(t, "c1-n1", "c1-n1", "vxlan", ""))
			tc.mod(&cfg.Parsed)
			res, err := Desired(cfg, dualInputs("192.168.10.11"))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Problems) != len(tc.want) {
				t.Fatalf("problems %q, want %q", res.Problems, tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(res.Problems[i], w) {
					t.Errorf("problem %d = %q, want prefix %q", i, res.Problems[i], w)
				}
			}
		})
	}
}
