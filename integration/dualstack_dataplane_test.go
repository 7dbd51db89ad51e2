package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/dataplane"
	"github.com/weft-net/weft/pkg/netnstest"
	"github.com/weft-net/weft/pkg/packetfilter"
	iptables "github.com/weft-net/weft/pkg/packetfilter/iptables"
	nftables "github.com/weft-net/weft/pkg/packetfilter/nftables"
	"github.com/weft-net/weft/pkg/topology"
)

// The IPv6 data path of two clusters, end to end in the kernel, while the
// configuration still refuses IPv6 (the packet filter does not carry it
// yet, so weftd cannot be given an IPv6 file): each node's desired state is
// computed by pkg/topology from the parsed configuration weftd would hold
// and applied by pkg/dataplane, the real code of a reconcile pass minus
// discovery and the packet filter. Two clusters of two nodes (n1 the
// gateway, cable: vxlan) on one underlay bridge; the primary CNI's part
// (intra-cluster pod routing) is static host-gw routes. Every node reaches
// every remote node's CNI address over IPv6 (and over IPv4 in the dual-
// stack case), both directions through both gateways, and the receiver
// sees the sender's CNI address of that family: the route's src. Then c1's
// gateway moves to c1-n2 (every node of both clusters converges by one
// Apply, as on a config change), the matrix holds again, and Cleanup leaves
// no IPv6 object behind.
func TestDualStackDataPath(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, tc := range []struct {
		name      string
		underlay6 bool
	}{{"dual stack over IPv4 underlay", false}, {"IPv6 only over IPv6 underlay", true}} {
		for _, backend := range []string{"", "nftables", "iptables"} {
			t.Run(tc.name+"/"+backend, func(t *testing.T) { testDualStackDataPath(t, tc.underlay6, backend) })
		}
	}
}

// dsNode is one node of the test: its namespace, underlay and CNI
// addresses of both families.
type dsNode struct {
	name, cluster string
	ns            *netnstest.NS
	ul4, ul6      netip.Addr
	cni4, cni6    netip.Addr
	pod4, pod6    netip.Prefix // the node's pod subnets (host-gw routes)
}

