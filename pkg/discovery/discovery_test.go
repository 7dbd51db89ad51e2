package discovery

import (
	"net/netip"
	"strings"
	"testing"
)

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func TestFilterAndChoose(t *testing.T) {
	pod := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	eth0 := Iface{Name: "eth0", Index: 2, Kind: "veth", Addrs: addrs("192.168.10.12")}
	cni0 := Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: addrs("10.1.2.1")}
	calico := Iface{Name: "vxlan.calico", Index: 7, Kind: "vxlan", Addrs: addrs("10.1.2.0")}
	podVeth := Iface{Name: "veth1234", Index: 3, Kind: "veth", Addrs: addrs("10.1.2.1")}
	other := Iface{Name: "br-x", Index: 4, Kind: "bridge", Addrs: addrs("10.1.9.1")}
	weft := Iface{Name: "vx-weft", Index: 1, Kind: "vxlan", Addrs: addrs("10.1.200.1")}

	cases := []struct {
		name    string
		ifaces  []Iface
		hints   Hints
		want    Choice
		wantErr bool
	}{
		{"nothing yet", []Iface{eth0}, Hints{}, Choice{}, true},
		{"bridge by plugin gateway", []Iface{eth0, other, cni0}, Hints{GatewayIPs: addrs("10.1.2.1")},
			Choice{"cni0", netip.MustParseAddr("10.1.2.1"), SourcePlugin}, false},
		{"well-known beats lowest ifindex", []Iface{eth0, other, cni0}, Hints{},
			Choice{"cni0", netip.MustParseAddr("10.1.2.1"), SourceWellKnown}, false},
		{"calico: gateway on pod veths is ignored", []Iface{eth0, podVeth, calico}, Hints{GatewayIPs: addrs("10.1.2.1")},
			Choice{"vxlan.calico", netip.MustParseAddr("10.1.2.0"), SourceWellKnown}, false},
		{"lowest ifindex last", []Iface{eth0, other}, Hints{},
			Choice{"br-x", netip.MustParseAddr("10.1.9.1"), SourceLowest}, false},
		{"pinned", []Iface{cni0, other}, Hints{Pinned: "br-x", GatewayIPs: addrs("10.1.2.1")},
			Choice{"br-x", netip.MustParseAddr("10.1.9.1"), SourcePinned}, false},
		{"pinned but absent: no guess", []Iface{cni0}, Hints{Pinned: "br-x"}, Choice{}, true},
		{"weft's own devices excluded", []Iface{weft}, Hints{Exclude: []string{"vx-weft"}}, Choice{}, true},
		{"address outside pod CIDRs ignored", []Iface{{Name: "cni0", Index: 5, Kind: "bridge", Addrs: addrs("172.17.0.1")}}, Hints{}, Choice{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Choose(Filter(tc.ifaces, pod, tc.hints.Exclude), tc.hints)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The IPv6 address is chosen by the same rules among the interfaces that
// hold one inside the IPv6 pod CIDRs; the IPv4 choice is unchanged by
// IPv6 addresses.
func TestChoosePerFamily(t *testing.T) {
	pod := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00:1::/56")}
	cni0 := Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: addrs("fd00:1:0:2::1", "10.1.2.1", "fe80::1")}
	calico := Iface{Name: "vxlan.calico", Index: 7, Kind: "vxlan", Addrs: addrs("10.1.2.0")}
	calico6 := Iface{Name: "vxlan-v6.calico", Index: 8, Kind: "vxlan", Addrs: addrs("fd00:1:0:2::")}
	podVeth := Iface{Name: "veth1234", Index: 3, Kind: "veth", Addrs: addrs("fd00:1:0:2::1")}
	other := Iface{Name: "br-x", Index: 4, Kind: "bridge", Addrs: addrs("fd00:1:0:9::1", "fd00:1:0:9::")}
	outside := Iface{Name: "eth1", Index: 2, Kind: "veth", Addrs: addrs("2001:db8::5")}
	v6only := Iface{Name: "br-6", Index: 9, Kind: "bridge", Addrs: addrs("fd00:1:0:6::1")}
	ma := netip.MustParseAddr

	cases := []struct {
		name         string
		ifaces       []Iface
		hints        Hints
		want4, want6 Choice // zero = no choice (an error)
	}{
		{"bridge holds both", []Iface{outside, cni0}, Hints{},
			Choice{"cni0", ma("10.1.2.1"), SourceWellKnown}, Choice{"cni0", ma("fd00:1:0:2::1"), SourceWellKnown}},
		{"calico: one device per family", []Iface{podVeth, calico, calico6}, Hints{GatewayIPs: addrs("fd00:1:0:2::1")},
			Choice{"vxlan.calico", ma("10.1.2.0"), SourceWellKnown}, Choice{"vxlan-v6.calico", ma("fd00:1:0:2::"), SourceWellKnown}},
		{"plugin gateway of each family", []Iface{other, cni0}, Hints{GatewayIPs: addrs("fd00:1:0:9::1", "10.1.2.1")},
			Choice{"cni0", ma("10.1.2.1"), SourcePlugin}, Choice{"br-x", ma("fd00:1:0:9::1"), SourcePlugin}},
		{"lowest ifindex, lowest address", []Iface{v6only, other}, Hints{},
			Choice{}, Choice{"br-x", ma("fd00:1:0:9::"), SourceLowest}},
		{"pinned holds only IPv4", []Iface{calico, calico6}, Hints{Pinned: "vxlan.calico"},
			Choice{"vxlan.calico", ma("10.1.2.0"), SourcePinned}, Choice{}},
		{"no IPv6 in the pod CIDRs", []Iface{outside, calico}, Hints{},
			Choice{"vxlan.calico", ma("10.1.2.0"), SourceWellKnown}, Choice{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cands := Filter(tc.ifaces, pod, tc.hints.Exclude)
			for _, f := range []struct {
				fam    string
				choose func([]Iface, Hints) (Choice, error)
				want   Choice
			}{{"IPv4", Choose, tc.want4}, {"IPv6", Choose6, tc.want6}} {
				got, err := f.choose(cands, tc.hints)
				if (err != nil) != (f.want == Choice{}) {
					t.Fatalf("%s: err = %v, want %+v", f.fam, err, f.want)
				}
				if err != nil && !strings.Contains(err.Error(), f.fam) {
					t.Errorf("%s: error %q does not name the family", f.fam, err)
				}
				if got != f.want {
					t.Errorf("%s: got %+v, want %+v", f.fam, got, f.want)
				}
			}
		})
	}
}
