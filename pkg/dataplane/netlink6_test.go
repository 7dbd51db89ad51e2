package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/weft-net/weft/pkg/netnstest"
)

var (
	vtep6Net = netip.MustParsePrefix("fd57:6566:7400::/96")
	cniIP6   = netip.MustParseAddr("fd00:1:2::1")
	nodeIP6  = netip.MustParseAddr("fd00:10::12")
)

// vtep6For maps an underlay address into fd57:6566:7400::/96: the whole
// IPv4 address, or the low 32 bits of an IPv6 one.
func vtep6For(ul netip.Addr) netip.Addr {
	b := vtep6Net.Addr().As16()
	u := ul.As16()
	copy(b[12:], u[12:])
	return netip.AddrFrom16(b)
}

// dualPeer is a peer of a dual-stack device over an IPv4 underlay: both
// VTEPs, the IPv4 VTEP's MAC.
func dualPeer(ul string) Peer {
	p := peer(ul)
	p.VTEP6 = vtep6For(p.Underlay)
	return p
}

// dualState is baseState with IPv6 on the same device: an IPv6 VTEP
// address, both VTEPs per peer, IPv6 routes with the CNI interface's IPv6
// address as source.
func dualState() State {
	s := baseState()
	d := &s.Devices[0]
	d.Addr6 = netip.PrefixFrom(vtep6For(nodeIP), 96)
	d.Peers = []Peer{dualPeer("192.168.10.11"), dualPeer("192.168.10.13")}
	gw6 := d.Peers[0].VTEP6
	s.Routes = append(s.Routes,
		Route{Dst: netip.MustParsePrefix("fd00:2::/56"), Via: gw6, Dev: "vx-weft", Src: cniIP6},
		Route{Dst: netip.MustParsePrefix("fd00:102::/112"), Via: gw6, Dev: "vx-weft", Src: cniIP6},
	)
	return s
}

// setupDualNode is setupNode with the CNI interface's IPv6 address and
// IPv6 forwarding on (what the primary CNI of a dual-stack cluster does).
func setupDualNode(t *testing.T) *netnstest.NS {
	t.Helper()
	n := setupNode(t)
	n.MustExec(t, "ip", "-6", "addr", "add", cniIP6.String()+"/64", "dev", "cni0", "nodad")
	n.MustExec(t, "sysctl", "-w", "net.ipv6.conf.all.forwarding=1")
	return n
}

// checkState6 asserts the IPv6 objects of s with the ip/bridge tools.
func checkState6(t *testing.T, n *netnstest.NS, s State) {
	t.Helper()
	d := s.Devices[0]
	addrs := n.MustExec(t, "ip", "-6", "addr", "show", "dev", d.Name)
	contains(t, "ip -6 addr", addrs, "inet6 "+d.Addr6.String()+" scope global nodad")
	for _, line := range strings.Split(addrs, "\n") {
		if strings.Contains(line, "scope global") {
			notContains(t, "ip -6 addr", line, "tentative", "dadfailed")
		}
	}
	neigh := n.MustExec(t, "ip", "-6", "neigh", "show", "dev", d.Name)
	for _, p := range d.Peers {
		contains(t, "ip -6 neigh", neigh, fmt.Sprintf("%s lladdr %s PERMANENT", p.VTEP6, peerMAC(p)))
	}
	routes := n.MustExec(t, "ip", "-6", "route", "show", "table", fmt.Sprint(s.Table))
	for _, r := range s.Routes {
		if !r.Dst.Addr().Is6() {
			continue
		}
		want := fmt.Sprintf("%s via %s dev %s proto %d", r.Dst, r.Via, r.Dev, RouteProtocol)
		if r.Src.IsValid() {
			want += " src " + r.Src.String()
		}
		contains(t, "ip -6 route", routes, want+" metric 1024 onlink")
	}
	rules := n.MustExec(t, "ip", "-6", "rule", "show")
	re := regexp.MustCompile(fmt.Sprintf(`(?m)^%d:\s+from all lookup %d proto %d\s*$`, s.RulePriority, s.Table, RouteProtocol))
	if got := len(re.FindAllString(rules, -1)); got != 1 {
		t.Errorf("ip -6 rule: %d weft rules, want exactly 1:\n%s", got, rules)
	}
	for key, want := range map[string]string{"disable_ipv6": "0", "accept_ra": "0", "forwarding": "1"} {
		if got := sysctl(t, n, "net.ipv6.conf."+d.Name+"."+key); got != want {
			t.Errorf("net.ipv6.conf.%s.%s = %s, want %s", d.Name, key, got, want)
		}
	}
}