func testDualStackDataPath(t *testing.T, underlay6 bool, backend string) {
	ul := netnstest.New(t)
	ul.MustExec(t, "ip", "link", "add", "br0", "type", "bridge")
	ul.MustExec(t, "ip", "link", "set", "br0", "up")
	var nodes []*dsNode
	for ci, c := range []string{"c1", "c2"} {
		for ni := 1; ni <= 2; ni++ {
			n := &dsNode{
				name: fmt.Sprintf("%s-n%d", c, ni), cluster: c, ns: netnstest.New(t),
				ul4:  netip.MustParseAddr(fmt.Sprintf("192.168.%d.%d", 10*(ci+1), 10+ni)),
				ul6:  netip.MustParseAddr(fmt.Sprintf("fd00:ff::%d:%d", ci+1, 10+ni)),
				cni4: netip.MustParseAddr(fmt.Sprintf("10.%d.%d.1", ci+1, ni)),
				cni6: netip.MustParseAddr(fmt.Sprintf("fd00:%d:0:%d::1", ci+1, ni)),
				pod4: netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", ci+1, ni)),
				pod6: netip.MustParsePrefix(fmt.Sprintf("fd00:%d:0:%d::/64", ci+1, ni)),
			}
			port := fmt.Sprintf("p%d%d", ci+1, ni)
			n.ns.MustExec(t, "ip", "link", "add", "ul0", "type", "veth", "peer", "name", port)
			n.ns.MustExec(t, "ip", "link", "set", port, "netns", ul.Name)
			ul.MustExec(t, "ip", "link", "set", port, "master", "br0", "up")
			for _, c := range [][]string{
				{"addr", "add", n.ul4.String() + "/16", "dev", "ul0"},
				{"-6", "addr", "add", n.ul6.String() + "/64", "dev", "ul0", "nodad"},
				{"link", "set", "ul0", "up"},
				// The CNI interface: a veth whose peer is up gives it a carrier.
				{"link", "add", "cni0", "type", "veth", "peer", "name", "cni0p"},
				{"addr", "add", n.cni4.String() + "/24", "dev", "cni0"},
				{"-6", "addr", "add", n.cni6.String() + "/64", "dev", "cni0", "nodad"},
				{"link", "set", "cni0p", "up"},
				{"link", "set", "cni0", "up"},
			} {
				n.ns.MustExec(t, "ip", c...)
			}
			// What the primary CNI of a dual-stack cluster sets.
			n.ns.MustExec(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
			nodes = append(nodes, n)
		}
	}
	// A nodad IPv6 address is bindable at once but gets its local route
	// from the kernel's DAD worker, late on a loaded machine: until then a
	// packet for it is forwarded, not delivered. The probes wait for it.
	for _, n := range nodes {
		for _, a := range []netip.Addr{n.ul6, n.cni6} {
			if _, ok := dpWaitUntil(5*time.Second, func() bool {
				out, _ := n.ns.Exec("ip", "-6", "route", "show", "table", "local", a.String())
				return strings.Contains(out, "local "+a.String())
			}); !ok {
				t.Fatalf("%s: no local route for %s", n.name, a)
			}
		}
	}
	// The primary CNI's intra-cluster routing, host-gw style.
	for _, n := range nodes {
		for _, o := range nodes {
			if o != n && o.cluster == n.cluster {
				n.ns.MustExec(t, "ip", "route", "add", o.pod4.String(), "via", o.ul4.String())
				n.ns.MustExec(t, "ip", "-6", "route", "add", o.pod6.String(), "via", o.ul6.String())
			}
		}
	}

	ctx := context.Background()
	managers := map[*dsNode]*dataplane.Netlink{}
	pfs := map[*dsNode]packetfilter.Backend{}
	for _, n := range nodes {
		managers[n] = dataplane.New(nil)
		switch backend {
		case "nftables":
			b, err := nftables.New()
			if err != nil {
				t.Fatal(err)
			}
			pfs[n] = b
		case "iptables":
			b, err := iptables.New()
			if err != nil {
				t.Fatal(err)
			}
			pfs[n] = b
		}
	}
	gateways := map[string]string{"c1": "c1-n1", "c2": "c2-n1"}
	applyAll := func() {
		t.Helper()
		for _, n := range nodes {
			dsApply(t, ctx, managers[n], pfs[n], n, dsConfig(t, n, nodes, gateways, underlay6), underlay6)
		}
	}
	applyAll()
	gw := func(c string) *dsNode {
		for _, n := range nodes {
			if n.name == gateways[c] {
				return n
			}
		}
		return nil
	}
	cable := func(n *dsNode) string {
		return strings.TrimSpace(n.ns.MustExec(t, "cat", "/sys/class/net/vx-weft-cable/statistics/tx_packets"))
	}
	before := cable(gw("c1"))
	dsMatrix(t, nodes, underlay6)
	// Nothing else routes between the clusters (no default route, the
	// host-gw routes stay inside each cluster): what reached the other
	// cluster went through weft's devices, which the counters confirm.
	if after := cable(gw("c1")); after == before {
		t.Errorf("%s's vx-weft-cable sent nothing (tx_packets %s): the probes did not cross weft's cable", gateways["c1"], after)
	}

	if backend != "" {
		// Host-network traffic from an address outside the pod CIDRs
		// (a socket bound to the underlay address) is seen as the CNI
		// address of its family: the host SNAT, IPv6 included.
		for _, v6 := range []bool{false, true} {
			if !v6 && underlay6 {
				continue
			}
			from, to := nodes[1], nodes[3] // c1-n2 (non-gateway) -> c2-n2
			bind, dst, want := from.ul4, to.cni4, from.cni4
			if v6 {
				bind, dst, want = from.ul6, to.cni6, from.cni6
			}
			seen, err := dsProbeFrom(from.ns, to.ns, bind, dst)
			if err != nil {
				t.Errorf("host %s (%s) -> %s: %v", from.name, bind, dst, err)
				continue
			}
			t.Logf("host %s bound to %s -> %s: seen from %s", from.name, bind, dst, seen)
			if seen != want {
				t.Errorf("host %s bound to %s -> %s: seen from %s, want the CNI address %s", from.name, bind, dst, seen, want)
			}
		}
	}

	t.Run("gateway-move", func(t *testing.T) {
		gateways["c1"] = "c1-n2"
		applyAll()
		for _, n := range nodes[:2] {
			links := n.ns.MustExec(t, "ip", "link", "show")
			if has := strings.Contains(links, "vx-weft-cable"); has != (n.name == "c1-n2") {
				t.Errorf("%s after the move: vx-weft-cable present %v", n.name, has)
			}
		}
		dsMatrix(t, nodes, underlay6)
	})

	t.Run("cleanup", func(t *testing.T) {
		for _, n := range nodes {
			var err error
			if derr := n.ns.Do(func(ns.NetNS) error {
				err = managers[n].Cleanup(ctx, []string{"vx-weft", "vx-weft-cable"}, 240, 240)
				return nil
			}); derr != nil {
				t.Fatal(derr)
			}
			if err != nil {
				t.Errorf("%s: cleanup: %v", n.name, err)
			}
			for _, c := range [][]string{{"-6", "rule", "show"}, {"-6", "route", "show", "table", "all"}, {"-6", "addr", "show"}, {"-6", "neigh", "show"}, {"-d", "link", "show"}} {
				out, _ := n.ns.Exec("ip", c...)
				for _, bad := range []string{"proto 247", "lookup 240", "vx-weft", "fd57:"} {
					if strings.Contains(out, bad) {
						t.Errorf("%s after cleanup: ip %s still shows %q:\n%s", n.name, strings.Join(c, " "), bad, out)
					}
				}
			}
		}
	})
}

// dsApply computes n's desired state from cfg and applies it with m, as a
// reconcile pass does.
func dsApply(t *testing.T, ctx context.Context, m *dataplane.Netlink, pf packetfilter.Backend, n *dsNode, cfg *config.Config, underlay6 bool) {
	t.Helper()
	in := topology.Inputs{NodeIP: n.ul4, UnderlayIf: "ul0", UnderlayMTU: 1500, CNIIf: "cni0", CNIIP: n.cni4, CNIIP6: n.cni6}
	if underlay6 {
		in.NodeIP, in.CNIIP = n.ul6, netip.Addr{}
	}
	res, err := topology.Desired(cfg, in)
	if err != nil {
		t.Fatalf("%s: desired state: %v", n.name, err)
	}
	if len(res.Problems) > 0 {
		t.Fatalf("%s: problems %q", n.name, res.Problems)
	}
	var aerr error
	if err := n.ns.Do(func(ns.NetNS) error { aerr = m.Apply(ctx, res.Dataplane); return nil }); err != nil {
		t.Fatal(err)
	}
	if aerr != nil {
		t.Fatalf("%s: apply: %v", n.name, aerr)
	}
	if pf != nil {
		if err := n.ns.Do(func(ns.NetNS) error { aerr = pf.Apply(ctx, res.Filter); return nil }); err != nil {
			t.Fatal(err)
		}
		if aerr != nil {
			t.Fatalf("%s: packet filter: %v", n.name, aerr)
		}
	}
	if underlay6 {
		out := n.ns.MustExec(t, "ip", "-d", "link", "show", "dev", "vx-weft")
		if !strings.Contains(out, "local "+n.ul6.String()) {
			t.Fatalf("%s: vx-weft not on the IPv6 underlay:\n%s", n.name, out)
		}
	}
}

// dsMatrix probes every node from every node of the other cluster, over
// each family the clusters have.
func dsMatrix(t *testing.T, nodes []*dsNode, underlay6 bool) {
	t.Helper()
	families := []bool{true}
	if !underlay6 {
		families = []bool{false, true}
	}
	for _, v6 := range families {
		for _, from := range nodes {
			for _, to := range nodes {
				if from.cluster == to.cluster {
					continue
				}
				src, dst := from.cni4, to.cni4
				if v6 {
					src, dst = from.cni6, to.cni6
				}
				seen, err := dsProbe(from.ns, to.ns, dst)
				if err != nil {
					t.Errorf("%s -> %s (%s): %v", from.name, to.name, dst, err)
					continue
				}
				t.Logf("%s -> %s %s: seen from %s", from.name, to.name, dst, seen)
				if seen != src {
					t.Errorf("%s -> %s: the receiver saw %s, want the sender's CNI address %s", from.name, to.name, seen, src)
				}
			}
		}
	}
}

// dsConfig is the parsed configuration of node n as Validate will parse a
// dual-stack (or IPv6-only) file: the IPv4 file parsed, its IPv6 half
// added.
func dsConfig(t *testing.T, n *dsNode, nodes []*dsNode, gateways map[string]string, underlay6 bool) *config.Config {
	t.Helper()
	own, other := "c1", "c2"
	if n.cluster == "c2" {
		own, other = "c2", "c1"
	}
	var list, remoteGW string
	var remoteGW6 netip.Addr
	gw := gateways[own]
	for _, o := range nodes {
		switch {
		case o.cluster == own:
			list += fmt.Sprintf("    - {name: %s, ip: %s}\n", o.name, o.ul4)
		case o.name == gateways[other]:
			remoteGW, remoteGW6 = o.ul4.String(), o.ul6
		}
	}
	ownN, otherN := own[1:], other[1:]
	y := fmt.Sprintf("nodeName: %s\ncluster:\n  id: %s\n  podCIDRs: [10.%s.0.0/16]\n  gateway: %s\n  nodes:\n%s"+
		"remotes:\n  - {id: %s, podCIDRs: [10.%s.0.0/16], gatewayIP: %s}\n",
		n.name, own, ownN, gw, list, other, otherN, remoteGW)
	cfg, err := config.ParseWith([]byte(y), config.Env{})
	if err != nil {
		t.Fatalf("config: %v\n%s", err, y)
	}
	p := &cfg.Parsed
	own6, other6 := netip.MustParsePrefix("fd00:"+ownN+"::/48"), netip.MustParsePrefix("fd00:"+otherN+"::/48")
	p.PodCIDRs = append(p.PodCIDRs, own6)
	p.Remotes[0].PodCIDRs = append(p.Remotes[0].PodCIDRs, other6)
	byName := map[string]*dsNode{}
	for _, o := range nodes {
		byName[o.name] = o
	}
	for i := range p.Nodes {
		p.Nodes[i].IP6 = byName[p.Nodes[i].Name].ul6
	}
	p.NodeIP6 = n.ul6
	if underlay6 {
		p.PodCIDRs = []netip.Prefix{own6}
		p.Remotes[0].PodCIDRs = []netip.Prefix{other6}
		for i := range p.Nodes {
			p.Nodes[i].IP = netip.Addr{}
		}
		p.NodeIP, p.Underlay6, p.Cable6 = netip.Addr{}, true, true
		p.Remotes[0].GatewayIP = remoteGW6
	}
	return cfg
}

func dsProbe(a, b *netnstest.NS, dst netip.Addr) (netip.Addr, error) {
	return dsProbeFrom(a, b, netip.Addr{}, dst)
}

// dsProbeFrom sends one UDP datagram from a's namespace (from bind when
// valid) to dst in b's and waits for the echo; it returns the source
// address b saw.
func dsProbeFrom(a, b *netnstest.NS, bind, dst netip.Addr) (netip.Addr, error) {
	network := "udp4"
	if dst.Is6() {
		network = "udp6"
	}
	var conn *net.UDPConn
	if err := b.Do(func(ns.NetNS) error {
		var err error
		conn, err = net.ListenUDP(network, &net.UDPAddr{IP: net.IP(dst.AsSlice()), Port: 7777})
		return err
	}); err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	seen := make(chan netip.Addr, 1)
	go func() {
		buf := make([]byte, 64)
		nr, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		seen <- from.Addr().Unmap()
		_, _ = conn.WriteToUDPAddrPort(buf[:nr], from)
	}()
	err := a.Do(func(ns.NetNS) error {
		var laddr *net.UDPAddr
		if bind.IsValid() {
			laddr = &net.UDPAddr{IP: net.IP(bind.AsSlice())}
		}
		c, err := net.DialUDP(network, laddr, &net.UDPAddr{IP: net.IP(dst.AsSlice()), Port: 7777})
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
			return err
		}
		if _, err := c.Write([]byte("weft")); err != nil {
			return err
		}
		buf := make([]byte, 16)
		if _, err := c.Read(buf); err != nil {
			return fmt.Errorf("no echo: %w", err)
		}
		return nil
	})
	if err != nil {
		return netip.Addr{}, err
	}
	select {
	case s := <-seen:
		return s, nil
	case <-time.After(time.Second):
		return netip.Addr{}, fmt.Errorf("echo without a datagram seen")
	}
}

