package dataplane

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultRouteInterface returns the interface of the IPv4 default route in
// the main table (the one with the lowest metric), its first global IPv4
// address and its MTU. It works in the calling thread's namespace.
func DefaultRouteInterface() (name string, addr netip.Addr, mtu int, err error) {
	return defaultRouteInterface(unix.AF_INET)
}

// DefaultRouteInterface6 is DefaultRouteInterface for an IPv6 underlay:
// the IPv6 default route's interface and its first global IPv6 address
// that is stable (not temporary, deprecated or still in DAD).
func DefaultRouteInterface6() (name string, addr netip.Addr, mtu int, err error) {
	return defaultRouteInterface(unix.AF_INET6)
}

func defaultRouteInterface(fam int) (name string, addr netip.Addr, mtu int, err error) {
	routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return "", netip.Addr{}, 0, fmt.Errorf("list routes: %w", err)
	}
	best, bestPrio := 0, -1
	for _, rt := range routes {
		if rt.Dst != nil && !isZeroNet(rt.Dst) {
			continue
		}
		li := rt.LinkIndex
		if li == 0 && len(rt.MultiPath) > 0 {
			li = rt.MultiPath[0].LinkIndex
		}
		if li == 0 {
			continue
		}
		if bestPrio < 0 || rt.Priority < bestPrio {
			best, bestPrio = li, rt.Priority
		}
	}
	if best == 0 {
		return "", netip.Addr{}, 0, fmt.Errorf("no %s default route", familyName(fam))
	}
	link, err := netlink.LinkByIndex(best)
	if err != nil {
		return "", netip.Addr{}, 0, fmt.Errorf("default route interface %d: %w", best, err)
	}
	name, mtu = link.Attrs().Name, link.Attrs().MTU
	addrs, err := netlink.AddrList(link, fam)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return name, netip.Addr{}, mtu, fmt.Errorf("addresses of %s: %w", name, err)
	}
	// Primary global addresses first: a secondary or link-scoped one is a
	// poor underlay source.
	for _, secondaryOK := range []bool{false, true} {
		for _, a := range addrs {
			if a.Scope != unix.RT_SCOPE_UNIVERSE || (!secondaryOK && a.Flags&unix.IFA_F_SECONDARY != 0) {
				continue
			}
			// A privacy address changes every few hours, one being
			// retired or in DAD cannot be used yet: none is an underlay.
			if a.Flags&(unix.IFA_F_TEMPORARY|unix.IFA_F_DEPRECATED|unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
				continue
			}
			if p, ok := prefixOf(a.IPNet); ok {
				return name, p.Addr(), mtu, nil
			}
		}
	}
	return name, netip.Addr{}, mtu, fmt.Errorf("default route interface %s has no global %s address", name, familyName(fam))
}

// InterfaceForAddr returns the interface that holds addr and its MTU.
func InterfaceForAddr(addr netip.Addr) (name string, mtu int, err error) {
	addr = addr.Unmap()
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return "", 0, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		p, ok := prefixOf(a.IPNet)
		if !ok || p.Addr() != addr {
			continue
		}
		link, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil {
			return "", 0, fmt.Errorf("interface %d holding %s: %w", a.LinkIndex, addr, err)
		}
		return link.Attrs().Name, link.Attrs().MTU, nil
	}
	return "", 0, fmt.Errorf("no interface holds %s", addr)
}
