package agent

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/discovery"
)

// dualConfig is testConfig with the IPv6 half of a dual-stack cluster in
// its parsed form (the file cannot say it yet: config refuses IPv6 until
// the packet filter carries it too).
func dualConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	p := &cfg.Parsed
	p.PodCIDRs = append(p.PodCIDRs, netip.MustParsePrefix("fd00:1::/56"))
	p.Nodes[0].IP6, p.Nodes[1].IP6 = netip.MustParseAddr("fd00:10::11"), netip.MustParseAddr("fd00:10::12")
	p.Remotes[0].PodCIDRs = append(p.Remotes[0].PodCIDRs, netip.MustParsePrefix("fd00:2::/56"))
	return cfg
}

var (
	eth0 = discovery.Iface{Name: "eth0", Index: 2, Kind: "veth", Addrs: []netip.Addr{netip.MustParseAddr("192.168.10.12"), netip.MustParseAddr("fd00:10::12")}}
	v4   = netip.MustParseAddr("10.1.2.1")
	v6   = netip.MustParseAddr("fd00:1:0:2::1")
)

// Discovery per family: the IPv6 address is looked for only in a cluster
// with IPv6 pods, a node with one family found stays not ready (naming the
// missing family) while the routes of the other get their source, and both
// reach status and the routes once found.
func TestDualStackDiscovery(t *testing.T) {
	ctx := context.Background()
	a, k, rec, store := newTestAgentCfg(t, dualConfig(t), nil)
	k.set(eth0, discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{v4}})
	_ = a.Reconcile(ctx)
	st := a.Status()
	c := cond(st, CondCNIInterfaceReady)
	if st.Ready || c.Status || !strings.Contains(c.Message, "IPv6") {
		t.Fatalf("IPv6 address missing: ready %v, condition %+v", st.Ready, c)
	}
	if st.CNIInterface == nil || st.CNIInterface.IP != "10.1.2.1" || st.CNIInterface.IP6 != "" {
		t.Fatalf("cni = %+v, want the IPv4 half", st.CNIInterface)
	}
	srcs := func() map[bool][]netip.Addr { // per family of the destination
		out := map[bool][]netip.Addr{}
		for _, r := range rec.dp.Routes {
			out[r.Dst.Addr().Is6()] = append(out[r.Dst.Addr().Is6()], r.Src)
		}
		return out
	}
	if got := srcs(); !slices.Equal(got[false], []netip.Addr{v4, v4}) || len(got[true]) != 1 || got[true][0].IsValid() {
		t.Fatalf("route sources %v, want the CNI IPv4 on the IPv4 routes and none yet on the IPv6 one", got)
	}
	if !slices.Contains(k.ipv6, true) || slices.Contains(k.ipv6, false) {
		t.Errorf("Interfaces(ipv6) calls %v, want the IPv6 listing", k.ipv6)
	}

	k.set(eth0, discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{v4, v6}})
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	st = a.Status()
	if !st.Ready || st.CNIInterface.IP6 != v6.String() || st.CNIInterface.Name6 != "cni0" || st.CNIInterface.Source6 != discovery.SourceWellKnown {
		t.Fatalf("after the IPv6 address: ready %v cni %+v", st.Ready, st.CNIInterface)
	}
	// Status (and the metric weft_remote_family_routes_installed) says per
	// family whether the remote's routes are in place.
	bothIn := []api.RemoteFamily{{Family: "ipv4", RoutesInstalled: true}, {Family: "ipv6", RoutesInstalled: true}}
	if len(st.Remotes) != 1 || !st.Remotes[0].RoutesInstalled || !slices.Equal(st.Remotes[0].Families, bothIn) {
		t.Errorf("remotes %+v, want c2 installed in both families", st.Remotes)
	}
	if m := cond(st, CondCNIInterfaceReady).Message; m != "cni0 10.1.2.1 (well-known), cni0 fd00:1:0:2::1 (well-known)" {
		t.Errorf("condition message %q", m)
	}
	if got := srcs(); !slices.Equal(got[true], []netip.Addr{v6}) {
		t.Errorf("IPv6 route sources %v, want %v", got[true], v6)
	}
	if got := store.CNI(); got == nil || got.IP6 != v6.String() {
		t.Errorf("IPv6 address not recorded durably: %+v", got)
	}

	// Calico: the IPv6 address on its own device.
	k.set(eth0,
		discovery.Iface{Name: "vxlan.calico", Index: 7, Kind: "vxlan", Addrs: []netip.Addr{v4}},
		discovery.Iface{Name: "vxlan-v6.calico", Index: 8, Kind: "vxlan", Addrs: []netip.Addr{v6}})
	_ = a.Reconcile(ctx)
	if c := a.Status().CNIInterface; c == nil || c.Name != "vxlan.calico" || c.Name6 != "vxlan-v6.calico" || c.IP6 != v6.String() {
		t.Fatalf("calico layout: cni %+v", c)
	}
}