// checkNoIPv6 asserts that n holds none of weft's IPv6 objects.
func checkNoIPv6(t *testing.T, n *netnstest.NS, dev string) {
	t.Helper()
	// iproute2 says "FIB table does not exist" for an empty IPv6 table.
	if out, err := n.Exec("ip", "-6", "route", "show", "table", fmt.Sprint(testTable)); strings.TrimSpace(out) != "" && !strings.Contains(out, "FIB table does not exist") {
		t.Errorf("IPv6 table %d not empty (%v):\n%s", testTable, err, out)
	}
	notContains(t, "ip -6 rule", n.MustExec(t, "ip", "-6", "rule", "show"), "proto 247", fmt.Sprintf("lookup %d", testTable))
	if dev != "" {
		notContains(t, "ip -6 addr", n.MustExec(t, "ip", "-6", "addr", "show", "dev", dev), "fd57:")
		notContains(t, "ip -6 neigh", n.MustExec(t, "ip", "-6", "neigh", "show", "dev", dev), "PERMANENT")
	}
}

// A dual-stack node over an IPv4 underlay: the IPv6 VTEP address, the
// static IPv6 neighbours, the IPv6 routes with the CNI IPv6 source, the
// `ip -6` rule and the device's IPv6 sysctls are on the same vx-weft, the
// IPv4 objects as before; a second Apply changes nothing.
func TestIPv6DualStackApply(t *testing.T) {
	n := setupDualNode(t)
	// A host that creates devices with IPv6 off: weft's device gets it on.
	n.MustExec(t, "sysctl", "-w", "net.ipv6.conf.default.disable_ipv6=1")
	m := New(testLogger(t))
	s := dualState()
	mustApply(t, n, m, s)
	checkState(t, n, s)
	checkState6(t, n, s)
	// Only weft's device: the underlay and the CNI interface keep theirs.
	if got := sysctl(t, n, "net.ipv6.conf.ul0.accept_ra"); got != "1" {
		t.Errorf("accept_ra on ul0 = %s, want 1 (not weft's device)", got)
	}
	if c := mustApply(t, n, m, s); c != 0 {
		t.Errorf("second Apply made %d changes, want 0", c)
	}
	s.Verify = true
	if c := mustApply(t, n, m, s); c != 0 {
		t.Errorf("Verify Apply made %d changes, want 0", c)
	}
}

// An IPv4-only state leaves no IPv6 object: none is created, and those of
// an earlier dual-stack state are removed while IPv4 stays.
func TestIPv6RemovedWhenNotWanted(t *testing.T) {
	n := setupDualNode(t)
	m := New(testLogger(t))
	v4 := baseState()
	mustApply(t, n, m, v4)
	checkNoIPv6(t, n, "vx-weft")
	if got := sysctl(t, n, "net.ipv6.conf.vx-weft.accept_ra"); got != "1" {
		t.Errorf("IPv4-only state: accept_ra on vx-weft = %s, want the kernel's 1 (IPv6 untouched)", got)
	}

	mustApply(t, n, m, dualState())
	mustApply(t, n, m, v4) // no Verify: the last state had IPv6, so it is swept
	checkNoIPv6(t, n, "vx-weft")
	checkState(t, n, v4)

	// Once clean, an IPv4-only pass without Verify lists no IPv6 (a
	// hand-made IPv6 address stays); the resync's Verify pass removes it.
	n.MustExec(t, "ip", "-6", "addr", "add", "fd57:6566:7400::77/96", "dev", "vx-weft", "nodad")
	if c := mustApply(t, n, m, v4); c != 0 {
		t.Errorf("clean IPv4-only pass made %d changes, want 0 (no IPv6 sweep)", c)
	}
	contains(t, "ip -6 addr", n.MustExec(t, "ip", "-6", "addr", "show", "dev", "vx-weft"), "fd57:6566:7400::77")
	v4.Verify = true
	if c := mustApply(t, n, m, v4); c != 1 {
		t.Errorf("Verify pass made %d changes, want 1 (the stray IPv6 address)", c)
	}
	checkNoIPv6(t, n, "vx-weft")
}

