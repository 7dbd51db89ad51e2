// Package dataplane owns weft's netlink objects: VXLAN devices, static FDB
// and neighbour entries, routes in weft's own table, the one ip rule and the
// sysctls. It knows nothing of nftables or iptables.
package dataplane

import (
	"cmp"
	"context"
	"net"
	"net/netip"
)

// Peer is a remote VTEP reachable through a VXLAN device. It has an IPv4
// VTEP address, an IPv6 one, or both (one static neighbour each, both to
// its one MAC).
type Peer struct {
	VTEP     netip.Addr       // the peer's IPv4 VTEP address; invalid on an IPv6-only device
	VTEP6    netip.Addr       // the peer's IPv6 VTEP address; invalid without IPv6
	MAC      net.HardwareAddr // derived from VTEP, else VTEP6 (MACFor)
	Underlay netip.Addr       // the peer's underlay (node) address, IPv4 or IPv6
}

// VXLAN is one of weft's VXLAN devices and its static peers.
type VXLAN struct {
	Name     string
	VNI      uint32
	Port     uint16
	Underlay string // underlay interface name (VXLAN parent and source)
	// LocalIP is the own underlay address. Its family is the device's
	// underlay family, which the kernel fixes at creation: a change of
	// family recreates the device.
	LocalIP netip.Addr
	MTU     int          // 0 = underlay MTU − 50 (− 70 over IPv6)
	Addr    netip.Prefix // own IPv4 VTEP IP with the vtepCIDR prefix length; invalid = none
	Addr6   netip.Prefix // own IPv6 VTEP IP with the vtepCIDR6 prefix length; invalid = none
	MAC     net.HardwareAddr
	Peers   []Peer
}

// Route is one route in weft's table, IPv4 or IPv6 (Dst, Via and Src of
// one family).
type Route struct {
	Dst netip.Prefix
	Via netip.Addr // a VTEP address of Dst's family, reached onlink
	Dev string
	Src netip.Addr // the CNI interface's address of Dst's family; invalid while unknown
}

// State is the whole desired netlink state of a node.
type State struct {
	Devices      []VXLAN
	Routes       []Route
	Table        int
	RulePriority int
	// LooseRPFilter lists interfaces whose rp_filter must be 2 (weft's
	// devices, the CNI interface, the underlay interface).
	LooseRPFilter []string
	// Verify re-reads every object from the kernel instead of trusting
	// what the last Apply verified, so drift nobody was told about is
	// repaired. Without it a device's FDB and neighbours are taken to be
	// what the last Apply left (while the device keeps its ifindex and the
	// last Apply wrote them without error) and only the difference to s
	// is written: O(changed) instead of O(peers).
	Verify bool
	// RereadRoutes re-reads weft's route table even without Verify: the
	// pass was triggered by the kernel (a link, address, route or rule
	// event), and the kernel removes routes without telling (a device
	// down, a source address gone). Passes triggered by config changes or
	// plugin events trust the routes the last Apply left: one CIDR added
	// is one route written, not a dump of the table.
	RereadRoutes bool
}

// Manager applies a State and removes what weft owns.
type Manager interface {
	// Apply makes the kernel equal to s for everything weft owns, and
	// touches nothing else.
	Apply(ctx context.Context, s State) error
	// Cleanup removes every object weft owns (devices named in names, the
	// routes in table, the rule at priority). Idempotent.
	Cleanup(ctx context.Context, names []string, table, priority int) error
}

// CompareDst orders route destinations as netip.Prefix.Compare does for
// valid, masked prefixes of one family (length, then address), without
// masking both on every comparison: sorting or searching 20,000 routes is
// then a few milliseconds.
func CompareDst(a, b netip.Prefix) int {
	if c := cmp.Compare(a.Bits(), b.Bits()); c != 0 {
		return c
	}
	return a.Addr().Compare(b.Addr())
}

// MACFor derives the static MAC of a VTEP address: 02:57 + the 4 bytes of
// an IPv4 VTEP, 02:58 + the last 4 bytes of an IPv6 one (a vtepCIDR6
// leaves at most 32 host bits, so they are unique per VTEP, and the second
// byte keeps them apart from every IPv4-derived MAC). A device with both
// families takes its IPv4 VTEP's MAC. Nil for an invalid address.
func MACFor(vtep netip.Addr) net.HardwareAddr {
	switch {
	case vtep.Is4():
		b := vtep.As4()
		return net.HardwareAddr{0x02, 0x57, b[0], b[1], b[2], b[3]}
	case vtep.Is6():
		b := vtep.As16()
		return net.HardwareAddr{0x02, 0x58, b[12], b[13], b[14], b[15]}
	}
	return nil
}

// deviceMAC is d.MAC or, when empty, the one derived from its VTEP
// addresses (IPv4 first).
func deviceMAC(d VXLAN) net.HardwareAddr {
	switch {
	case len(d.MAC) > 0:
		return d.MAC
	case d.Addr.IsValid():
		return MACFor(d.Addr.Addr())
	case d.Addr6.IsValid():
		return MACFor(d.Addr6.Addr())
	}
	return nil
}

// peerMAC is p.MAC or, when empty, the one derived from its VTEPs.
func peerMAC(p Peer) net.HardwareAddr {
	switch {
	case len(p.MAC) > 0:
		return p.MAC
	case p.VTEP.IsValid():
		return MACFor(p.VTEP)
	}
	return MACFor(p.VTEP6)
}

// hasIPv6 reports whether s has any IPv6 object: then the IPv6 rule and
// sysctls are wanted (an IPv4-only state leaves IPv6 as it found it).
func (s *State) hasIPv6() bool {
	for _, d := range s.Devices {
		if d.Addr6.IsValid() {
			return true
		}
	}
	for _, r := range s.Routes {
		if r.Dst.Addr().Is6() {
			return true
		}
	}
	return false
}
