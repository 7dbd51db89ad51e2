package config

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// ownerKind says who announces a CIDR. Overlaps inside one owner are
// redundancy (a cluster announcing its pod CIDR and a more specific subnet,
// two lists concatenated) and are merged; overlaps between owners make a
// route ambiguous and are errors.
type ownerKind uint8

const (
	ownerLocalCluster ownerKind = iota
	ownerRemote
	ownerVTEP
)

// cidrOwner identifies one owner: the local cluster, one entry of remotes
// (by index: two entries with the same id are still two owners), or one
// VTEP range (by field).
type cidrOwner struct {
	kind  ownerKind
	index int
	id    string // remote id, or the VXLAN field ("vxlan", "cableVxlan")
}

var ownerLocal = cidrOwner{kind: ownerLocalCluster}

func (o cidrOwner) String() string {
	switch o.kind {
	case ownerLocalCluster:
		return "the local cluster"
	case ownerRemote:
		if o.id == "" {
			return fmt.Sprintf("remotes[%d]", o.index)
		}
		return fmt.Sprintf("remote %q", o.id)
	}
	return o.id + ".vtepCIDR"
}

// cidrEntry is one parsed CIDR of the file, small and pointer-free so
// that 20,000 of them cost one allocation and nothing to the GC: the
// address is a 128-bit integer (cheap to sort and to test for
// containment). The families never overlap: an IPv4 CIDR is kept as its
// IPv4-mapped form (bits + 96) with v6 false, and containment and the sort
// separate the families first, so ::/0 does not contain 10.0.0.0/8.
type cidrEntry struct {
	hi, lo uint64
	bits   uint8 // 0..128, IPv4 counted from the mapped form
	v6     bool
	list   int32 // index into cidrList.lists, which knows the owner
	index  int32 // position in that list; -1 for a single field
}

func newEntry(pfx netip.Prefix, list, index int32) cidrEntry {
	a := pfx.Addr()
	bits := pfx.Bits()
	v6 := a.Is6()
	if !v6 {
		bits += 96
	}
	b := a.As16() // IPv4-mapped for IPv4
	return cidrEntry{
		hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:]),
		bits: uint8(bits), v6: v6, list: list, index: index,
	}
}

func (e *cidrEntry) prefix() netip.Prefix {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], e.hi)
	binary.BigEndian.PutUint64(b[8:], e.lo)
	a := netip.AddrFrom16(b)
	if !e.v6 {
		return netip.PrefixFrom(a.Unmap(), int(e.bits)-96)
	}
	return netip.PrefixFrom(a, int(e.bits))
}

type cidrListRef struct {
	path  string
	owner cidrOwner
	dst   *[]netip.Prefix // where the kept entries go; nil for VTEP ranges
}

// cidrList collects every CIDR of a configuration in file order.
type cidrList struct {
	fam     families // which families parse accepts
	lists   []cidrListRef
	entries []cidrEntry
	dropped []bool // per entry: merged into another entry of its owner
	// steps counts the sweep's comparisons and stack moves, so a test can
	// show its growth is n log n without timing it.
	steps int
}

func (l *cidrList) path(e *cidrEntry) string {
	p := l.lists[e.list].path
	if e.index < 0 {
		return p
	}
	return fmt.Sprintf("%s[%d]", p, e.index)
}

func (l *cidrList) owner(e *cidrEntry) cidrOwner { return l.lists[e.list].owner }

// grow makes room for n more entries, so that parsing 20,000 CIDRs does not
// copy the slice over and over.
func (l *cidrList) grow(n int) { l.entries = slices.Grow(l.entries, n) }

// parse parses the CIDR list at path; the entries that survive the merge
// are appended to *dst by fill.
func (l *cidrList) parse(errs *errorList, owner cidrOwner, path string, in []string, dst *[]netip.Prefix) {
	list := int32(len(l.lists))
	l.lists = append(l.lists, cidrListRef{path: path, owner: owner, dst: dst})
	for i, s := range in {
		pfx, reason := cidrProblem(s, l.fam)
		if reason != "" {
			// The path is built only for errors: Sprintf for each of
			// 20,000 entries would be most of the validation's cost.
			errs.add(fmt.Sprintf("%s[%d]", path, i), reason)
			continue
		}
		l.entries = append(l.entries, newEntry(pfx, list, int32(i)))
	}
}

// add records a single-CIDR field.
func (l *cidrList) add(owner cidrOwner, path string, pfx netip.Prefix) {
	l.lists = append(l.lists, cidrListRef{path: path, owner: owner})
	l.entries = append(l.entries, newEntry(pfx, int32(len(l.lists)-1), -1))
}

func (e *cidrEntry) contains(o *cidrEntry) bool {
	if e.v6 != o.v6 || e.bits > o.bits {
		return false
	}
	hiMask, loMask := masks(e.bits)
	return o.hi&hiMask == e.hi && o.lo&loMask == e.lo
}

// masks is the 128-bit netmask of a prefix length, as two halves.
func masks(bits uint8) (hi, lo uint64) {
	switch {
	case bits == 0:
		return 0, 0
	case bits <= 64:
		return ^uint64(0) << (64 - bits), 0
	case bits == 128:
		return ^uint64(0), ^uint64(0)
	}
	return ^uint64(0), ^uint64(0) << (128 - bits)
}

