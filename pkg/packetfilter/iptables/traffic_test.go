package iptbackend

import (
	"testing"

	"github.com/weft-net/weft/pkg/netnstest"
	"github.com/weft-net/weft/pkg/packetfilter"
	"github.com/weft-net/weft/pkg/packetfilter/pftest"
)

// TestTraffic: weft's iptables and ip6tables rules on real packets, in
// both modes — the identity NAT beating a MASQUERADE later in nat
// POSTROUTING, host SNAT to the CNI address of the family (VTEP traffic
// untouched), the MSS clamp.
func TestTraffic(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		newNS(t, mode) // skips when the mode does not work here
		pftest.Suite{
			New: func(t *testing.T, _ *netnstest.NS) packetfilter.Backend { return newBackend(t, mode) },
			Masquerade: func(t *testing.T, r *netnstest.Routed) {
				f := ipv4
				if r.PodIP.Is6() {
					f = ipv6
				}
				r.Node.MustExec(t, f.name+"-"+mode, "-t", "nat", "-A", "POSTROUTING", "-s", r.LocalCIDR.String(), "-j", "MASQUERADE")
			},
		}.Run(t)
	})
}
