// Package cidrset normalises sets of IPv4 (and, with Merge6, IPv6) prefixes: it merges overlapping,
// contained and adjacent prefixes into the smallest equivalent list, and turns
// that list into the half-open intervals an nftables interval set stores.
package cidrset

import (
	"net/netip"
	"slices"
)

// addrSpace is one past the last IPv4 address, as an interval end.
const addrSpace = uint64(1) << 32

// Interval is the half-open IPv4 range [Start, End). End == 1<<32 means the
// range runs to 255.255.255.255 inclusive; in an nft interval set such a
// range has a start element and no end element.
type Interval struct {
	Start uint64
	End   uint64
}

// StartAddr is the first address of the interval.
func (iv Interval) StartAddr() netip.Addr { return u32Addr(uint32(iv.Start)) }

// EndAddr is the first address after the interval. ok is false when the
// interval runs to the end of the address space (there is no such address).
func (iv Interval) EndAddr() (a netip.Addr, ok bool) {
	if iv.End >= addrSpace {
		return netip.Addr{}, false
	}
	return u32Addr(uint32(iv.End)), true
}

// Merge returns the smallest list of IPv4 prefixes that covers exactly the
// addresses of in: host bits are masked, contained prefixes dropped and
// adjacent ranges merged (siblings into their parent, repeatedly). The
// result is sorted by address and does not depend on the order of in.
// Invalid and non-IPv4 prefixes are ignored; IPv4-mapped IPv6 prefixes
// (::ffff:a.b.c.d/n with n >= 96) are treated as their IPv4 equivalent.
func Merge(in []netip.Prefix) []netip.Prefix {
	ranges := union(in)
	out := make([]netip.Prefix, 0, len(ranges))
	for _, r := range ranges {
		out = appendPrefixes(out, r.Start, r.End)
	}
	return out
}

// Intervals returns one interval per prefix of Merge(in), sorted and
// non-overlapping (two intervals may touch: the kernel accepts an end and a
// start element at the same key). Keeping one interval per prefix makes
// `nft list set` print the merged CIDRs rather than address ranges.
func Intervals(in []netip.Prefix) []Interval {
	merged := Merge(in)
	out := make([]Interval, 0, len(merged))
	for _, p := range merged {
		out = append(out, prefixInterval(p))
	}
	return out
}

// union returns the sorted, disjoint, non-touching ranges covering in.
func union(in []netip.Prefix) []Interval {
	ivs := make([]Interval, 0, len(in))
	for _, p := range in {
		p, ok := normalise(p)
		if !ok {
			continue
		}
		ivs = append(ivs, prefixInterval(p))
	}
	slices.SortFunc(ivs, func(a, b Interval) int {
		switch {
		case a.Start < b.Start:
			return -1
		case a.Start > b.Start:
			return 1
		}
		return 0
	})
	out := ivs[:0]
	for _, iv := range ivs {
		if n := len(out); n > 0 && iv.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, iv.End)
			continue
		}
		out = append(out, iv)
	}
	return out
}

// appendPrefixes appends the minimal aligned decomposition of [start, end):
// at each step the largest block that is aligned at start and fits.
func appendPrefixes(out []netip.Prefix, start, end uint64) []netip.Prefix {
	for start < end {
		size := uint64(1) << 32
		if start != 0 {
			size = start & -start // largest power of two start is aligned to
		}
		for size > end-start {
			size >>= 1
		}
		bits := 32
		for s := size; s > 1; s >>= 1 {
			bits--
		}
		out = append(out, netip.PrefixFrom(u32Addr(uint32(start)), bits))
		start += size
	}
	return out
}

func normalise(p netip.Prefix) (netip.Prefix, bool) {
	if !p.IsValid() {
		return netip.Prefix{}, false
	}
	a := p.Addr()
	if a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, false
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	} else if !a.Is4() {
		return netip.Prefix{}, false
	}
	return p.Masked(), true
}

func prefixInterval(p netip.Prefix) Interval {
	start := uint64(addrU32(p.Addr()))
	return Interval{Start: start, End: start + uint64(1)<<(32-p.Bits())}
}

func addrU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func u32Addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Merge6 is Merge for IPv6: the smallest sorted list of IPv6 prefixes
// covering exactly the addresses of in. IPv4 and IPv4-mapped prefixes and
// invalid ones are ignored (Merge takes those).
//
// It merges prefixes rather than address ranges, which needs no 128-bit
// arithmetic: sorted by address (shorter first on a tie), a prefix inside
// the last kept one is dropped, and two kept siblings become their parent,
// repeatedly — the minimal prefix cover of a union is unique, so this is
// the same list Merge's range decomposition would give.
func Merge6(in []netip.Prefix) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		if p.IsValid() && p.Addr().Is6() && !p.Addr().Is4In6() {
			ps = append(ps, p.Masked())
		}
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	out := ps[:0]
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Overlaps(p) {
			continue // sorted: the kept one starts first, so it contains p
		}
		out = append(out, p)
		for n := len(out); n >= 2; n = len(out) {
			a, b := out[n-2], out[n-1]
			if a.Bits() != b.Bits() || a.Bits() == 0 {
				break
			}
			parent := netip.PrefixFrom(a.Addr(), a.Bits()-1).Masked()
			if parent.Addr() != a.Addr() || !parent.Contains(b.Addr()) {
				break
			}
			out = append(out[:n-2], parent)
		}
	}
	return slices.Clip(out)
}