// The real weftd with a dual-stack file, on a gateway node, per backend:
// it discovers the CNI interface's IPv6 address, becomes ready, and
// programs the IPv6 half next to the IPv4 one — the remote's IPv6 CIDR
// routed over the cable with the CNI IPv6 source, the ip -6 rule, the IPv6
// VTEP — and the packet filter's IPv6 objects; status shows both families.
func TestDualStackWeftd(t *testing.T) {
	for _, backend := range dpBackends {
		t.Run(backend, func(t *testing.T) {
			ctx := ctxFor(t, 60*time.Second)
			// The primary CNI's part: cni0 (made by the first pod) with an
			// IPv6 gateway address.
			n, _, w := dsStart(t, ctx, dsSpec{backend: backend, gateway: true})
			cni6 := dsCNI6
			if _, ok := dpWaitUntil(20*time.Second, func() bool {
				st, err := w.Status(ctx)
				return err == nil && st.Ready && st.CNIInterface != nil && st.CNIInterface.IP6 == cni6.String()
			}); !ok {
				st, _ := w.Status(ctx)
				t.Fatalf("not ready with the IPv6 CNI address: %+v", st)
			}
			st, _ := w.Status(ctx)
			t.Logf("cniInterface %+v", *st.CNIInterface)
			for _, c := range []struct {
				cmd  []string
				want []string
			}{
				{[]string{"ip", "-6", "route", "show", "table", "240"}, []string{"fd00:2::/56 via fd57:6566:7400:1:0:0:c0a8:140b dev vx-weft-cable proto 247 src " + cni6.String()}},
				{[]string{"ip", "route", "show", "table", "240"}, []string{"10.2.0.0/16 via 241.168.20.11 dev vx-weft-cable proto 247 src 10.1.1.1"}},
				{[]string{"ip", "-6", "rule", "show"}, []string{"240:\tfrom all lookup 240 proto 247"}},
				{[]string{"ip", "-6", "addr", "show", "dev", "vx-weft-cable"}, []string{"fd57:6566:7400:1:0:0:c0a8:a0b/96"}},
			} {
				out, err := n.Exec(c.cmd[0], c.cmd[1:]...)
				if err != nil {
					t.Fatalf("%v: %v", c.cmd, err)
				}
				for _, w := range c.want {
					if !strings.Contains(out, w) && !strings.Contains(out, strings.ReplaceAll(w, "fd57:6566:7400:1:0:0:", "fd57:6566:7400:1::")) {
						t.Errorf("%v: missing %q in\n%s", c.cmd, w, out)
					}
				}
			}
			pf := map[string][]string{
				"nftables": {"nft", "list", "table", "ip6", "weft"},
				"iptables": {"ip6tables-save", "-t", "nat"},
			}[backend]
			out, err := n.Exec(pf[0], pf[1:]...)
			if err != nil || !strings.Contains(out, cni6.String()) {
				t.Errorf("%v: no IPv6 host SNAT to %s (%v):\n%s", pf, cni6, err, out)
			}
			human, _, _ := n.WeftdCommand(ctx, "status", "--socket", w.Socket)
			if !strings.Contains(string(human), fmt.Sprintf("CNI IPv6       cni0 %s", cni6)) {
				t.Errorf("weftd status lacks the IPv6 line:\n%s", human)
			}
		})
	}
}