// An IPv4-only cluster asks the kernel for nothing IPv6, whatever the
// host's interfaces hold: its passes are what they were before IPv6.
func TestIPv4OnlyAsksNoIPv6(t *testing.T) {
	ctx := context.Background()
	a, k, rec, _ := newTestAgent(t)
	k.set(eth0, discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{v4, v6}})
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(k.ipv6, true) || len(k.underlay) == 0 || k.underlay[0].ipv6 {
		t.Errorf("Interfaces %v Underlay %v: an IPv4-only cluster asked for IPv6", k.ipv6, k.underlay)
	}
	st := a.Status()
	if !st.Ready || st.CNIInterface.IP6 != "" || st.CNIInterface.Name6 != "" {
		t.Errorf("ready %v cni %+v", st.Ready, st.CNIInterface)
	}
	for _, r := range rec.dp.Routes {
		if r.Dst.Addr().Is6() {
			t.Errorf("IPv6 route %v in an IPv4-only cluster", r)
		}
	}
	if d := rec.dp.Devices[0]; d.Addr6.IsValid() {
		t.Errorf("IPv6 VTEP %v in an IPv4-only cluster", d.Addr6)
	}
}

// An IPv6-only cluster: the underlay is found from the node's IPv6 address
// and the device's underlay is IPv6.
func TestIPv6OnlyUnderlay(t *testing.T) {
	ctx := context.Background()
	cfg := dualConfig(t)
	p := &cfg.Parsed
	p.PodCIDRs, p.ServiceCIDRs = p.PodCIDRs[1:], nil
	p.Nodes[0].IP, p.Nodes[1].IP = netip.Addr{}, netip.Addr{}
	p.NodeIP, p.NodeIP6, p.Underlay6 = netip.Addr{}, netip.MustParseAddr("fd00:10::12"), true
	p.Remotes[0].PodCIDRs, p.Remotes[0].ServiceCIDRs = p.Remotes[0].PodCIDRs[1:], nil
	a, k, rec, _ := newTestAgentCfg(t, cfg, nil)
	k.set(eth0, discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{v6}})
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if len(k.underlay) == 0 || k.underlay[0] != (underlayCall{p.NodeIP6, true}) {
		t.Errorf("Underlay calls %v, want (fd00:10::12, ipv6)", k.underlay)
	}
	st := a.Status()
	if !st.Ready || st.CNIInterface.Name != "cni0" || st.CNIInterface.IP != "" || st.CNIInterface.IP6 != v6.String() {
		t.Fatalf("ready %v cni %+v (%+v)", st.Ready, st.CNIInterface, st.Conditions)
	}
	d := rec.dp.Devices[0]
	if d.LocalIP != p.NodeIP6 || d.Addr.IsValid() || d.Addr6 != netip.MustParsePrefix("fd57:6566:7400::12/96") || d.MTU != 1430 {
		t.Errorf("device %+v", d)
	}
	if len(d.Peers) != 1 || d.Peers[0].Underlay != netip.MustParseAddr("fd00:10::11") {
		t.Errorf("peers %+v, want the gateway's IPv6 address", d.Peers)
	}
	if len(rec.dp.Routes) != 1 || rec.dp.Routes[0].Src != v6 {
		t.Errorf("routes %+v", rec.dp.Routes)
	}
}

// A dual-stack pod's IPv6 gateway is a discovery hint for the IPv6
// address, as its IPv4 one is for the IPv4 address.
func TestPluginIPv6GatewayHint(t *testing.T) {
	ctx := context.Background()
	a, k, _, _ := newTestAgentCfg(t, dualConfig(t), nil)
	k.set(eth0,
		discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{v4, v6}},
		discovery.Iface{Name: "br-pods", Index: 9, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.3.1"), netip.MustParseAddr("fd00:1:0:3::1")}},
	)
	ev := api.Event{Verb: api.VerbAdd, ContainerID: "c1", IfName: "eth0", IPs: []api.PodIP{
		{Address: "10.1.2.5/24", Gateway: "10.1.2.1"},
		{Address: "fd00:1:0:3::5/64", Gateway: "fd00:1:0:3::1"},
	}}
	if err := a.Add(ctx, ev); err != nil {
		t.Fatal(err)
	}
	_ = a.Reconcile(ctx)
	c := a.Status().CNIInterface
	if c == nil || c.Name != "cni0" || c.Source != discovery.SourcePlugin || c.Name6 != "br-pods" || c.IP6 != "fd00:1:0:3::1" || c.Source6 != discovery.SourcePlugin {
		t.Fatalf("cni = %+v, want cni0 for IPv4 and br-pods for IPv6, both from the plugin's gateways", c)
	}
}

