// Package discovery finds the node's CNI interface: the host interface the
// primary CNI (Calico, flannel, a bridge…) created, and its IPv4 address;
// in a dual-stack or IPv6 cluster also the one holding its IPv6 address,
// chosen by the same rules (Calico and flannel use a second device for
// IPv6, a bridge holds both). It
// never decides once: the daemon calls Choose on every plugin event and every
// netlink link/address event, so an interface that appears late (after a
// reboot, the CNI starts after weft) is found the moment it exists.
package discovery

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Sources of a choice, reported in status as cniInterface.source.
const (
	SourcePinned    = "pinned"
	SourcePlugin    = "plugin"
	SourceWellKnown = "well-known"
	SourceLowest    = "lowest-ifindex"
)

// WellKnown are the CNI interface names of the common primary CNIs, in the
// order they are preferred when several exist.
var WellKnown = []string{"vxlan.calico", "vxlan-v6.calico", "tunl0", "flannel.1", "flannel-v6.1", "cni0", "cbr0", "weave", "kube-bridge", "cilium_host"}

// Iface is a host interface with its addresses (after Filter: those
// inside the pod CIDRs).
type Iface struct {
	Name  string
	Index int
	Kind  string // netlink link type: bridge, vxlan, ipip, veth, dummy…
	Addrs []netip.Addr
	// Unusable are IPv6 addresses the kernel does not use yet or at all:
	// tentative (duplicate address detection runs, 1–2 s after a CNI
	// adds one) or failed. A route cannot take one as its source (the
	// kernel answers EINVAL), so they are never chosen; they are named
	// in the reason for waiting.
	Unusable []netip.Addr
}

// Hints are what the choice depends on besides the interfaces.
type Hints struct {
	Pinned     string       // cniInterface from the config
	GatewayIPs []netip.Addr // pod gateways the plugin reported, newest first
	Exclude    []string     // weft's own devices
}

// Choice is the chosen interface.
type Choice struct {
	Name   string
	IP     netip.Addr
	Source string
}

// Filter keeps the interfaces that can be the CNI interface: an address
// inside podCIDRs (of either family: an IPv4 CIDR holds no IPv6 address),
// not weft's own, not a veth (a veth's host side belongs to one pod and
// goes away with it — ptp puts the pod gateway IP on each one). Only the
// addresses inside podCIDRs are kept, IPv4 first.
func Filter(all []Iface, podCIDRs []netip.Prefix, exclude []string) []Iface {
	ex := map[string]bool{}
	for _, n := range exclude {
		ex[n] = true
	}
	var out []Iface
	for _, in := range all {
		if ex[in.Name] || in.Kind == "veth" {
			continue
		}
		inPods := func(all []netip.Addr) []netip.Addr {
			var keep []netip.Addr
			for _, a := range all {
				a = a.Unmap()
				for _, p := range podCIDRs {
					if p.Contains(a) {
						keep = append(keep, a)
						break
					}
				}
			}
			sort.Slice(keep, func(i, j int) bool { return keep[i].Less(keep[j]) })
			return keep
		}
		in.Addrs, in.Unusable = inPods(in.Addrs), inPods(in.Unusable)
		if len(in.Addrs) > 0 || len(in.Unusable) > 0 {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

// Choose picks the IPv4 CNI interface among candidates (already
// Filtered), in the preference order of DESIGN.md: the pinned name; the
// interface that holds a pod gateway the plugin reported; a well-known
// name; the lowest ifindex. A pinned name that is not (yet) a candidate
// means no choice: an operator who pinned an interface does not want weft
// to guess.
func Choose(cands []Iface, h Hints) (Choice, error) { return choose(cands, h, false) }

// Choose6 is Choose for the IPv6 address (inside the IPv6 pod CIDRs), by
// the same rules among the candidates holding one. It may pick another
// interface than Choose (vxlan-v6.calico next to vxlan.calico).
func Choose6(cands []Iface, h Hints) (Choice, error) { return choose(cands, h, true) }

func choose(cands []Iface, h Hints, v6 bool) (Choice, error) {
	fam := "IPv4"
	if v6 {
		fam = "IPv6"
	}
	// first is c's first address of the family (Filter sorts them).
	first := func(c Iface) (netip.Addr, bool) {
		for _, a := range c.Addrs {
			if a.Is6() == v6 {
				return a, true
			}
		}
		return netip.Addr{}, false
	}
	if h.Pinned != "" {
		for _, c := range cands {
			if a, ok := first(c); ok && c.Name == h.Pinned {
				return Choice{Name: c.Name, IP: a, Source: SourcePinned}, nil
			}
		}
		return Choice{}, fmt.Errorf("pinned CNI interface %q has no %s address inside the pod CIDRs (yet)%s", h.Pinned, fam, unusable(cands, v6))
	}
	for _, gw := range h.GatewayIPs {
		if gw.Is6() != v6 {
			continue
		}
		for _, c := range cands {
			for _, a := range c.Addrs {
				if a == gw {
					return Choice{Name: c.Name, IP: a, Source: SourcePlugin}, nil
				}
			}
		}
	}
	for _, name := range WellKnown {
		for _, c := range cands {
			if a, ok := first(c); ok && c.Name == name {
				return Choice{Name: c.Name, IP: a, Source: SourceWellKnown}, nil
			}
		}
	}
	for _, c := range cands {
		if a, ok := first(c); ok {
			return Choice{Name: c.Name, IP: a, Source: SourceLowest}, nil
		}
	}
	return Choice{}, fmt.Errorf("no host interface has an %s address inside the pod CIDRs%s", fam, unusable(cands, v6))
}

// unusable says which candidate addresses of the family exist but cannot
// be used yet, as the tail of a "not found" message.
func unusable(cands []Iface, v6 bool) string {
	var parts []string
	for _, c := range cands {
		for _, a := range c.Unusable {
			if a.Is6() == v6 {
				parts = append(parts, fmt.Sprintf("%s on %s", a, c.Name))
			}
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("; not usable yet: %s (tentative while duplicate address detection runs, or it failed)", strings.Join(parts, ", "))
}
