package nftbackend

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"

	"github.com/google/nftables"

	"github.com/weft-net/weft/pkg/cidrset"
)

// u128 is an address as a number (IPv4 in the low 32 bits). Intervals hold
// no netip.Addr: 20,000 of them are diffed on every Apply, and plain
// integers compare faster and give the garbage collector nothing to scan.
type u128 struct{ hi, lo uint64 }

func (a u128) compare(b u128) int {
	switch {
	case a.hi < b.hi:
		return -1
	case a.hi > b.hi:
		return 1
	case a.lo < b.lo:
		return -1
	case a.lo > b.lo:
		return 1
	}
	return 0
}

func addrU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

// key is a's bytes as an element key of the family's set.
func (a u128) key(v6 bool) []byte {
	if !v6 {
		return binary.BigEndian.AppendUint32(make([]byte, 0, 4), uint32(a.lo))
	}
	b := make([]byte, 0, 16)
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(b, a.hi), a.lo)
}

func (a u128) addr(v6 bool) netip.Addr {
	if !v6 {
		return netip.AddrFrom4([4]byte(a.key(false)))
	}
	return netip.AddrFrom16([16]byte(a.key(true)))
}

// plusPow2 is a + 2^n and whether that overflows the family's space.
func (a u128) plusPow2(n int, v6 bool) (u128, bool) {
	if !v6 {
		s := a.lo + 1<<n
		return u128{lo: s}, s >= 1<<32
	}
	var add u128
	if n >= 64 {
		add.hi = 1 << (n - 64)
	} else {
		add.lo = 1 << n
	}
	lo, carry := bits.Add64(a.lo, add.lo, 0)
	hi, over := bits.Add64(a.hi, add.hi, carry)
	return u128{hi: hi, lo: lo}, over != 0
}

// ival is one interval of an interval set: [start, end), or from start to
// the family's last address when open (such an interval has no end
// element in the kernel).
type ival struct {
	start, end u128
	open       bool
	v6         bool
}

func compareIval(a, b ival) int {
	if c := a.start.compare(b.start); c != 0 {
		return c
	}
	switch {
	case a.open == b.open && a.open:
		return 0
	case a.open:
		return 1
	case b.open:
		return -1
	}
	return a.end.compare(b.end)
}

// prefixIvals turns merged prefixes into one interval each.
func prefixIvals(ps []netip.Prefix) []ival {
	out := make([]ival, len(ps))
	for i, p := range ps {
		v6 := p.Addr().Is6()
		start := addrU128(p.Addr())
		end, open := start.plusPow2(p.Addr().BitLen()-p.Bits(), v6)
		if open {
			end = u128{}
		}
		out[i] = ival{start: start, end: end, open: open, v6: v6}
	}
	return out
}

// v4Ivals converts IPv4 intervals (cidrset.Intervals computes them
// without a netip.Addr in sight, the fast path for the common family).
func v4Ivals(in []cidrset.Interval) []ival {
	out := make([]ival, len(in))
	for i, iv := range in {
		out[i] = ival{start: u128{lo: iv.Start}, end: u128{lo: iv.End}}
		if iv.End >= 1<<32 {
			out[i].end, out[i].open = u128{}, true
		}
	}
	return out
}

// prefix is the CIDR iv spans, if it spans exactly one.
func (iv ival) prefix() (netip.Prefix, bool) {
	bitLen := 32
	if iv.v6 {
		bitLen = 128
	}
	for host := bitLen; host >= 0; host-- {
		p := netip.PrefixFrom(iv.start.addr(iv.v6), bitLen-host)
		if p.Masked().Addr() != p.Addr() {
			continue
		}
		if end, open := iv.start.plusPow2(host, iv.v6); open == iv.open && (open || end == iv.end) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// intervalElements turns intervals into nft interval-set elements: a start
// element and, unless the interval runs to the family's last address, an
// end element.
func intervalElements(ivs []ival) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(ivs))
	for _, iv := range ivs {
		out = append(out, nftables.SetElement{Key: iv.start.key(iv.v6)})
		if !iv.open {
			out = append(out, nftables.SetElement{Key: iv.end.key(iv.v6), IntervalEnd: true})
		}
	}
	return out
}

// elementsIntervals reads f's interval-set elements back into intervals.
// The kernel dumps them in any order and, for sets nft filled, with an
// extra end element at the zero address; an end element with no open start
// is ignored.
func elementsIntervals(f *family, elems []nftables.SetElement) []ival {
	type point struct {
		key u128
		end bool
	}
	v6 := f == ipv6
	pts := make([]point, 0, len(elems))
	for _, e := range elems {
		if len(e.Key) != int(f.addrLen) {
			continue
		}
		var k u128
		if v6 {
			k = u128{hi: binary.BigEndian.Uint64(e.Key[:8]), lo: binary.BigEndian.Uint64(e.Key[8:])}
		} else {
			k = u128{lo: uint64(binary.BigEndian.Uint32(e.Key))}
		}
		pts = append(pts, point{k, e.IntervalEnd})
	}
	// At one key an end sorts before a start: touching intervals.
	slices.SortFunc(pts, func(a, b point) int {
		if c := a.key.compare(b.key); c != 0 {
			return c
		}
		if a.end == b.end {
			return 0
		}
		if a.end {
			return -1
		}
		return 1
	})
	var out []ival
	open, start := false, u128{}
	for _, p := range pts {
		switch {
		case !p.end && !open:
			open, start = true, p.key
		case !p.end && open:
			// Two starts in a row: the first runs up to the second.
			out = append(out, ival{start: start, end: p.key, v6: v6})
			start = p.key
		case p.end && open:
			out = append(out, ival{start: start, end: p.key, v6: v6})
			open = false
		}
	}
	if open {
		out = append(out, ival{start: start, open: true, v6: v6})
	}
	return out
}