// sweep finds every overlap in O(n log n): sort by address, then by prefix
// length, then by file order, and walk with a stack of the prefixes that
// contain the current one. Two prefixes of one family either are disjoint or one
// contains the other, so the top of the stack, after popping those that do
// not contain the current entry, is its innermost container; any overlap
// with an outer one is also an overlap of that container, found when it was
// visited. An entry inside another of the same owner is merged into it (a
// warning); inside one of another owner, the later of the two in the file
// gets an error naming the other. Warnings come back in file order.
func (l *cidrList) sweep(errs *errorList) []FieldError {
	n := len(l.entries)
	l.dropped = make([]bool, n)
	order := make([]int32, n)
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		l.steps++
		ea, eb := &l.entries[a], &l.entries[b]
		switch {
		case ea.v6 != eb.v6:
			if ea.v6 {
				return 1
			}
			return -1
		case ea.hi != eb.hi:
			return cmp.Compare(ea.hi, eb.hi)
		case ea.lo != eb.lo:
			return cmp.Compare(ea.lo, eb.lo)
		case ea.bits != eb.bits:
			return int(ea.bits) - int(eb.bits)
		}
		return int(a - b)
	})

	type finding struct {
		at     int32 // entry the finding is reported on
		reason string
	}
	var errors, warnings []finding
	reported := map[int32]bool{} // one error per field is enough to act on
	// kept is, per entry, the entry of the same owner it was merged into
	// (itself when kept), so a warning names what is left in force.
	kept := make([]int32, n)
	stack := make([]int32, 0, 32)
	for _, i := range order {
		e := &l.entries[i]
		kept[i] = i
		for len(stack) > 0 && !l.entries[stack[len(stack)-1]].contains(e) {
			stack = stack[:len(stack)-1]
			l.steps++
		}
		l.steps++
		if len(stack) > 0 {
			ci := stack[len(stack)-1]
			c := &l.entries[ci]
			if l.owner(c) == l.owner(e) {
				k := kept[ci]
				kept[i] = k
				l.dropped[i] = true
				warnings = append(warnings, finding{i, l.mergeReason(e, &l.entries[k])})
			} else {
				at, other := i, ci
				if other > at {
					at, other = other, at
				}
				if !reported[at] {
					reported[at] = true
					errors = append(errors, finding{at, l.overlapReason(&l.entries[at], &l.entries[other], e.prefix())})
				}
			}
		}
		stack = append(stack, i)
	}
	byOrder := func(a, b finding) int { return int(a.at - b.at) }
	slices.SortFunc(errors, byOrder)
	for _, f := range errors {
		errs.add(l.path(&l.entries[f.at]), f.reason)
	}
	slices.SortFunc(warnings, byOrder)
	var out []FieldError
	for _, f := range warnings {
		out = append(out, FieldError{Path: l.path(&l.entries[f.at]), Reason: f.reason})
	}
	return out
}

func (l *cidrList) mergeReason(e, into *cidrEntry) string {
	if e.hi == into.hi && e.lo == into.lo && e.bits == into.bits && e.v6 == into.v6 {
		return fmt.Sprintf("%q repeats %s: merged", e.prefix(), l.path(into))
	}
	return fmt.Sprintf("%q is inside %s %q of the same %s: merged into it (no route of its own)",
		e.prefix(), l.path(into), into.prefix(), ownerNoun(l.owner(e)))
}

func ownerNoun(o cidrOwner) string {
	if o.kind == ownerLocalCluster {
		return "local cluster"
	}
	return strings.TrimPrefix(o.String(), "the ")
}

// overlapReason explains an overlap between two owners; common is the
// smaller of the two prefixes, the addresses both claim.
func (l *cidrList) overlapReason(e, other *cidrEntry, common netip.Prefix) string {
	eo, oo := l.owner(e), l.owner(other)
	var why string
	switch {
	case eo.kind == ownerVTEP || oo.kind == ownerVTEP:
		why = "a VTEP range must not overlap pod, service or other VTEP CIDRs"
	case eo.kind == ownerLocalCluster || oo.kind == ownerLocalCluster:
		remote := eo
		if remote.kind == ownerLocalCluster {
			remote = oo
		}
		why = fmt.Sprintf("%s would be both local and routed to %s: the route would be ambiguous", common, remote)
	default:
		why = fmt.Sprintf("%s would be routed to both %s and %s: the route would be ambiguous", common, oo, eo)
	}
	return fmt.Sprintf("%q overlaps %s %q (%s)", e.prefix(), l.path(other), other.prefix(), why)
}

// fill appends every entry that was not merged away to its list, in file
// order.
func (l *cidrList) fill() {
	kept := make([]int, len(l.lists))
	for i := range l.entries {
		if !l.dropped[i] {
			kept[l.entries[i].list]++
		}
	}
	for i, ref := range l.lists {
		if ref.dst != nil && kept[i] > 0 {
			*ref.dst = make([]netip.Prefix, 0, kept[i])
		}
	}
	for i := range l.entries {
		e := &l.entries[i]
		if dst := l.lists[e.list].dst; dst != nil && !l.dropped[i] {
			*dst = append(*dst, e.prefix())
		}
	}
}
