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

// Peer is a remote VTEP reachable through a VXLAN device.
type Peer struct {
	VTEP     netip.Addr       // the peer's VTEP address
	MAC      net.HardwareAddr // derived from VTEP (02:57:a.b.c.d)
	Underlay netip.Addr       // the peer's underlay (node) address
}

// VXLAN is one of weft's VXLAN devices and its static peers.
type VXLAN struct {
	Name     string
	VNI      uint32
	Port     uint16
	Underlay string     // underlay interface name (VXLAN parent and source)
	LocalIP  netip.Addr // own underlay address
	MTU      int
	Addr     netip.Prefix // own VTEP IP with the vtepCIDR prefix length
	MAC      net.HardwareAddr
	Peers    []Peer
}

// Route is one route in weft's table.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr // a VTEP address, reached onlink
	Dev string
	Src netip.Addr // the CNI IP; invalid while unknown
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

// MACFor derives the static MAC of a VTEP address: 02:57 + the 4 bytes.
func MACFor(vtep netip.Addr) net.HardwareAddr {
	b := vtep.As4()
	return net.HardwareAddr{0x02, 0x57, b[0], b[1], b[2], b[3]}
}
