package nftbackend

import (
	"testing"

	"github.com/weft-net/weft/pkg/netnstest"
	"github.com/weft-net/weft/pkg/packetfilter"
	"github.com/weft-net/weft/pkg/packetfilter/pftest"
)

// TestTraffic: weft's nftables rules on real packets, IPv4 and IPv6 —
// self-SNAT beating a kube-proxy-like masquerade in another table, host
// SNAT to the CNI address of the family (VTEP traffic untouched), the MSS
// clamp.
func TestTraffic(t *testing.T) {
	pftest.Suite{
		New: func(t *testing.T, n *netnstest.NS) packetfilter.Backend { return newBackend(t, n) },
		Masquerade: func(t *testing.T, r *netnstest.Routed) {
			fam := "ip"
			if r.PodIP.Is6() {
				fam = "ip6"
			}
			r.Node.MustExec(t, "nft", "add table "+fam+" kube-proxy; add chain "+fam+" kube-proxy POSTROUTING { type nat hook postrouting priority srcnat; }; add rule "+fam+" kube-proxy POSTROUTING "+fam+" saddr "+r.LocalCIDR.String()+" masquerade")
		},
	}.Run(t)
}
