package discovery

import (
	"net/netip"
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
