package harness

import (
	"fmt"
	"net/netip"
)

// Family is the address plan of a cluster: which families its underlay,
// pods and services have.
type Family string

const (
	// FamilyIPv4 (the zero value): IPv4 only, what every test had before
	// dual stack.
	FamilyIPv4 Family = ""
	// FamilyDual: nodes have IPv4 and IPv6 underlay addresses, pods one
	// address of each family from host-local; weft's VXLAN runs over the
	// IPv4 underlay.
	FamilyDual Family = "dual"
	// FamilyIPv6: IPv6 only, underlay included: weft's VXLAN runs over the
	// IPv6 underlay.
	FamilyIPv6 Family = "ipv6"
)

// ParseFamily accepts ipv4 (or ""), dual and ipv6.
func ParseFamily(s string) (Family, error) {
	switch s {
	case "", "ipv4":
		return FamilyIPv4, nil
	case string(FamilyDual), "dualstack", "dual-stack":
		return FamilyDual, nil
	case string(FamilyIPv6):
		return FamilyIPv6, nil
	}
	return "", fmt.Errorf("address family %q: want ipv4, dual or ipv6", s)
}

// HasIPv4 reports whether the plan gives nodes and pods IPv4 addresses.
func (f Family) HasIPv4() bool { return f != FamilyIPv6 }

// HasIPv6 reports whether the plan gives nodes and pods IPv6 addresses.
func (f Family) HasIPv6() bool { return f == FamilyDual || f == FamilyIPv6 }

func (f Family) String() string {
	switch f {
	case FamilyIPv4:
		return "IPv4"
	case FamilyDual:
		return "dual stack"
	case FamilyIPv6:
		return "IPv6 only"
	}
	return string(f)
}

// The IPv6 underlay: one /64 on the same bridge as the IPv4 one.
var (
	UnderlayPrefix6  = netip.MustParsePrefix("fd00:ff::/64")
	UnderlayNextHop6 = netip.MustParseAddr("fd00:ff::fffe")
)

// Underlay6For is the IPv6 underlay address the harness gives the node
// whose IPv4 plan address is ip4: the IPv4 bits in the low 32 bits of
// UnderlayPrefix6 (192.168.10.11 → fd00:ff::c0a8:a0b), so that IPv6-only
// nodes keep the IPv4 plan's numbering and weft's derived IPv6 VTEP
// addresses stay distinct.
func Underlay6For(ip4 netip.Addr) netip.Addr {
	b := UnderlayPrefix6.Addr().As16()
	v := ip4.As4()
	copy(b[12:], v[:])
	return netip.AddrFrom16(b)
}

// subnet6 is node i's IPv6 pod subnet inside a cluster CIDR of /56 or
// larger: the /64 whose fourth group is i (fd00:1::/56 → fd00:1:0:i::/64).
func subnet6(cluster netip.Prefix, i int) netip.Prefix {
	b := cluster.Masked().Addr().As16()
	b[7] = byte(i)
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}
