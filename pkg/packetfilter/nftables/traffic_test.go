package nftbackend

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/pkg/netnstest"
	"github.com/weft-net/weft/pkg/packetfilter"
)

// TestSelfSNATBeatsForeignMasquerade routes a "pod" (10.1.0.2) through a
// node namespace to a "remote pod" (10.2.0.2) while a kube-proxy-like table
// masquerades everything from the pod CIDR. Without weft the remote side
// sees the node's address; with weft's self-SNAT it sees the pod's.
func TestSelfSNATBeatsForeignMasquerade(t *testing.T) {
	node, pod, remote := netnstest.New(t), netnstest.New(t), netnstest.New(t)
	node.MustExec(t, "ip", "link", "add", "to-pod", "type", "veth", "peer", "name", "eth0", "netns", pod.Name)
	node.MustExec(t, "ip", "link", "add", "to-remote", "type", "veth", "peer", "name", "eth0", "netns", remote.Name)
	for _, c := range [][]string{
		{"ip", "addr", "add", "10.1.0.1/24", "dev", "to-pod"},
		{"ip", "addr", "add", "10.2.0.1/24", "dev", "to-remote"},
		{"ip", "link", "set", "to-pod", "up"},
		{"ip", "link", "set", "to-remote", "up"},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"nft", "add table ip kube-proxy; add chain ip kube-proxy POSTROUTING { type nat hook postrouting priority srcnat; }; add rule ip kube-proxy POSTROUTING ip saddr 10.1.0.0/16 masquerade"},
	} {
		node.MustExec(t, c[0], c[1:]...)
	}
	for _, side := range []struct {
		n        *netnstest.NS
		addr, gw string
	}{{pod, "10.1.0.2/24", "10.1.0.1"}, {remote, "10.2.0.2/24", "10.2.0.1"}} {
		side.n.MustExec(t, "ip", "addr", "add", side.addr, "dev", "eth0")
		side.n.MustExec(t, "ip", "link", "set", "eth0", "up")
		side.n.MustExec(t, "ip", "route", "add", "default", "via", side.gw)
	}

	var conn *net.UDPConn
	if err := remote.Do(func(ns.NetNS) error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 2, 0, 2), Port: 9999})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// sourceSeen sends one datagram from the pod on a fresh socket (a new
	// conntrack entry) and returns the source address the remote sees.
	sourceSeen := func() netip.Addr {
		t.Helper()
		if err := pod.Do(func(ns.NetNS) error {
			c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(10, 2, 0, 2), Port: 9999})
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("ping"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, from, err := conn.ReadFromUDPAddrPort(make([]byte, 16))
		if err != nil {
			t.Fatalf("remote received nothing: %v", err)
		}
		return from.Addr()
	}

	if got := sourceSeen(); got != netip.MustParseAddr("10.2.0.1") {
		t.Fatalf("without weft the remote saw %s; the test's masquerade is not working", got)
	}
	b := newBackend(t, node)
	apply(t, b, packetfilter.Model{
		LocalCIDRs:  prefixes("10.1.0.0/16"),
		RemoteCIDRs: prefixes("10.2.0.0/16"),
		MSS:         packetfilter.MSS{Mode: packetfilter.MSSPMTU},
	})
	if got := sourceSeen(); got != netip.MustParseAddr("10.1.0.2") {
		t.Fatalf("with weft the remote saw %s, want the pod IP 10.1.0.2", got)
	}
	if err := b.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := sourceSeen(); got != netip.MustParseAddr("10.2.0.1") {
		t.Fatalf("after Cleanup the remote saw %s, want the masqueraded 10.2.0.1", got)
	}
}