func TestIPv6DriftRepaired(t *testing.T) {
	gw6 := vtep6For(netip.MustParseAddr("192.168.10.11")).String()
	tests := []struct {
		name  string
		drift [][]string
	}{
		{"route deleted", [][]string{{"ip", "-6", "route", "del", "fd00:2::/56", "table", "240"}}},
		{"route src dropped", [][]string{{"ip", "-6", "route", "replace", "fd00:2::/56", "via", gw6, "dev", "vx-weft", "onlink", "table", "240", "proto", "247"}}},
		{"rule deleted", [][]string{{"ip", "-6", "rule", "del", "priority", "240"}}},
		{"rule duplicated", [][]string{{"ip", "-6", "rule", "add", "priority", "240", "lookup", "240"}}},
		{"address deleted", [][]string{{"ip", "-6", "addr", "del", vtep6For(nodeIP).String() + "/96", "dev", "vx-weft"}}},
		{"address changed", [][]string{{"ip", "-6", "addr", "del", vtep6For(nodeIP).String() + "/96", "dev", "vx-weft"}, {"ip", "-6", "addr", "add", "fd57:6566:7400::77/96", "dev", "vx-weft", "nodad"}}},
		{"neighbour wrong mac", [][]string{{"ip", "-6", "neigh", "replace", gw6, "lladdr", "02:00:00:00:00:01", "dev", "vx-weft", "nud", "permanent"}}},
		{"neighbour stale", [][]string{{"ip", "-6", "neigh", "add", "fd57:6566:7400::77", "lladdr", "02:57:f0:a8:0a:4d", "dev", "vx-weft", "nud", "permanent"}}},
		{"accept_ra on", [][]string{{"sysctl", "-w", "net.ipv6.conf.vx-weft.accept_ra=1"}}},
		{"forwarding off", [][]string{{"sysctl", "-w", "net.ipv6.conf.vx-weft.forwarding=0"}}},
		{"IPv6 disabled", [][]string{{"sysctl", "-w", "net.ipv6.conf.vx-weft.disable_ipv6=1"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := setupDualNode(t)
			m := New(testLogger(t))
			s := dualState()
			mustApply(t, n, m, s)
			for _, c := range tc.drift {
				n.MustExec(t, c[0], c[1:]...)
			}
			s.Verify = true
			if c := mustApply(t, n, m, s); c == 0 {
				t.Error("Apply after drift made no changes")
			}
			checkState(t, n, s)
			checkState6(t, n, s)
			notContains(t, "ip -6 addr", n.MustExec(t, "ip", "-6", "addr", "show", "dev", "vx-weft"), "fd57:6566:7400::77")
			notContains(t, "ip -6 neigh", n.MustExec(t, "ip", "-6", "neigh", "show", "dev", "vx-weft"), "fd57:6566:7400::77", "02:00:00:00:00:01")
			if c := mustApply(t, n, m, s); c != 0 {
				t.Errorf("Apply after repair made %d changes, want 0", c)
			}
		})
	}
}

func TestIPv6Cleanup(t *testing.T) {
	n := setupDualNode(t)
	m := New(testLogger(t))
	mustApply(t, n, m, dualState())
	// The state of an earlier table too: weft's IPv6 routes anywhere go.
	n.MustExec(t, "ip", "-6", "route", "add", "fd00:3::/56", "via", vtep6For(netip.MustParseAddr("192.168.10.11")).String(), "dev", "vx-weft", "onlink", "table", "77", "proto", "247")
	n.MustExec(t, "ip", "-6", "route", "add", "fd00:4::/56", "dev", "cni0", "table", "77") // not weft's
	if c, err := cleanup(t, n, m, []string{"vx-weft"}); err != nil || c == 0 {
		t.Fatalf("Cleanup: %d changes, err %v", c, err)
	}
	checkNoIPv6(t, n, "")
	notContains(t, "ip -6 route table 77", n.MustExec(t, "ip", "-6", "route", "show", "table", "77"), "fd00:3::")
	contains(t, "ip -6 route table 77", n.MustExec(t, "ip", "-6", "route", "show", "table", "77"), "fd00:4::/56 dev cni0")
	if c, err := cleanup(t, n, m, []string{"vx-weft"}); err != nil || c != 0 {
		t.Errorf("second Cleanup: %d changes, err %v; want 0, nil", c, err)
	}
}

// A node that does not forward IPv6 is reported (weft does not turn on
// net.ipv6.conf.all.forwarding, which would change every interface), and
// everything else is applied.
func TestIPv6ForwardingOffReported(t *testing.T) {
	n := setupNode(t)
	n.MustExec(t, "ip", "-6", "addr", "add", cniIP6.String()+"/64", "dev", "cni0", "nodad")
	m := New(testLogger(t))
	s := dualState()
	_, err := apply(t, n, m, s)
	if err == nil || !strings.Contains(err.Error(), "net.ipv6.conf.all.forwarding is 0") {
		t.Fatalf("Apply: err %v, want the IPv6 forwarding problem", err)
	}
	if got := sysctl(t, n, "net.ipv6.conf.all.forwarding"); got != "0" {
		t.Errorf("all.forwarding = %s: weft must not write it", got)
	}
	checkState(t, n, s)
	checkState6(t, n, s)
}

// An IPv6-only node: the device's underlay is IPv6 (local, FDB
// destinations), its MTU is the underlay's − 70, its MAC is the IPv6
// VTEP's (02:58:…). Moving the node to an IPv4 underlay recreates the
// device, since the kernel fixes a VXLAN device's underlay family.
func TestIPv6Underlay(t *testing.T) {
	n := netnstest.New(t)
	addLink(t, n, "ul0", "192.168.10.12/24")
	n.MustExec(t, "ip", "-6", "addr", "add", nodeIP6.String()+"/64", "dev", "ul0", "nodad")
	addLink(t, n, "cni0", cniIP.String()+"/24")
	n.MustExec(t, "ip", "-6", "addr", "add", cniIP6.String()+"/64", "dev", "cni0", "nodad")
	n.MustExec(t, "sysctl", "-w", "net.ipv6.conf.all.forwarding=1")

	v6peer := func(ul string) Peer {
		u := netip.MustParseAddr(ul)
		v := vtep6For(u)
		return Peer{VTEP6: v, Underlay: u} // MAC derived
	}
	own := vtep6For(nodeIP6)
	gw := v6peer("fd00:10::11")
	s := State{
		Devices: []VXLAN{{
			Name: "vx-weft", VNI: 100, Port: 4800, Underlay: "ul0", LocalIP: nodeIP6,
			Addr6: netip.PrefixFrom(own, 96),
			Peers: []Peer{gw, v6peer("fd00:10::13")},
		}},
		Routes:       []Route{{Dst: netip.MustParsePrefix("fd00:2::/56"), Via: gw.VTEP6, Dev: "vx-weft", Src: cniIP6}},
		Table:        testTable,
		RulePriority: testPrio,
	}
	m := New(testLogger(t))
	mustApply(t, n, m, s)
	link := n.MustExec(t, "ip", "-d", "link", "show", "dev", "vx-weft")
	contains(t, "ip -d link", link, "local "+nodeIP6.String(), "mtu 1430", "link/ether 02:58:00:00:00:12")
	fdb := n.MustExec(t, "bridge", "fdb", "show", "dev", "vx-weft")
	contains(t, "bridge fdb", fdb, "02:58:00:00:00:11 dst fd00:10::11 self permanent", "02:58:00:00:00:13 dst fd00:10::13 self permanent")
	if got := strings.Count(fdb, "dst "); got != 2 {
		t.Errorf("bridge fdb: %d entries, want 2:\n%s", got, fdb)
	}
	checkState6(t, n, s)
	notContains(t, "ip -4 addr", n.MustExec(t, "ip", "-4", "addr", "show", "dev", "vx-weft"), "inet ")
	if c := mustApply(t, n, m, s); c != 0 {
		t.Errorf("second Apply made %d changes, want 0", c)
	}

	// A peer of the other family cannot be reached through this device.
	bad := s
	bad.Devices = []VXLAN{s.Devices[0]}
	bad.Devices[0].Peers = append([]Peer{}, s.Devices[0].Peers...)
	bad.Devices[0].Peers = append(bad.Devices[0].Peers, Peer{VTEP6: vtep6For(netip.MustParseAddr("192.168.10.14")), Underlay: netip.MustParseAddr("192.168.10.14")})
	if _, err := apply(t, n, m, bad); err == nil || !strings.Contains(err.Error(), "not of the device's underlay family") {
		t.Errorf("IPv4 peer on an IPv6 underlay: err %v", err)
	}

	// The underlay family changes: the device is recreated.
	before := ifindex(t, n, "vx-weft")
	s4 := s
	s4.Devices = []VXLAN{s.Devices[0]}
	d := &s4.Devices[0]
	d.LocalIP = nodeIP
	d.Peers = []Peer{{VTEP6: gw.VTEP6, Underlay: netip.MustParseAddr("192.168.10.11")}}
	mustApply(t, n, m, s4)
	if ifindex(t, n, "vx-weft") == before {
		t.Error("underlay family changed but the device was not recreated")
	}
	contains(t, "ip -d link", n.MustExec(t, "ip", "-d", "link", "show", "dev", "vx-weft"), "local 192.168.10.12", "mtu 1450")
	contains(t, "bridge fdb", n.MustExec(t, "bridge", "fdb", "show", "dev", "vx-weft"), "dst 192.168.10.11 self permanent")
	checkState6(t, n, s4)
}

// Real IPv6 traffic between two nodes through vx-weft, over an IPv4
// underlay (dual stack) and over an IPv6 one: a UDP probe from node a's
// CNI IPv6 address (the route's src) to an address on node b's CNI
// interface, routed by weft's table through the static neighbour and FDB
// entries, and the echo back.
func TestIPv6Traffic(t *testing.T) {
	for _, underlay6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "IPv4 underlay", true: "IPv6 underlay"}[underlay6], func(t *testing.T) {
			a, b := netnstest.New(t), netnstest.New(t)
			a.MustExec(t, "ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ulb")
			a.MustExec(t, "ip", "link", "set", "ulb", "netns", b.Name)
			b.MustExec(t, "ip", "link", "set", "ulb", "name", "ul0")
			type node struct {
				ns       *netnstest.NS
				ul       netip.Addr
				cni6     netip.Addr
				podRange string
			}
			na := node{a, netip.MustParseAddr("192.168.10.11"), netip.MustParseAddr("fd00:1:1::1"), "fd00:1::/32"}
			nb := node{b, netip.MustParseAddr("192.168.10.12"), netip.MustParseAddr("fd00:2:1::1"), "fd00:2::/32"}
			if underlay6 {
				na.ul, nb.ul = netip.MustParseAddr("fd00:10::11"), netip.MustParseAddr("fd00:10::12")
			}
			for _, x := range []node{na, nb} {
				bits := 24
				if underlay6 {
					bits = 64
				}
				x.ns.MustExec(t, "ip", "addr", "add", fmt.Sprintf("%s/%d", x.ul, bits), "dev", "ul0", "nodad")
				x.ns.MustExec(t, "ip", "link", "set", "ul0", "up")
				addLink(t, x.ns, "cni0", "10.9.9.1/24")
				x.ns.MustExec(t, "ip", "-6", "addr", "add", x.cni6.String()+"/64", "dev", "cni0", "nodad")
				x.ns.MustExec(t, "sysctl", "-w", "net.ipv6.conf.all.forwarding=1")
			}
			state := func(self, other node) State {
				v6 := vtep6For(self.ul)
				p := Peer{VTEP6: vtep6For(other.ul), Underlay: other.ul}
				d := VXLAN{Name: "vx-weft", VNI: 100, Port: 4800, Underlay: "ul0", LocalIP: self.ul, Addr6: netip.PrefixFrom(v6, 96), Peers: []Peer{p}}
				if !underlay6 { // dual stack: the IPv4 VTEP and its MAC too
					d.Addr = netip.PrefixFrom(vtepFor(self.ul), 8)
					p.VTEP = vtepFor(other.ul)
					d.Peers = []Peer{p}
				}
				return State{
					Devices:      []VXLAN{d},
					Routes:       []Route{{Dst: netip.MustParsePrefix(other.podRange), Via: p.VTEP6, Dev: "vx-weft", Src: self.cni6}},
					Table:        testTable,
					RulePriority: testPrio,
				}
			}
			m := New(testLogger(t))
			mustApply(t, a, m, state(na, nb))
			mustApply(t, b, m, state(nb, na))
			waitLocal6(t, a, na.cni6)
			waitLocal6(t, b, nb.cni6)
			var conn *net.UDPConn
			if err := b.Do(func(ns.NetNS) error {
				var err error
				conn, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IP(nb.cni6.AsSlice()), Port: 7777})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			seen := make(chan string, 1)
			go func() {
				buf := make([]byte, 1500)
				for {
					nr, from, err := conn.ReadFromUDP(buf)
					if err != nil {
						return
					}
					select {
					case seen <- from.IP.String():
					default:
					}
					_, _ = conn.WriteToUDP(buf[:nr], from)
				}
			}()
			err := a.Do(func(ns.NetNS) error {
				c, err := net.DialUDP("udp6", nil, &net.UDPAddr{IP: net.IP(nb.cni6.AsSlice()), Port: 7777})
				if err != nil {
					return err
				}
				defer c.Close()
				if err := c.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
					return err
				}
				if got := c.LocalAddr().(*net.UDPAddr).IP.String(); got != na.cni6.String() {
					t.Errorf("probe source %s, want the route's src %s", got, na.cni6)
				}
				if _, err := c.Write([]byte("weft6")); err != nil {
					return err
				}
				buf := make([]byte, 16)
				nr, err := c.Read(buf)
				if err != nil {
					return fmt.Errorf("no echo from %s through vx-weft: %w", nb.cni6, err)
				}
				if string(buf[:nr]) != "weft6" {
					return fmt.Errorf("echo %q", buf[:nr])
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := <-seen; got != na.cni6.String() {
				t.Errorf("b saw the probe from %s, want %s", got, na.cni6)
			}
		})
	}
}

