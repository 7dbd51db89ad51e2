package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/weft-net/weft/pkg/netnstest"
)

const (
	testTable = 240
	testPrio  = 240
)

var (
	nodeIP = netip.MustParseAddr("192.168.10.12")
	cniIP  = netip.MustParseAddr("10.1.2.1")
)

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// vtepFor maps an underlay address into 240.0.0.0/8.
func vtepFor(ul netip.Addr) netip.Addr {
	b := ul.As4()
	b[0] = 240
	return netip.AddrFrom4(b)
}

func peer(ul string) Peer {
	u := netip.MustParseAddr(ul)
	v := vtepFor(u)
	return Peer{VTEP: v, MAC: MACFor(v), Underlay: u}
}

// baseState is a non-gateway-like state on underlay ul0 (192.168.10.12/24)
// with two peers, a route with src and one without.
func baseState() State {
	vtep := vtepFor(nodeIP)
	gw := peer("192.168.10.11")
	return State{
		Devices: []VXLAN{{
			Name:     "vx-weft",
			VNI:      100,
			Port:     4800,
			Underlay: "ul0",
			LocalIP:  nodeIP,
			Addr:     netip.PrefixFrom(vtep, 8),
			MAC:      MACFor(vtep),
			Peers:    []Peer{gw, peer("192.168.10.13")},
		}},
		Routes: []Route{
			{Dst: netip.MustParsePrefix("10.2.0.0/16"), Via: gw.VTEP, Dev: "vx-weft", Src: cniIP},
			{Dst: netip.MustParsePrefix("10.102.0.0/16"), Via: gw.VTEP, Dev: "vx-weft"},
		},
		Table:         testTable,
		RulePriority:  testPrio,
		LooseRPFilter: []string{"vx-weft", "ul0", "cni0", "absent0"},
	}
}

// setupNode makes a namespace with an underlay ul0 (192.168.10.12/24) and
// a cni0 holding the CNI IP (the kernel refuses a route src that
// is not local).
func setupNode(t *testing.T) *netnstest.NS {
	t.Helper()
	n := netnstest.New(t)
	addLink(t, n, "ul0", "192.168.10.12/24")
	addLink(t, n, "cni0", cniIP.String()+"/24")
	return n
}

// addLink adds an up interface with an address. The test kernel may lack the
// dummy module, so it is a veth whose peer (name+"p") is up too, which
// also gives it a carrier.
func addLink(t *testing.T, n *netnstest.NS, name, addr string) {
	t.Helper()
	for _, c := range [][]string{
		{"link", "add", name, "type", "veth", "peer", "name", name + "p"},
		{"addr", "add", addr, "dev", name},
		{"link", "set", name + "p", "up"},
		{"link", "set", name, "up"},
	} {
		n.MustExec(t, "ip", c...)
	}
}

