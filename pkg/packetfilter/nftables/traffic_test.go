package nftbackend

import (
	"context"
	"net/netip"
	"testing"

	"github.com/weft-net/weft/pkg/netnstest"
	"github.com/weft-net/weft/pkg/packetfilter"
)

// forFamilies runs f for IPv4 and for IPv6.
func forFamilies(t *testing.T, f func(t *testing.T, ipv6 bool)) {
	for _, v6 := range []bool{false, true} {
		name := "ipv4"
		if v6 {
			name = "ipv6"
		}
		t.Run(name, func(t *testing.T) { f(t, v6) })
	}
}

// routedModel is weft's model for r's node: r's CIDRs, the node's pod-side
// address as the CNI address of the family.
func routedModel(r *netnstest.Routed) packetfilter.Model {
	m := packetfilter.Model{
		LocalCIDRs:  []netip.Prefix{r.LocalCIDR},
		RemoteCIDRs: []netip.Prefix{r.RemoteCIDR},
		Devices:     []string{"vx-weft"},
		MSS:         packetfilter.MSS{Mode: packetfilter.MSSPMTU},
	}
	if r.NodePodIP.Is4() {
		m.CNIIP = r.NodePodIP
	} else {
		m.CNIIP6 = r.NodePodIP
	}
	return m
}

// TestSelfSNATBeatsForeignMasquerade routes a pod through a node to a
// remote pod while a kube-proxy-like table masquerades everything from the
// pod CIDR. Without weft the remote side sees the node's address; with
// weft's self-SNAT it sees the pod's. The same for IPv6 (ip6 tables).
func TestSelfSNATBeatsForeignMasquerade(t *testing.T) {
	forFamilies(t, func(t *testing.T, v6 bool) {
		r := netnstest.NewRouted(t, v6)
		fam := "ip"
		if v6 {
			fam = "ip6"
		}
		r.Node.MustExec(t, "nft", "add table "+fam+" kube-proxy; add chain "+fam+" kube-proxy POSTROUTING { type nat hook postrouting priority srcnat; }; add rule "+fam+" kube-proxy POSTROUTING "+fam+" saddr "+r.LocalCIDR.String()+" masquerade")
		if got := r.SourceSeen(t, r.Pod, r.RemoteIP); got != r.NodeRemoteIP {
			t.Fatalf("without weft the remote saw %s; the test's masquerade is not working", got)
		}
		b := newBackend(t, r.Node)
		m := routedModel(r)
		m.CNIIP, m.CNIIP6 = netip.Addr{}, netip.Addr{}
		apply(t, b, m)
		if got := r.SourceSeen(t, r.Pod, r.RemoteIP); got != r.PodIP {
			t.Fatalf("with weft the remote saw %s, want the pod IP %s", got, r.PodIP)
		}
		if err := b.Cleanup(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := r.SourceSeen(t, r.Pod, r.RemoteIP); got != r.NodeRemoteIP {
			t.Fatalf("after Cleanup the remote saw %s, want the masqueraded %s", got, r.NodeRemoteIP)
		}
	})
}

// Host-network traffic to a remote pod leaves with the CNI address of its
// family; to a remote VTEP (not in the remote CIDRs) it keeps its source.
func TestHostSNATTraffic(t *testing.T) {
	forFamilies(t, func(t *testing.T, v6 bool) {
		r := netnstest.NewRouted(t, v6)
		if got := r.SourceSeen(t, r.Node, r.RemoteIP); got != r.NodeRemoteIP {
			t.Fatalf("without weft the remote saw %s, want the node's %s", got, r.NodeRemoteIP)
		}
		apply(t, newBackend(t, r.Node), routedModel(r))
		if got := r.SourceSeen(t, r.Node, r.RemoteIP); got != r.NodePodIP {
			t.Errorf("host → remote pod seen from %s, want the CNI address %s", got, r.NodePodIP)
		}
		if got := r.SourceSeen(t, r.Node, r.RemoteVTEP); got != r.NodeRemoteIP {
			t.Errorf("host → remote VTEP seen from %s, want it untouched (%s)", got, r.NodeRemoteIP)
		}
		if got := r.SourceSeen(t, r.Pod, r.RemoteIP); got != r.PodIP {
			t.Errorf("pod → remote pod seen from %s, want the pod IP %s", got, r.PodIP)
		}
	})
}

// A SYN forwarded towards a link of MTU 1400 leaves with its MSS clamped
// to that route's MTU less the family's headers.
func TestMSSClampTraffic(t *testing.T) {
	forFamilies(t, func(t *testing.T, v6 bool) {
		r := netnstest.NewRouted(t, v6)
		r.Node.MustExec(t, "ip", "link", "set", "vx-weft", "mtu", "1400")
		bound := 1400 - 20 - 20
		if v6 {
			bound = 1400 - 40 - 20
		}
		before := r.ServerMSS(t)
		if before <= bound {
			t.Fatalf("without weft the server MSS is %d, already ≤ %d: the test shows nothing", before, bound)
		}
		apply(t, newBackend(t, r.Node), routedModel(r))
		mss := r.ServerMSS(t)
		t.Logf("server MSS %d without weft, %d with (bound %d)", before, mss, bound)
		if mss > bound || mss < bound-40 {
			t.Errorf("with weft the server MSS is %d, want clamped to ≤ %d (and not far below)", mss, bound)
		}
	})
}