// The IPv6 underlay default: the IPv6 default route's interface and its
// stable global address (not a temporary, deprecated or tentative one, not
// link-local), and the IPv6 address's interface for a configured nodeIP6.
func TestUnderlayHelpers6(t *testing.T) {
	n := setupNode(t)
	for _, c := range [][]string{
		// The stable one first and the others after it, whichever end
		// of the list the kernel starts from.
		{"-6", "addr", "add", "fd00:10::97/64", "dev", "ul0", "nodad", "preferred_lft", "0"}, // deprecated
		{"-6", "addr", "add", nodeIP6.String() + "/64", "dev", "ul0", "nodad"},
		{"-6", "addr", "add", "fd00:10::99/64", "dev", "ul0", "nodad", "preferred_lft", "0"}, // deprecated
		{"-6", "addr", "add", "fd00:10::98/64", "dev", "ul0"},                                // tentative (DAD)
		{"link", "set", "ul0", "mtu", "9000"},
		{"-6", "route", "add", "default", "via", "fd00:10::1", "dev", "ul0"},
	} {
		n.MustExec(t, "ip", c...)
	}
	if err := n.Do(func(ns.NetNS) error {
		name, addr, mtu, err := DefaultRouteInterface6()
		if err != nil {
			return err
		}
		if name != "ul0" || addr != nodeIP6 || mtu != 9000 {
			t.Errorf("DefaultRouteInterface6 = %s %s %d, want ul0 %s 9000", name, addr, mtu, nodeIP6)
		}
		name, mtu, err = InterfaceForAddr(nodeIP6)
		if err != nil || name != "ul0" || mtu != 9000 {
			t.Errorf("InterfaceForAddr(%s) = %s %d %v", nodeIP6, name, mtu, err)
		}
		// The IPv4 default is not the IPv6 one.
		if _, _, _, err := DefaultRouteInterface(); err == nil || !strings.Contains(err.Error(), "no IPv4 default route") {
			t.Errorf("DefaultRouteInterface with only an IPv6 default: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// waitLocal6 waits until each address has its local route. An address
// added with nodad can be bound at once, but the kernel inserts its local
// route from the DAD worker, later on a loaded machine: meanwhile a packet
// for it is forwarded (all.forwarding=1), not delivered.
func waitLocal6(t *testing.T, n *netnstest.NS, addrs ...netip.Addr) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, a := range addrs {
		for {
			out := n.MustExec(t, "ip", "-6", "route", "show", "table", "local", a.String())
			if strings.Contains(out, "local "+a.String()) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no local route for %s after 5s", n.Name, a)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