// apply runs Apply inside n and returns the number of changes.
func apply(t *testing.T, n *netnstest.NS, m *Netlink, s State) (int, error) {
	t.Helper()
	var st Stats
	var aerr error
	if err := n.Do(func(ns.NetNS) error {
		st, aerr = m.ApplyStats(context.Background(), s)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return st.Changes, aerr
}

func mustApply(t *testing.T, n *netnstest.NS, m *Netlink, s State) int {
	t.Helper()
	c, err := apply(t, n, m, s)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return c
}

func cleanup(t *testing.T, n *netnstest.NS, m *Netlink, names []string) (int, error) {
	t.Helper()
	var cerr error
	if err := n.Do(func(ns.NetNS) error {
		cerr = m.Cleanup(context.Background(), names, testTable, testPrio)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return m.LastApplyStats().Changes, cerr
}

func contains(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: missing %q in:\n%s", what, w, out)
		}
	}
}

func notContains(t *testing.T, what, out string, bad ...string) {
	t.Helper()
	for _, b := range bad {
		if strings.Contains(out, b) {
			t.Errorf("%s: unexpected %q in:\n%s", what, b, out)
		}
	}
}

func sysctl(t *testing.T, n *netnstest.NS, key string) string {
	t.Helper()
	return strings.TrimSpace(n.MustExec(t, "sysctl", "-n", key))
}

// checkState asserts, with the ip/bridge tools, that n holds s as built by
// baseState.
func checkState(t *testing.T, n *netnstest.NS, s State) {
	t.Helper()
	d := s.Devices[0]
	link := n.MustExec(t, "ip", "-d", "addr", "show", "dev", d.Name)
	contains(t, "ip -d addr", link,
		fmt.Sprintf("vxlan id %d", d.VNI),
		"local "+d.LocalIP.String(),
		"dev "+d.Underlay,
		fmt.Sprintf("dstport %d", d.Port),
		"nolearning",
		"mtu 1450",
		"link/ether "+d.MAC.String(),
		"inet "+d.Addr.String(),
		"alias "+DeviceAlias,
		"state UNKNOWN",
	)
	for _, line := range strings.Split(link, "\n") {
		if strings.Contains(line, "vxlan id") {
			// A remote or group would add the flooding entry.
			notContains(t, "vxlan attributes", line, " remote ", " group ")
		}
	}

	fdb := n.MustExec(t, "bridge", "fdb", "show", "dev", d.Name)
	for _, p := range d.Peers {
		contains(t, "bridge fdb", fdb, fmt.Sprintf("%s dst %s self permanent", p.MAC, p.Underlay))
	}
	notContains(t, "bridge fdb", fdb, "00:00:00:00:00:00")
	if got := strings.Count(fdb, "dst "); got != len(d.Peers) {
		t.Errorf("bridge fdb: %d entries, want %d:\n%s", got, len(d.Peers), fdb)
	}

	neigh := n.MustExec(t, "ip", "neigh", "show", "dev", d.Name)
	for _, p := range d.Peers {
		contains(t, "ip neigh", neigh, fmt.Sprintf("%s lladdr %s PERMANENT", p.VTEP, p.MAC))
	}

	routes := n.MustExec(t, "ip", "route", "show", "table", fmt.Sprint(s.Table))
	for _, r := range s.Routes {
		if r.Dst.Addr().Is6() {
			continue // checkState6
		}
		want := fmt.Sprintf("%s via %s dev %s proto %d", r.Dst, r.Via, r.Dev, RouteProtocol)
		if r.Src.IsValid() {
			want += " src " + r.Src.String()
		}
		contains(t, "ip route", routes, want+" onlink")
	}

	rules := n.MustExec(t, "ip", "rule", "show")
	re := regexp.MustCompile(fmt.Sprintf(`(?m)^%d:\s+from all lookup %d proto %d\s*$`, s.RulePriority, s.Table, RouteProtocol))
	if got := len(re.FindAllString(rules, -1)); got != 1 {
		t.Errorf("ip rule: %d weft rules, want exactly 1:\n%s", got, rules)
	}

	if got := sysctl(t, n, "net.ipv4.conf."+d.Name+".forwarding"); got != "1" {
		t.Errorf("forwarding on %s = %s, want 1", d.Name, got)
	}
	if got := sysctl(t, n, "net.ipv4.ip_forward"); got != "1" {
		t.Errorf("ip_forward = %s, want 1", got)
	}
	for _, ifc := range []string{"vx-weft", "ul0", "cni0"} {
		if got := sysctl(t, n, "net.ipv4.conf."+ifc+".rp_filter"); got != "2" {
			t.Errorf("rp_filter on %s = %s, want 2", ifc, got)
		}
	}
}

func TestApplyCreatesEverything(t *testing.T) {
	n := setupNode(t)
	m := New(testLogger(t))
	s := baseState()
	if c := mustApply(t, n, m, s); c == 0 {
		t.Fatal("first Apply reported no changes")
	}
	checkState(t, n, s)

	if c := mustApply(t, n, m, s); c != 0 {
		t.Errorf("second Apply made %d changes, want 0", c)
	}
}

func TestIncrementalPeers(t *testing.T) {
	n := setupNode(t)
	m := New(testLogger(t))
	s := baseState()
	d := &s.Devices[0]
	d.Peers = nil
	// Enough peers that anything proportional to their number shows.
	for i := 0; i < 500; i++ {
		d.Peers = append(d.Peers, peer(fmt.Sprintf("192.168.%d.%d", 100+i/250, 1+i%250)))
	}
	if c := mustApply(t, n, m, s); c < 2*len(d.Peers) {
		t.Fatalf("first Apply: %d changes, want at least %d", c, 2*len(d.Peers))
	}

	added := peer("192.168.10.99")
	d.Peers = append(d.Peers, added)
	if c := mustApply(t, n, m, s); c != 2 {
		t.Errorf("adding one peer: %d changes, want 2 (fdb + neighbour)", c)
	}
	contains(t, "bridge fdb", n.MustExec(t, "bridge", "fdb", "show", "dev", "vx-weft"), added.MAC.String()+" dst 192.168.10.99")

	removed := d.Peers[3]
	d.Peers = append(d.Peers[:3:3], d.Peers[4:]...)
	if c := mustApply(t, n, m, s); c != 2 {
		t.Errorf("removing one peer: %d changes, want 2", c)
	}
	notContains(t, "bridge fdb", n.MustExec(t, "bridge", "fdb", "show", "dev", "vx-weft"), removed.MAC.String())
	notContains(t, "ip neigh", n.MustExec(t, "ip", "neigh", "show", "dev", "vx-weft"), removed.VTEP.String()+" ")

	if c := mustApply(t, n, m, s); c != 0 {
		t.Errorf("unchanged Apply: %d changes, want 0", c)
	}
}

func ifindex(t *testing.T, n *netnstest.NS, name string) string {
	t.Helper()
	out := n.MustExec(t, "ip", "-o", "link", "show", "dev", name)
	return strings.SplitN(out, ":", 2)[0]
}

func TestDeviceChanges(t *testing.T) {
	tests := []struct {
		name     string
		change   func(*VXLAN)
		recreate bool
		want     []string // in `ip -d link show`
	}{
		{"vni", func(d *VXLAN) { d.VNI = 101 }, true, []string{"vxlan id 101"}},
		{"port", func(d *VXLAN) { d.Port = 4801 }, true, []string{"dstport 4801"}},
		{"local", func(d *VXLAN) { d.LocalIP = netip.MustParseAddr("192.168.10.50") }, true, []string{"local 192.168.10.50"}},
		{"mtu", func(d *VXLAN) { d.MTU = 1400 }, false, []string{"mtu 1400"}},
		{"mac", func(d *VXLAN) { d.MAC = net.HardwareAddr{0x02, 0x57, 1, 2, 3, 4} }, false, []string{"link/ether 02:57:01:02:03:04", "state UNKNOWN"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := setupNode(t)
			n.MustExec(t, "ip", "addr", "add", "192.168.10.50/24", "dev", "ul0")
			m := New(testLogger(t))
			s := baseState()
			mustApply(t, n, m, s)
			before := ifindex(t, n, "vx-weft")

			tc.change(&s.Devices[0])
			if c := mustApply(t, n, m, s); c == 0 {
				t.Fatal("Apply after change made no changes")
			}
			after := ifindex(t, n, "vx-weft")
			if recreated := before != after; recreated != tc.recreate {
				t.Errorf("recreated = %v (ifindex %s -> %s), want %v", recreated, before, after, tc.recreate)
			}
			contains(t, "ip -d link", n.MustExec(t, "ip", "-d", "link", "show", "dev", "vx-weft"), tc.want...)
			// The objects hanging off the device come back with it.
			contains(t, "ip route", n.MustExec(t, "ip", "route", "show", "table", "240"), "10.2.0.0/16 via 240.168.10.11")
			contains(t, "bridge fdb", n.MustExec(t, "bridge", "fdb", "show", "dev", "vx-weft"), "dst 192.168.10.11 self permanent")
			if c := mustApply(t, n, m, s); c != 0 {
				t.Errorf("Apply after repair made %d changes, want 0", c)
			}
		})
	}
}

func TestDriftRepaired(t *testing.T) {
	tests := []struct {
		name  string
		drift [][]string // commands run in the namespace
	}{
		{"device deleted", [][]string{{"ip", "link", "del", "vx-weft"}}},
		{"device down", [][]string{{"ip", "link", "set", "vx-weft", "down"}}},
		{"device replaced by bridge", [][]string{{"ip", "link", "del", "vx-weft"}, {"ip", "link", "add", "vx-weft", "type", "bridge"}}},
		{"learning on", [][]string{{"ip", "link", "del", "vx-weft"}, {"ip", "link", "add", "vx-weft", "type", "vxlan", "id", "100", "dstport", "4800", "local", "192.168.10.12", "dev", "ul0"}}},
		{"route deleted", [][]string{{"ip", "route", "del", "10.2.0.0/16", "table", "240"}}},
		{"route src changed", [][]string{{"ip", "route", "replace", "10.2.0.0/16", "via", "240.168.10.11", "dev", "vx-weft", "onlink", "table", "240", "proto", "247"}}},
		{"rule deleted", [][]string{{"ip", "rule", "del", "priority", "240"}}},
		{"rule duplicated", [][]string{{"ip", "rule", "add", "priority", "240", "lookup", "240"}}},
		{"rp_filter strict", [][]string{{"sysctl", "-w", "net.ipv4.conf.ul0.rp_filter=1"}, {"sysctl", "-w", "net.ipv4.conf.vx-weft.rp_filter=0"}}},
		{"forwarding off", [][]string{{"sysctl", "-w", "net.ipv4.conf.vx-weft.forwarding=0"}}},
		{"fdb deleted", [][]string{{"bridge", "fdb", "del", "02:57:f0:a8:0a:0b", "dev", "vx-weft", "dst", "192.168.10.11"}}},
		{"fdb flood entry added", [][]string{{"bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx-weft", "dst", "192.168.10.77"}}},
		{"fdb stale peer", [][]string{{"bridge", "fdb", "append", "02:57:f0:a8:0a:4d", "dev", "vx-weft", "dst", "192.168.10.77", "permanent"}}},
		{"fdb wrong dst", [][]string{{"bridge", "fdb", "replace", "02:57:f0:a8:0a:0b", "dev", "vx-weft", "dst", "192.168.10.77", "permanent"}}},
		{"neighbour wrong mac", [][]string{{"ip", "neigh", "replace", "240.168.10.11", "lladdr", "02:00:00:00:00:01", "dev", "vx-weft", "nud", "permanent"}}},
		{"neighbour stale", [][]string{{"ip", "neigh", "add", "240.168.10.77", "lladdr", "02:57:f0:a8:0a:4d", "dev", "vx-weft", "nud", "permanent"}}},
		{"address changed", [][]string{{"ip", "addr", "flush", "dev", "vx-weft"}, {"ip", "addr", "add", "240.1.1.1/8", "dev", "vx-weft"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := setupNode(t)
			m := New(testLogger(t))
			s := baseState()
			mustApply(t, n, m, s)
			for _, c := range tc.drift {
				n.MustExec(t, c[0], c[1:]...)
			}
			s.Verify = true // what the agent's resync does
			if c := mustApply(t, n, m, s); c == 0 {
				t.Error("Apply after drift made no changes")
			}
			checkState(t, n, s)
			notContains(t, "bridge fdb", n.MustExec(t, "bridge", "fdb", "show", "dev", "vx-weft"), "192.168.10.77")
			notContains(t, "ip neigh", n.MustExec(t, "ip", "neigh", "show", "dev", "vx-weft"), "240.168.10.77", "02:00:00:00:00:01")
			notContains(t, "ip addr", n.MustExec(t, "ip", "addr", "show", "dev", "vx-weft"), "240.1.1.1")
			if c := mustApply(t, n, m, s); c != 0 {
				t.Errorf("Apply after repair made %d changes, want 0", c)
			}
		})
	}
}

// TestVerifyFalseTrustsCache pins what an Apply without Verify may skip:
// drift nobody was told about in a device's FDB and neighbours stays until
// a Verify Apply, but a device with a new ifindex (recreated, by weft or by
// hand with identical attributes) is programmed in full either way.
func TestVerifyFalseTrustsCache(t *testing.T) {
	n := setupNode(t)
	m := New(testLogger(t))
	s := baseState()
	mustApply(t, n, m, s)
	gw := s.Devices[0].Peers[0]
	fdbLine := fmt.Sprintf("%s dst %s self permanent", gw.MAC, gw.Underlay)
	neighLine := fmt.Sprintf("%s lladdr %s PERMANENT", gw.VTEP, gw.MAC)

	n.MustExec(t, "bridge", "fdb", "del", gw.MAC.String(), "dev", "vx-weft", "dst", gw.Underlay.String())
	n.MustExec(t, "ip", "neigh", "del", gw.VTEP.String(), "dev", "vx-weft")
	if c := mustApply(t, n, m, s); c != 0 {
		t.Errorf("Verify=false Apply after hidden drift made %d changes, want 0 (it trusts the last Apply)", c)
	}
	notContains(t, "bridge fdb", n.MustExec(t, "bridge", "fdb", "show", "dev", "vx-weft"), fdbLine)

	// A peer change is still written, and only it.
	added := peer("192.168.10.99")
	s.Devices[0].Peers = append(s.Devices[0].Peers, added)
	if c := mustApply(t, n, m, s); c != 2 {
		t.Errorf("Verify=false Apply adding a peer made %d changes, want 2", c)
	}
	contains(t, "bridge fdb", n.MustExec(t, "bridge", "fdb", "show", "dev", "vx-weft"), added.MAC.String()+" dst 192.168.10.99")

	s.Verify = true
	if c := mustApply(t, n, m, s); c != 2 {
		t.Errorf("Verify=true Apply after hidden drift made %d changes, want 2 (fdb + neighbour)", c)
	}
	contains(t, "bridge fdb", n.MustExec(t, "bridge", "fdb", "show", "dev", "vx-weft"), fdbLine)
	contains(t, "ip neigh", n.MustExec(t, "ip", "neigh", "show", "dev", "vx-weft"), neighLine)
	checkState(t, n, s)

	// Deleted: weft recreates it and programs everything without Verify.
	s.Verify = false
	n.MustExec(t, "ip", "link", "del", "vx-weft")
	if c := mustApply(t, n, m, s); c == 0 {
		t.Error("Verify=false Apply after the device was deleted made no changes")
	}
	checkState(t, n, s)

	// Recreated by hand, identical but for its ifindex: only the FDB,
	// neighbours and routes it lost are missing.
	d := s.Devices[0]
	n.MustExec(t, "ip", "link", "del", "vx-weft")
	for _, c := range [][]string{
		{"link", "add", d.Name, "address", d.MAC.String(), "mtu", "1450", "type", "vxlan", "id", fmt.Sprint(d.VNI),
			"dstport", fmt.Sprint(d.Port), "local", d.LocalIP.String(), "dev", d.Underlay, "nolearning"},
		{"link", "set", d.Name, "alias", DeviceAlias},
		{"addr", "add", d.Addr.String(), "dev", d.Name},
		{"link", "set", d.Name, "up"},
	} {
		n.MustExec(t, "ip", c...)
	}
	// + the new device's rp_filter, which starts at the default.
	wantChanges := 2*len(d.Peers) + len(s.Routes) + 1
	if c := mustApply(t, n, m, s); c != wantChanges {
		t.Errorf("Verify=false Apply on a device recreated by hand made %d changes, want %d (fdb, neighbours, routes, rp_filter)", c, wantChanges)
	}
	checkState(t, n, s)
}

// Routes follow the same rule as the FDB: a pass that is neither verifying
// nor told the kernel changed (RereadRoutes) trusts the routes the last
// Apply left, so one CIDR added is one route write and no dump of the
// table; a route deleted behind weft's back is back after a RereadRoutes
// pass (a route event) or a verifying one.
func TestRoutesTrustedUnlessReread(t *testing.T) {
	n := setupNode(t)
	m := New(testLogger(t))
	s := baseState()
	mustApply(t, n, m, s)
	gone := s.Routes[1].Dst.String()

	n.MustExec(t, "ip", "route", "del", gone, "table", fmt.Sprint(testTable))
	if c := mustApply(t, n, m, s); c != 0 {
		t.Errorf("plain Apply after a hidden route deletion made %d changes, want 0 (it trusts the last Apply)", c)
	}
	notContains(t, "ip route", n.MustExec(t, "ip", "route", "show", "table", fmt.Sprint(testTable)), gone)

	// One more CIDR: one write, nothing else touched.
	s.Routes = append(s.Routes, Route{Dst: netip.MustParsePrefix("10.3.0.0/16"), Via: s.Routes[0].Via, Dev: "vx-weft"})
	if c := mustApply(t, n, m, s); c != 1 {
		t.Errorf("plain Apply adding one route made %d changes, want 1", c)
	}
	contains(t, "ip route", n.MustExec(t, "ip", "route", "show", "table", fmt.Sprint(testTable)), "10.3.0.0/16")

	// The route event's pass repairs.
	s.RereadRoutes = true
	if c := mustApply(t, n, m, s); c != 1 {
		t.Errorf("RereadRoutes Apply made %d changes, want 1 (the deleted route)", c)
	}
	checkState(t, n, s)

	// Removal through the cache: the route goes from the kernel.
	s.RereadRoutes = false
	s.Routes = s.Routes[:2]
	if c := mustApply(t, n, m, s); c != 1 {
		t.Errorf("plain Apply removing one route made %d changes, want 1", c)
	}
	checkState(t, n, s)

	// A verifying pass repairs too.
	n.MustExec(t, "ip", "route", "del", gone, "table", fmt.Sprint(testTable))
	s.Verify = true
	if c := mustApply(t, n, m, s); c != 1 {
		t.Errorf("Verify Apply made %d changes, want 1", c)
	}
	checkState(t, n, s)

	// A device brought down loses its routes silently; bringing it up
	// again is a device change, after which the table is re-read.
	s.Verify = false
	n.MustExec(t, "ip", "link", "set", "vx-weft", "down")
	if c := mustApply(t, n, m, s); c == 0 {
		t.Error("plain Apply after the device went down made no changes")
	}
	checkState(t, n, s)
}

// foreign creates objects that are not weft's and returns a check that they
// are intact.
func foreign(t *testing.T, n *netnstest.NS) func() {
	t.Helper()
	addLink(t, n, "foreign0", "172.16.0.1/24")
	for _, c := range [][]string{
		{"ip", "route", "add", "10.9.0.0/16", "via", "172.16.0.2", "table", "240", "proto", "static"},
		{"ip", "route", "add", "10.8.0.0/16", "via", "172.16.0.2", "table", "100"},
		{"ip", "rule", "add", "priority", "100", "lookup", "100"},
		{"ip", "rule", "add", "priority", "240", "from", "10.7.0.0/16", "lookup", "100"},
		{"ip", "rule", "add", "priority", "240", "from", "10.6.0.0/16", "lookup", "240"},
		{"ip", "neigh", "add", "172.16.0.9", "lladdr", "02:00:00:00:00:09", "dev", "foreign0", "nud", "permanent"},
		{"ip", "link", "add", "vx-other", "type", "vxlan", "id", "7", "dstport", "4789", "dev", "ul0"},
		{"bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx-other", "dst", "192.168.10.1"},
	} {
		n.MustExec(t, c[0], c[1:]...)
	}
	return func() {
		t.Helper()
		contains(t, "foreign link", n.MustExec(t, "ip", "link", "show"), "foreign0", "vx-other")
		contains(t, "foreign route", n.MustExec(t, "ip", "route", "show", "table", "240"), "10.9.0.0/16 via 172.16.0.2 dev foreign0 proto static")
		contains(t, "foreign table", n.MustExec(t, "ip", "route", "show", "table", "100"), "10.8.0.0/16 via 172.16.0.2")
		contains(t, "foreign rules", n.MustExec(t, "ip", "rule", "show"), "100:\tfrom all lookup 100", "240:\tfrom 10.7.0.0/16 lookup 100", "240:\tfrom 10.6.0.0/16 lookup 240")
		contains(t, "foreign neigh", n.MustExec(t, "ip", "neigh", "show", "dev", "foreign0"), "172.16.0.9 lladdr 02:00:00:00:00:09 PERMANENT")
		contains(t, "foreign fdb", n.MustExec(t, "bridge", "fdb", "show", "dev", "vx-other"), "00:00:00:00:00:00 dst 192.168.10.1")
	}
}

func TestForeignObjectsUntouched(t *testing.T) {
	n := setupNode(t)
	intact := foreign(t, n)
	m := New(testLogger(t))
	s := baseState()
	mustApply(t, n, m, s)
	checkState(t, n, s)
	intact()
	if c := mustApply(t, n, m, s); c != 0 {
		t.Errorf("second Apply with foreign objects: %d changes, want 0", c)
	}
	if _, err := cleanup(t, n, m, []string{"vx-weft"}); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	intact()
}

func TestForeignRouteConflictReported(t *testing.T) {
	n := setupNode(t)
	n.MustExec(t, "ip", "route", "add", "10.2.0.0/16", "dev", "cni0", "table", "240", "proto", "static")
	m := New(testLogger(t))
	_, err := apply(t, n, m, baseState())
	if err == nil || !strings.Contains(err.Error(), "10.2.0.0/16") {
		t.Fatalf("Apply error = %v, want one naming route 10.2.0.0/16", err)
	}
	routes := n.MustExec(t, "ip", "route", "show", "table", "240")
	contains(t, "ip route", routes, "10.2.0.0/16 dev cni0 proto static", "10.102.0.0/16 via 240.168.10.11")
}

func TestCleanup(t *testing.T) {
	n := setupNode(t)
	m := New(testLogger(t))
	s := baseState()
	// A second weft device, as a gateway with cable: vxlan would have.
	s.Devices = append(s.Devices, VXLAN{
		Name: "vx-weft-cable", VNI: 101, Port: 4801, Underlay: "ul0", LocalIP: nodeIP,
		Addr: netip.MustParsePrefix("241.168.10.12/8"), MAC: MACFor(netip.MustParseAddr("241.168.10.12")),
		Peers: []Peer{{VTEP: netip.MustParseAddr("241.168.20.11"), Underlay: netip.MustParseAddr("192.168.20.11")}},
	})
	s.Routes = append(s.Routes, Route{Dst: netip.MustParsePrefix("10.3.0.0/16"), Via: netip.MustParseAddr("241.168.20.11"), Dev: "vx-weft-cable"})
	mustApply(t, n, m, s)
	// Peer MAC left empty: derived from the VTEP.
	contains(t, "bridge fdb", n.MustExec(t, "bridge", "fdb", "show", "dev", "vx-weft-cable"), "02:57:f1:a8:14:0b dst 192.168.20.11")

	if c, err := cleanup(t, n, m, []string{"vx-weft", "vx-weft-cable"}); err != nil || c == 0 {
		t.Fatalf("Cleanup: %d changes, err %v", c, err)
	}
	notContains(t, "ip -d link", n.MustExec(t, "ip", "-d", "link", "show"), "vx-weft", "vxlan", DeviceAlias)
	notContains(t, "ip rule", n.MustExec(t, "ip", "rule", "show"), "lookup 240", "proto 247")
	if out := strings.TrimSpace(n.MustExec(t, "ip", "route", "show", "table", "240")); out != "" {
		t.Errorf("table 240 not empty after Cleanup:\n%s", out)
	}
	if c, err := cleanup(t, n, m, []string{"vx-weft", "vx-weft-cable"}); err != nil || c != 0 {
		t.Errorf("second Cleanup: %d changes, err %v; want 0, nil", c, err)
	}
}

func TestStaleWeftDeviceRemoved(t *testing.T) {
	n := setupNode(t)
	m := New(testLogger(t))
	s := baseState()
	cable := VXLAN{Name: "vx-weft-cable", VNI: 101, Port: 4801, Underlay: "ul0", LocalIP: nodeIP,
		Addr: netip.MustParsePrefix("241.168.10.12/8")}
	s.Devices = append(s.Devices, cable)
	mustApply(t, n, m, s)
	contains(t, "ip link", n.MustExec(t, "ip", "link", "show"), "vx-weft-cable")

	// Gateway handover: this node no longer has the cable device.
	s.Devices = s.Devices[:1]
	mustApply(t, n, m, s)
	notContains(t, "ip link", n.MustExec(t, "ip", "link", "show"), "vx-weft-cable")
	checkState(t, n, s)
}

func TestRouteSrc(t *testing.T) {
	n := setupNode(t)
	n.MustExec(t, "ip", "addr", "add", "10.1.2.7/24", "dev", "cni0")
	m := New(testLogger(t))
	s := baseState()
	s.Routes[0].Src = netip.Addr{}
	mustApply(t, n, m, s)
	routes := n.MustExec(t, "ip", "route", "show", "table", "240")
	contains(t, "ip route", routes, "10.2.0.0/16 via 240.168.10.11 dev vx-weft proto 247 onlink")
	notContains(t, "ip route", routes, "src")

	for _, src := range []string{"10.1.2.1", "10.1.2.7"} {
		s.Routes[0].Src = netip.MustParseAddr(src)
		if c := mustApply(t, n, m, s); c != 1 {
			t.Errorf("src %s: %d changes, want 1 (one replace)", src, c)
		}
		routes = n.MustExec(t, "ip", "route", "show", "table", "240")
		contains(t, "ip route", routes, "10.2.0.0/16 via 240.168.10.11 dev vx-weft proto 247 src "+src+" onlink")
		if got := strings.Count(routes, "10.2.0.0/16"); got != 1 {
			t.Errorf("src %s: %d routes for 10.2.0.0/16, want 1:\n%s", src, got, routes)
		}
	}

	// A Src not on this node is refused by the kernel: reported, and the
	// rest of the state is still applied.
	s.Routes[0].Src = netip.MustParseAddr("10.1.9.9")
	s.Routes = append(s.Routes, Route{Dst: netip.MustParsePrefix("10.4.0.0/16"), Via: vtepFor(netip.MustParseAddr("192.168.10.11")), Dev: "vx-weft"})
	_, err := apply(t, n, m, s)
	if err == nil || !strings.Contains(err.Error(), "10.2.0.0/16") {
		t.Errorf("Apply with foreign src: err %v, want one naming 10.2.0.0/16", err)
	}
	contains(t, "ip route", n.MustExec(t, "ip", "route", "show", "table", "240"), "10.4.0.0/16 via 240.168.10.11")
}

func TestErrorsJoinedAndRestApplied(t *testing.T) {
	n := setupNode(t)
	m := New(testLogger(t))
	s := baseState()
	s.Devices = append(s.Devices, VXLAN{Name: "vx-broken", VNI: 300, Port: 4900, Underlay: "missing0", LocalIP: nodeIP,
		Addr: netip.MustParsePrefix("242.168.10.12/8")})
	s.Routes = append(s.Routes, Route{Dst: netip.MustParsePrefix("10.5.0.0/16"), Via: netip.MustParseAddr("242.168.10.11"), Dev: "vx-broken"})
	_, err := apply(t, n, m, s)
	if err == nil {
		t.Fatal("Apply succeeded with a missing underlay")
	}
	for _, w := range []string{"device vx-broken", "missing0", "route 10.5.0.0/16"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
	good := baseState()
	checkState(t, n, good)
}

func TestUnderlayHelpers(t *testing.T) {
	n := setupNode(t)
	n.MustExec(t, "ip", "addr", "add", "192.168.10.40/24", "dev", "ul0") // secondary
	n.MustExec(t, "ip", "link", "set", "ul0", "mtu", "9000")
	n.MustExec(t, "ip", "route", "add", "default", "via", "192.168.10.1", "dev", "ul0")
	err := n.Do(func(ns.NetNS) error {
		name, addr, mtu, err := DefaultRouteInterface()
		if err != nil {
			return err
		}
		if name != "ul0" || addr != nodeIP || mtu != 9000 {
			t.Errorf("DefaultRouteInterface = %s %s %d, want ul0 %s 9000", name, addr, mtu, nodeIP)
		}
		name, mtu, err = InterfaceForAddr(cniIP)
		if err != nil {
			return err
		}
		if name != "cni0" || mtu != 1500 {
			t.Errorf("InterfaceForAddr(%s) = %s %d, want cni0 1500", cniIP, name, mtu)
		}
		if _, _, err := InterfaceForAddr(netip.MustParseAddr("192.0.2.1")); err == nil {
			t.Error("InterfaceForAddr of an absent address succeeded")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// No default route: an error, not a guess.
	empty := netnstest.New(t)
	if err := empty.Do(func(ns.NetNS) error {
		_, _, _, err := DefaultRouteInterface()
		if err == nil {
			t.Error("DefaultRouteInterface without a default route succeeded")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestTraffic connects two namespaces by a veth underlay and checks that a
// UDP datagram crosses vx-weft between their VTEP addresses.
func TestTraffic(t *testing.T) {
	a, b := netnstest.New(t), netnstest.New(t)
	a.MustExec(t, "ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ulb")
	a.MustExec(t, "ip", "link", "set", "ulb", "netns", b.Name)
	b.MustExec(t, "ip", "link", "set", "ulb", "name", "ul0")
	ips := map[*netnstest.NS]netip.Addr{a: netip.MustParseAddr("192.168.10.11"), b: netip.MustParseAddr("192.168.10.12")}
	for n, ip := range ips {
		n.MustExec(t, "ip", "addr", "add", ip.String()+"/24", "dev", "ul0")
		n.MustExec(t, "ip", "link", "set", "ul0", "up")
	}
	state := func(self, other netip.Addr) State {
		v := vtepFor(self)
		return State{
			Devices: []VXLAN{{
				Name: "vx-weft", VNI: 100, Port: 4800, Underlay: "ul0", LocalIP: self,
				Addr: netip.PrefixFrom(v, 8), MAC: MACFor(v),
				Peers: []Peer{{VTEP: vtepFor(other), MAC: MACFor(vtepFor(other)), Underlay: other}},
			}},
			Table: testTable, RulePriority: testPrio, LooseRPFilter: []string{"vx-weft", "ul0"},
		}
	}
	m := New(testLogger(t))
	mustApply(t, a, m, state(ips[a], ips[b]))
	mustApply(t, b, m, state(ips[b], ips[a]))

	target := vtepFor(ips[b])
	var conn *net.UDPConn
	if err := b.Do(func(ns.NetNS) error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(target.AsSlice()), Port: 7777})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() { // echo server; the socket stays in b whatever thread runs it
		buf := make([]byte, 1500)
		for {
			nr, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = conn.WriteToUDP(buf[:nr], from)
		}
	}()
	err := a.Do(func(ns.NetNS) error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IP(target.AsSlice()), Port: 7777})
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
			return err
		}
		if got := c.LocalAddr().(*net.UDPAddr).IP.String(); got != vtepFor(ips[a]).String() {
			t.Errorf("probe source %s, want own VTEP %s", got, vtepFor(ips[a]))
		}
		if _, err := c.Write([]byte("weft")); err != nil {
			return err
		}
		buf := make([]byte, 16)
		nr, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("no echo from %s through vx-weft: %w", target, err)
		}
		if string(buf[:nr]) != "weft" {
			return fmt.Errorf("echo %q", buf[:nr])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// benchNode makes a namespace with the underlay ul0 and returns an Apply
// through one manager in it.
func benchNode(b *testing.B) func(State) Stats {
	n := netnstest.New(b)
	n.MustExec(b, "ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ul0p")
	n.MustExec(b, "ip", "addr", "add", "192.168.10.12/24", "dev", "ul0")
	m := New(slog.New(slog.DiscardHandler))
	return func(s State) Stats {
		var st Stats
		var aerr error
		if err := n.Do(func(ns.NetNS) error { st, aerr = m.ApplyStats(context.Background(), s); return nil }); err != nil || aerr != nil {
			b.Fatal(err, aerr)
		}
		return st
	}
}

// BenchmarkAddOnePeer measures the incremental Apply that adds one peer to
// a device that has 5,000; it reports the netlink changes per Apply.
func BenchmarkAddOnePeer(b *testing.B) {
	run := benchNode(b)
	s := baseState()
	s.Routes = nil
	d := &s.Devices[0]
	d.Peers = nil
	for i := 0; i < 5000; i++ {
		d.Peers = append(d.Peers, peer(fmt.Sprintf("192.168.%d.%d", 100+i/250, 1+i%250)))
	}
	start := time.Now()
	run(s)
	b.Logf("initial Apply of 5000 peers: %v", time.Since(start))
	base := d.Peers
	extra := peer("192.168.10.99")
	changes := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Devices[0].Peers = append(base[:len(base):len(base)], extra)
		if i%2 == 1 {
			s.Devices[0].Peers = base
		}
		changes += run(s).Changes
	}
	b.ReportMetric(float64(changes)/float64(b.N), "changes/op")
}

// BenchmarkAddOneRoute measures the event-driven Apply that adds one route
// to a table of 20,000 (one CIDR added to the config).
func BenchmarkAddOneRoute(b *testing.B) {
	run := benchNode(b)
	s := baseState()
	via := s.Routes[0].Via
	dev := s.Routes[0].Dev
	s.Routes = nil
	for i := 0; i < 20000; i++ {
		v := uint32(20)<<24 + uint32(2*i)<<8
		s.Routes = append(s.Routes, Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), 0}), 24), Via: via, Dev: dev})
	}
	start := time.Now()
	s.Verify = true
	run(s)
	b.Logf("initial Apply of 20000 routes: %v", time.Since(start))
	s.Verify = false
	base := s.Routes
	extra := Route{Dst: netip.MustParsePrefix("30.0.0.0/24"), Via: via, Dev: dev}
	changes := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Routes = append(base[:len(base):len(base)], extra)
		if i%2 == 1 {
			s.Routes = base
		}
		changes += run(s).Changes
	}
	b.ReportMetric(float64(changes)/float64(b.N), "changes/op")
}

// A changed routeTable or rulePriority moves weft's routes and its rule,
// leaving nothing of weft's in the old table or at the old priority, and
// leaving a foreign route in the old table alone. A new Manager (a weftd
// restarted with a new table) does the same for what an earlier process
// left.
func TestTableAndPriorityMove(t *testing.T) {
	n := setupNode(t)
	s := baseState()
	mustApply(t, n, New(testLogger(t)), s)
	checkState(t, n, s)
	n.MustExec(t, "ip", "route", "add", "10.77.0.0/16", "dev", "cni0", "table", fmt.Sprint(testTable), "proto", "static")

	m := New(testLogger(t))
	for _, step := range []struct {
		name        string
		m           *Netlink
		table, prio int
	}{
		{"reload: table and priority", m, 250, 250},
		{"reload: priority only", m, 250, 245},
		{"restart: table only", New(testLogger(t)), 260, 245},
	} {
		old := s
		s.Table, s.RulePriority = step.table, step.prio
		mustApply(t, n, step.m, s)
		checkState(t, n, s)
		if old.Table != s.Table {
			oldRoutes := n.MustExec(t, "ip", "route", "show", "table", fmt.Sprint(old.Table), "proto", fmt.Sprint(RouteProtocol))
			if strings.TrimSpace(oldRoutes) != "" {
				t.Errorf("%s: weft's routes left in table %d:\n%s", step.name, old.Table, oldRoutes)
			}
		}
		rules := n.MustExec(t, "ip", "rule", "show")
		if old.Table != s.Table {
			notContains(t, step.name+": ip rule", rules, fmt.Sprintf("lookup %d ", old.Table))
		}
		if old.RulePriority != s.RulePriority {
			notContains(t, step.name+": ip rule", rules, fmt.Sprintf("%d:", old.RulePriority))
		}
		if c := mustApply(t, n, step.m, s); c != 0 {
			t.Errorf("%s: the Apply after the move made %d changes, want 0", step.name, c)
		}
	}
	contains(t, "foreign route in the first table", n.MustExec(t, "ip", "route", "show", "table", fmt.Sprint(testTable)), "10.77.0.0/16 dev cni0 proto static")
}
