package dataplane

import (
	"context"
	"net"
	"net/netip"
	"sort"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestMACFor(t *testing.T) {
	got := MACFor(netip.MustParseAddr("240.168.10.12")).String()
	if got != "02:57:f0:a8:0a:0c" {
		t.Errorf("MACFor = %s", got)
	}
}

func fdbNeigh(mac, dst string, state, vni int) netlink.Neigh {
	hw, _ := net.ParseMAC(mac)
	return netlink.Neigh{HardwareAddr: hw, IP: net.ParseIP(dst).To4(), State: state, VNI: vni, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF}
}

func TestDiffFDB(t *testing.T) {
	const (
		a = "02:57:f0:00:00:01"
		b = "02:57:f0:00:00:02"
		c = "02:57:f0:00:00:03"
	)
	key := func(s string) macKey {
		hw, _ := net.ParseMAC(s)
		k, _ := keyOf(hw)
		return k
	}
	want := map[macKey]netip.Addr{
		key(a): netip.MustParseAddr("192.168.0.1"),
		key(b): netip.MustParseAddr("192.168.0.2"),
	}
	tests := []struct {
		name     string
		existing []netlink.Neigh
		del      []string // "mac dst"
		set      []string // macs
	}{
		{"empty", nil, nil, []string{a, b}},
		{"in place", []netlink.Neigh{
			fdbNeigh(a, "192.168.0.1", netlink.NUD_PERMANENT, 0),
			fdbNeigh(b, "192.168.0.2", netlink.NUD_PERMANENT, 0),
		}, nil, nil},
		{"stale peer and flood entry", []netlink.Neigh{
			fdbNeigh(a, "192.168.0.1", netlink.NUD_PERMANENT, 0),
			fdbNeigh(b, "192.168.0.2", netlink.NUD_PERMANENT, 0),
			fdbNeigh(c, "192.168.0.3", netlink.NUD_PERMANENT, 0),
			fdbNeigh("00:00:00:00:00:00", "192.168.0.9", netlink.NUD_PERMANENT, 0),
		}, []string{c + " 192.168.0.3", "00:00:00:00:00:00 192.168.0.9"}, nil},
		{"wrong dst", []netlink.Neigh{
			fdbNeigh(a, "192.168.0.7", netlink.NUD_PERMANENT, 0),
			fdbNeigh(b, "192.168.0.2", netlink.NUD_PERMANENT, 0),
		}, []string{a + " 192.168.0.7"}, []string{a}},
		{"not permanent is rewritten, not deleted", []netlink.Neigh{
			fdbNeigh(a, "192.168.0.1", netlink.NUD_NOARP, 0),
			fdbNeigh(b, "192.168.0.2", netlink.NUD_PERMANENT, 0),
		}, nil, []string{a}},
		{"foreign vni", []netlink.Neigh{
			fdbNeigh(a, "192.168.0.1", netlink.NUD_PERMANENT, 0),
			fdbNeigh(b, "192.168.0.2", netlink.NUD_PERMANENT, 77),
		}, nil, []string{b}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			del, set := diffFDB(tc.existing, want)
			var gotDel, gotSet []string
			for _, n := range del {
				gotDel = append(gotDel, n.HardwareAddr.String()+" "+n.IP.String())
			}
			for _, e := range set {
				gotSet = append(gotSet, e.MAC.String())
				if e.Dst != want[e.MAC] {
					t.Errorf("set %s dst %s, want %s", e.MAC, e.Dst, want[e.MAC])
				}
			}
			sameSet(t, "del", gotDel, tc.del)
			sameSet(t, "set", gotSet, tc.set)
		})
	}
}