// An IPv4 cluster told of a remote's IPv6 CIDR (a dual-stack Submariner
// Endpoint): not routed, named in TopologyValid, and the remote's IPv4
// routes still count as installed.
func TestRemoteIPv6CIDRInIPv4Cluster(t *testing.T) {
	ctx := context.Background()
	cfg, err := config.Parse([]byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Parsed.Remotes[0].PodCIDRs = append(cfg.Parsed.Remotes[0].PodCIDRs, netip.MustParsePrefix("fd00:2::/56"))
	a, k, rec, _ := newTestAgentCfg(t, cfg, nil)
	k.set(eth0, discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{v4}})
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	st := a.Status()
	for _, r := range rec.dp.Routes {
		if r.Dst.Addr().Is6() {
			t.Errorf("IPv6 route %v in an IPv4 cluster", r)
		}
	}
	if c := cond(st, CondTopologyValid); c.Status || !strings.Contains(c.Message, `remote "c2": its IPv6 CIDRs (fd00:2::/56, …) are not routed`) {
		t.Errorf("TopologyValid %+v, want the IPv6 CIDRs named", c)
	}
	if !st.Ready || len(st.Remotes) != 1 || !st.Remotes[0].RoutesInstalled || !slices.Contains(st.Remotes[0].CIDRs, "fd00:2::/56") ||
		!slices.Equal(st.Remotes[0].Families, []api.RemoteFamily{{Family: "ipv4", RoutesInstalled: true}}) {
		t.Errorf("ready %v remotes %+v, want c2's IPv4 routes installed and its IPv6 CIDR listed", st.Ready, st.Remotes)
	}
}

// A dual-stack node whose IPv6 address comes first (Calico creates
// vxlan-v6.calico and vxlan.calico in no fixed order): the IPv6 half is
// programmed — its routes' source, its host SNAT address — while the node
// stays not ready naming IPv4, and the IPv4 routes wait without a source.
func TestDualStackIPv6First(t *testing.T) {
	ctx := context.Background()
	a, k, rec, store := newTestAgentCfg(t, dualConfig(t), nil)
	k.set(eth0, discovery.Iface{Name: "vxlan-v6.calico", Index: 8, Kind: "vxlan", Addrs: []netip.Addr{v6}})
	_ = a.Reconcile(ctx)
	st := a.Status()
	if c := cond(st, CondCNIInterfaceReady); st.Ready || c.Status || !strings.Contains(c.Message, "IPv4") {
		t.Fatalf("IPv4 address missing: ready %v, condition %+v", st.Ready, c)
	}
	if c := st.CNIInterface; c == nil || c.IP != "" || c.Name != "" || c.Name6 != "vxlan-v6.calico" || c.IP6 != v6.String() {
		t.Fatalf("cni = %+v, want the IPv6 half only", c)
	}
	for _, r := range rec.dp.Routes {
		if want := (netip.Addr{}); r.Dst.Addr().Is6() {
			want = v6
			if r.Src != want {
				t.Errorf("IPv6 route %v: src %v, want %v", r.Dst, r.Src, want)
			}
		} else if r.Src.IsValid() {
			t.Errorf("IPv4 route %v has src %v before the IPv4 address exists", r.Dst, r.Src)
		}
	}
	if rec.pf.CNIIP6 != v6 || rec.pf.CNIIP.IsValid() {
		t.Errorf("packet filter CNI addresses %v / %v, want none / %v", rec.pf.CNIIP, rec.pf.CNIIP6, v6)
	}
	if got := store.CNI(); got == nil || got.IP6 != v6.String() {
		t.Errorf("IPv6 half not recorded durably: %+v", got)
	}

	k.set(eth0,
		discovery.Iface{Name: "vxlan.calico", Index: 7, Kind: "vxlan", Addrs: []netip.Addr{v4}},
		discovery.Iface{Name: "vxlan-v6.calico", Index: 8, Kind: "vxlan", Addrs: []netip.Addr{v6}})
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if st := a.Status(); !st.Ready || st.CNIInterface.Name != "vxlan.calico" || st.CNIInterface.IP != v4.String() {
		t.Fatalf("after the IPv4 address: ready %v cni %+v", st.Ready, st.CNIInterface)
	}
}
