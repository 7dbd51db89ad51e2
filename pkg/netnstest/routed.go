package netnstest

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Routed is three namespaces for packet-filter traffic tests: a pod and a
// remote pod, each behind a veth into a node that routes between them. The
// node's link towards the remote is named vx-weft, so rules matching weft's
// device names apply to it; the node's address on the pod side plays the
// CNI interface's address.
type Routed struct {
	Node, Pod, Remote *NS
	// PodIP and RemoteIP are the pods' addresses; NodePodIP and
	// NodeRemoteIP the node's on the pod side and on the remote side.
	PodIP, RemoteIP, NodePodIP, NodeRemoteIP netip.Addr
	// LocalCIDR holds the pod and the node's pod-side address; RemoteCIDR
	// the remote pod but neither the node's remote-side address nor
	// RemoteVTEP, a second address of the remote namespace that plays a
	// remote VTEP (traffic to it is not remote-cluster traffic).
	LocalCIDR, RemoteCIDR netip.Prefix
	RemoteVTEP            netip.Addr
}

// NewRouted builds the three namespaces with IPv4 (10.1.0.0/24 pod side,
// 10.2.0.0/24 remote side) or IPv6 addresses (fd01::/64, fd02::/64).
func NewRouted(t testing.TB, ipv6 bool) *Routed {
	t.Helper()
	r := &Routed{Node: New(t), Pod: New(t), Remote: New(t)}
	plen, fwd := "24", "net.ipv4.ip_forward=1"
	nodad := []string{}
	r.NodePodIP, r.PodIP = netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.1.0.2")
	r.NodeRemoteIP, r.RemoteIP = netip.MustParseAddr("10.2.0.129"), netip.MustParseAddr("10.2.0.2")
	r.LocalCIDR, r.RemoteCIDR = netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("10.2.0.0/25")
	r.RemoteVTEP = netip.MustParseAddr("10.2.0.200")
	if ipv6 {
		plen, fwd = "64", "net.ipv6.conf.all.forwarding=1"
		// No duplicate address detection: the addresses work at once.
		nodad = []string{"nodad"}
		r.NodePodIP, r.PodIP = netip.MustParseAddr("fd01::1"), netip.MustParseAddr("fd01::2")
		r.NodeRemoteIP, r.RemoteIP = netip.MustParseAddr("fd02::1:1"), netip.MustParseAddr("fd02::2")
		r.LocalCIDR, r.RemoteCIDR = netip.MustParsePrefix("fd01::/64"), netip.MustParsePrefix("fd02::/112")
		r.RemoteVTEP = netip.MustParseAddr("fd02::1:2")
	}
	r.Node.MustExec(t, "ip", "link", "add", "to-pod", "type", "veth", "peer", "name", "eth0", "netns", r.Pod.Name)
	r.Node.MustExec(t, "ip", "link", "add", "vx-weft", "type", "veth", "peer", "name", "eth0", "netns", r.Remote.Name)
	for _, c := range [][]string{
		append([]string{"ip", "addr", "add", r.NodePodIP.String() + "/" + plen, "dev", "to-pod"}, nodad...),
		append([]string{"ip", "addr", "add", r.NodeRemoteIP.String() + "/" + plen, "dev", "vx-weft"}, nodad...),
		{"ip", "link", "set", "to-pod", "up"},
		{"ip", "link", "set", "vx-weft", "up"},
		{"sysctl", "-qw", fwd},
	} {
		r.Node.MustExec(t, c[0], c[1:]...)
	}
	for _, side := range []struct {
		n        *NS
		addr, gw netip.Addr
	}{{r.Pod, r.PodIP, r.NodePodIP}, {r.Remote, r.RemoteIP, r.NodeRemoteIP}} {
		side.n.MustExec(t, "ip", append([]string{"addr", "add", side.addr.String() + "/" + plen, "dev", "eth0"}, nodad...)...)
		side.n.MustExec(t, "ip", "link", "set", "eth0", "up")
		side.n.MustExec(t, "ip", "route", "add", "default", "via", side.gw.String())
	}
	r.Remote.MustExec(t, "ip", append([]string{"addr", "add", r.RemoteVTEP.String() + "/" + plen, "dev", "eth0"}, nodad...)...)
	return r
}

// SourceSeen sends one UDP datagram from a fresh socket in from (a new
// conntrack entry) to to, an address of the remote namespace, and returns
// the source address the remote side sees.
func (r *Routed) SourceSeen(t testing.TB, from *NS, to netip.Addr) netip.Addr {
	t.Helper()
	// Port 0: the kernel picks a free port per call, so no earlier socket
	// of this or a parallel test (or one in TIME_WAIT-like teardown) can
	// collide with it ("bind: address already in use" was seen on IPv6).
	var conn *net.UDPConn
	if err := r.Remote.Do(func(ns.NetNS) error {
		var err error
		conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(to, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dst := netip.AddrPortFrom(to, conn.LocalAddr().(*net.UDPAddr).AddrPort().Port())
	if err := from.Do(func(ns.NetNS) error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
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
	_, src, err := conn.ReadFromUDPAddrPort(make([]byte, 16))
	if err != nil {
		t.Fatalf("%s received nothing: %v", to, err)
	}
	return src.Addr().Unmap()
}

// ServerMSS opens a TCP connection from the pod to the remote pod and
// returns TCP_MAXSEG of the remote's accepted socket: the MSS the pod's
// SYN carried on arrival (less TCP options), so a clamp on the way shows.
func (r *Routed) ServerMSS(t testing.TB) int {
	t.Helper()
	var ln *net.TCPListener
	if err := r.Remote.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(r.RemoteIP, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var c net.Conn
	if err := r.Pod.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", ln.Addr().String(), 3*time.Second)
		return err
	}); err != nil {
		t.Fatalf("connect to the remote pod: %v", err)
	}
	defer c.Close()
	_ = ln.SetDeadline(time.Now().Add(3 * time.Second))
	s, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer s.Close()
	raw, err := s.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mss int
	var serr error
	if err := raw.Control(func(fd uintptr) { mss, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG) }); err != nil || serr != nil {
		t.Fatalf("TCP_MAXSEG: %v %v", err, serr)
	}
	return mss
}
