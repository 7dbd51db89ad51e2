// Package pftest holds the traffic tests both packet-filter backends must
// pass, for IPv4 and IPv6: real packets through real namespaces
// (netnstest.Routed), the source address and MSS the remote side sees.
package pftest

import (
	"context"
	"net/netip"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/pkg/netnstest"
	"github.com/weft-net/weft/pkg/packetfilter"
)

// Suite describes the backend under test.
type Suite struct {
	// New returns a fresh backend for the node namespace n. Apply and
	// Cleanup are called inside n.
	New func(t *testing.T, n *netnstest.NS) packetfilter.Backend
	// Masquerade makes the node masquerade everything from the pod CIDR
	// the way kube-proxy or a CNI would, in the place the backend's rules
	// must win against (a foreign nft table, or iptables' nat table).
	Masquerade func(t *testing.T, r *netnstest.Routed)
}

// Run runs every traffic test for both families.
func (s Suite) Run(t *testing.T) {
	t.Run("SelfSNATBeatsForeignMasquerade", func(t *testing.T) { forFamilies(t, s.selfSNAT) })
	t.Run("HostSNAT", func(t *testing.T) { forFamilies(t, s.hostSNAT) })
	t.Run("MSSClamp", func(t *testing.T) { forFamilies(t, s.mssClamp) })
}

func forFamilies(t *testing.T, f func(t *testing.T, ipv6 bool)) {
	for _, v6 := range []bool{false, true} {
		name := "ipv4"
		if v6 {
			name = "ipv6"
		}
		t.Run(name, func(t *testing.T) { f(t, v6) })
	}
}

// Model is weft's model for r's node: r's CIDRs, r's link to the remote as
// weft's device, the node's pod-side address as the CNI address of the
// family.
func Model(r *netnstest.Routed) packetfilter.Model {
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

func in(t *testing.T, n *netnstest.NS, f func() error) {
	t.Helper()
	var err error
	if derr := n.Do(func(ns.NetNS) error { err = f(); return nil }); derr != nil {
		t.Fatalf("enter netns: %v", derr)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// selfSNAT: without weft the remote sees the node's address (the foreign
// masquerade); with weft's identity NAT binding it sees the pod's.
func (s Suite) selfSNAT(t *testing.T, v6 bool) {
	r := netnstest.NewRouted(t, v6)
	s.Masquerade(t, r)
	if got := r.SourceSeen(t, r.Pod, r.RemoteIP); got != r.NodeRemoteIP {
		t.Fatalf("without weft the remote saw %s; the test's masquerade is not working", got)
	}
	b := s.New(t, r.Node)
	m := Model(r)
	m.CNIIP, m.CNIIP6 = netip.Addr{}, netip.Addr{}
	in(t, r.Node, func() error { return b.Apply(context.Background(), m) })
	if got := r.SourceSeen(t, r.Pod, r.RemoteIP); got != r.PodIP {
		t.Fatalf("with weft the remote saw %s, want the pod IP %s", got, r.PodIP)
	}
	in(t, r.Node, func() error { return b.Cleanup(context.Background()) })
	if got := r.SourceSeen(t, r.Pod, r.RemoteIP); got != r.NodeRemoteIP {
		t.Fatalf("after Cleanup the remote saw %s, want the masqueraded %s", got, r.NodeRemoteIP)
	}
}

// hostSNAT: host-network traffic to a remote pod leaves with the CNI
// address of its family; to a remote VTEP (not in the remote CIDRs) it
// keeps its source.
func (s Suite) hostSNAT(t *testing.T, v6 bool) {
	r := netnstest.NewRouted(t, v6)
	if got := r.SourceSeen(t, r.Node, r.RemoteIP); got != r.NodeRemoteIP {
		t.Fatalf("without weft the remote saw %s, want the node's %s", got, r.NodeRemoteIP)
	}
	b := s.New(t, r.Node)
	in(t, r.Node, func() error { return b.Apply(context.Background(), Model(r)) })
	if got := r.SourceSeen(t, r.Node, r.RemoteIP); got != r.NodePodIP {
		t.Errorf("host → remote pod seen from %s, want the CNI address %s", got, r.NodePodIP)
	}
	if got := r.SourceSeen(t, r.Node, r.RemoteVTEP); got != r.NodeRemoteIP {
		t.Errorf("host → remote VTEP seen from %s, want it untouched (%s)", got, r.NodeRemoteIP)
	}
	if got := r.SourceSeen(t, r.Pod, r.RemoteIP); got != r.PodIP {
		t.Errorf("pod → remote pod seen from %s, want the pod IP %s", got, r.PodIP)
	}
}

// mssClamp: a SYN forwarded towards a link of MTU 1400 arrives with its
// MSS clamped to that route's MTU less the family's headers.
func (s Suite) mssClamp(t *testing.T, v6 bool) {
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
	b := s.New(t, r.Node)
	in(t, r.Node, func() error { return b.Apply(context.Background(), Model(r)) })
	mss := r.ServerMSS(t)
	t.Logf("server MSS %d without weft, %d with (bound %d)", before, mss, bound)
	if mss > bound || mss < bound-40 {
		t.Errorf("with weft the server MSS is %d, want clamped to ≤ %d (and not far below)", mss, bound)
	}
}
