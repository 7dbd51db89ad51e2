package controlplane

import (
	"net/netip"
	"testing"

	"github.com/weft-net/weft/pkg/config"
)

// The leader's ClusterEndpoint carries its addresses of both families:
// IPv4 in gatewayIP and IPv6 in gatewayIP6 for a dual-stack gateway, the
// IPv6 one in gatewayIP for an IPv6-only gateway (objects from before
// dual stack read the same).
func TestOwnEndpointFamilies(t *testing.T) {
	a := netip.MustParseAddr
	cfg := &config.Config{NodeName: "c1-n2", Cable: config.CableVXLAN, Cluster: config.Cluster{ID: "c1", PodCIDRs: []string{"fd00:1::/56"}}}
	cfg.CableVXLAN.Port, cfg.CableVXLAN.VNI = 4801, 101
	for _, tc := range []struct {
		name    string
		ip, ip6 netip.Addr
		gw, gw6 string
		hcs     [2]netip.Addr
		hc, hc6 string
	}{
		{"IPv4", a("192.168.10.12"), netip.Addr{}, "192.168.10.12", "", [2]netip.Addr{a("10.1.2.1")}, "10.1.2.1", ""},
		{"dual stack", a("192.168.10.12"), a("fd00:10::12"), "192.168.10.12", "fd00:10::12", [2]netip.Addr{a("10.1.2.1"), a("fd00:1:0:2::1")}, "10.1.2.1", "fd00:1:0:2::1"},
		{"IPv6 only", netip.Addr{}, a("fd00:10::12"), "fd00:10::12", "", [2]netip.Addr{{}, a("fd00:1:0:2::1")}, "fd00:1:0:2::1", ""},
		{"nothing known", netip.Addr{}, netip.Addr{}, "", "", [2]netip.Addr{}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := OwnEndpoint(cfg, tc.ip, tc.ip6)
			if e.Spec.GatewayIP != tc.gw || e.Spec.GatewayIP6 != tc.gw6 || e.Spec.Port != 4801 || e.Spec.VNI != 101 || e.Spec.GatewayNode != "c1-n2" {
				t.Errorf("spec %+v, want gatewayIP %q gatewayIP6 %q", e.Spec, tc.gw, tc.gw6)
			}
			if hc, hc6 := pair(tc.hcs[0], tc.hcs[1]); hc != tc.hc || hc6 != tc.hc6 {
				t.Errorf("health checks %q %q, want %q %q", hc, hc6, tc.hc, tc.hc6)
			}
		})
	}
}