func TestDiffNeigh(t *testing.T) {
	v1, v2 := netip.MustParseAddr("240.0.0.1"), netip.MustParseAddr("240.0.0.2")
	k1, _ := keyOf(MACFor(v1))
	k2, _ := keyOf(MACFor(v2))
	want := map[netip.Addr]macKey{v1: k1, v2: k2}
	n := func(ip string, mac net.HardwareAddr, state int) netlink.Neigh {
		return netlink.Neigh{IP: net.ParseIP(ip).To4(), HardwareAddr: mac, State: state, Family: unix.AF_INET}
	}
	tests := []struct {
		name     string
		existing []netlink.Neigh
		del, set []string
	}{
		{"empty", nil, nil, []string{"240.0.0.1", "240.0.0.2"}},
		{"in place", []netlink.Neigh{n("240.0.0.1", MACFor(v1), netlink.NUD_PERMANENT), n("240.0.0.2", MACFor(v2), netlink.NUD_PERMANENT)}, nil, nil},
		{"wrong mac and dynamic", []netlink.Neigh{n("240.0.0.1", net.HardwareAddr{2, 0, 0, 0, 0, 1}, netlink.NUD_PERMANENT), n("240.0.0.2", MACFor(v2), netlink.NUD_REACHABLE)}, nil, []string{"240.0.0.1", "240.0.0.2"}},
		{"stale static removed, kernel-resolved left", []netlink.Neigh{
			n("240.0.0.1", MACFor(v1), netlink.NUD_PERMANENT), n("240.0.0.2", MACFor(v2), netlink.NUD_PERMANENT),
			n("240.0.0.3", net.HardwareAddr{2, 0, 0, 0, 0, 3}, netlink.NUD_PERMANENT),
			n("240.0.0.4", nil, netlink.NUD_FAILED),
		}, []string{"240.0.0.3"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			del, set := diffNeigh(tc.existing, want)
			var gotDel, gotSet []string
			for _, d := range del {
				gotDel = append(gotDel, d.IP.String())
			}
			for _, s := range set {
				gotSet = append(gotSet, s.String())
			}
			sameSet(t, "del", gotDel, tc.del)
			sameSet(t, "set", gotSet, tc.set)
		})
	}
}

func TestImmutableDiff(t *testing.T) {
	want := &netlink.Vxlan{VxlanId: 100, Port: 4800, VtepDevIndex: 2, SrcAddr: net.ParseIP("192.168.10.12")}
	good := func() *netlink.Vxlan {
		v := *want
		v.SrcAddr = net.ParseIP("192.168.10.12").To4()
		v.MTU = 1300 // mutable: not a reason
		return &v
	}
	tests := []struct {
		name   string
		cur    netlink.Link
		reason bool
	}{
		{"same", good(), false},
		{"not vxlan", &netlink.Bridge{}, true},
		{"vni", func() netlink.Link { v := good(); v.VxlanId = 1; return v }(), true},
		{"port", func() netlink.Link { v := good(); v.Port = 8472; return v }(), true},
		{"local", func() netlink.Link { v := good(); v.SrcAddr = net.ParseIP("10.0.0.1"); return v }(), true},
		{"parent", func() netlink.Link { v := good(); v.VtepDevIndex = 3; return v }(), true},
		{"learning", func() netlink.Link { v := good(); v.Learning = true; return v }(), true},
		{"remote", func() netlink.Link { v := good(); v.Group = net.ParseIP("192.168.10.1"); return v }(), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := immutableDiff(tc.cur, want); (got != "") != tc.reason {
				t.Errorf("immutableDiff = %q, want a reason: %v", got, tc.reason)
			}
		})
	}
}

func TestIsPlainLookup(t *testing.T) {
	plain := func() netlink.Rule {
		r := *netlink.NewRule()
		r.Family, r.Table, r.Priority = unix.AF_INET, 240, 240
		return r
	}
	src := plain()
	src.Src = &net.IPNet{IP: net.IPv4(10, 0, 0, 0), Mask: net.CIDRMask(8, 32)}
	iif := plain()
	iif.IifName = "eth0"
	other := plain()
	other.Table = 100
	for _, tc := range []struct {
		name string
		r    netlink.Rule
		want bool
	}{{"plain", plain(), true}, {"src", src, false}, {"iif", iif, false}, {"other table", other, false}} {
		if got := isPlainLookup(tc.r, unix.AF_INET, 240, 240); got != tc.want {
			t.Errorf("%s: isPlainLookup = %v, want %v", tc.name, got, tc.want)
		}
		// The same rule is not the IPv6 rule: `ip -6 rule` is its own list.
		if isPlainLookup(tc.r, unix.AF_INET6, 240, 240) {
			t.Errorf("%s: an IPv4 rule taken for the IPv6 one", tc.name)
		}
	}
}

func TestApplyCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := New(nil)
	if err := m.Apply(ctx, State{}); err == nil {
		t.Error("Apply with a cancelled context succeeded")
	}
	if c := m.LastApplyStats().Changes; c != 0 {
		t.Errorf("cancelled Apply made %d changes", c)
	}
}

func sameSet(t *testing.T, what string, got, want []string) {
	t.Helper()
	sort.Strings(got)
	sort.Strings(want)
	if len(got) != len(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
		return
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("%s = %v, want %v", what, got, want)
			return
		}
	}
}
