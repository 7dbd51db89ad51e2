package nftbackend

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/pkg/cidrset"
	"github.com/weft-net/weft/pkg/packetfilter"
)

// Names of weft's nftables objects. The table is owned entirely by weft.
const (
	TableName     = "weft"
	SetLocal      = "local"
	SetRemote     = "remote"
	ChainNAT      = "nat-postrouting"
	ChainMSS      = "mss"
	ChainInput    = "input"
	ChainForward  = "forward"
	tagPrefix     = "weft:"
	prioSrcNATM10 = 90 // srcnat - 10: before kube-proxy and iptables-nft masquerades
)

// desired is the rendered form of a Model: everything the table must hold.
type desired struct {
	chains []desiredChain
	sets   map[string][]cidrset.Interval
}

type desiredChain struct {
	spec  chainSpec
	rules []desiredRule
}

// chainSpec is what identifies a base chain's behaviour in the kernel.
type chainSpec struct {
	name     string
	typ      nftables.ChainType
	hook     nftables.ChainHook
	priority nftables.ChainPriority
	policy   nftables.ChainPolicy
}

// desiredRule is one rule. Its tag (stored as the rule's comment) carries a
// hash of text, the nft rendering of the rule with every value it depends
// on, so comparing tags compares content.
type desiredRule struct {
	name  string
	text  string
	build func(b *batch) []expr.Any
}

func (r desiredRule) tag() string {
	sum := sha256.Sum256([]byte(r.text))
	return tagPrefix + r.name + ":" + hex.EncodeToString(sum[:6])
}

// intervalMemo remembers the intervals of the last CIDR list it merged:
// merging 10,000 CIDRs costs about a millisecond, comparing them with the
// previous list a few microseconds, and most Applies (resyncs, a changed CNI
// IP, the other set changing) see the same list again.
type intervalMemo struct {
	in  []netip.Prefix
	out []cidrset.Interval
}

// intervals returns cidrset.Intervals(in), reusing the previous result when
// in is element-wise equal to the previous input. A nil memo just merges.
// The result is shared: callers never modify it.
func (m *intervalMemo) intervals(in []netip.Prefix) []cidrset.Interval {
	if m == nil {
		return cidrset.Intervals(in)
	}
	if m.out != nil && slices.Equal(m.in, in) {
		return m.out
	}
	m.in, m.out = slices.Clone(in), cidrset.Intervals(in)
	return m.out
}

// render turns a model into the desired table contents.
func render(m packetfilter.Model) (*desired, error) {
	return renderMemo(m, nil, nil)
}

// renderMemo is render with memos for the local and remote sets (nil: none).
func renderMemo(m packetfilter.Model, local, remote *intervalMemo) (*desired, error) {
	mss, err := mssAction(m.MSS)
	if err != nil {
		return nil, err
	}
	devices := uniqSorted(m.Devices)
	ports := uniqSorted(m.VXLANPorts)

	d := &desired{sets: map[string][]cidrset.Interval{
		SetLocal:  local.intervals(m.LocalCIDRs),
		SetRemote: remote.intervals(m.RemoteCIDRs),
	}}

	nat := desiredChain{spec: chainSpec{ChainNAT, nftables.ChainTypeNAT, *nftables.ChainHookPostrouting, prioSrcNATM10, nftables.ChainPolicyAccept}}
	// Self-SNAT: a no-op address rewrite that still binds the connection's
	// source NAT, so no later NAT chain (kube-proxy's or the CNI's
	// masquerade, in any table) applies: in netfilter the first NAT
	// binding of a connection wins. An accept would not stop them.
	nat.rules = append(nat.rules,
		keepSource("keep-local-remote", SetLocal, SetRemote),
		keepSource("keep-remote-local", SetRemote, SetLocal),
	)
	if m.CNIIP.Is4() {
		// One rule per device rather than an anonymous ifname set:
		// google/nftables marks anonymous set keys big-endian, which makes
		// nft print interface names in them as "".
		for _, dev := range devices {
			nat.rules = append(nat.rules, hostSNAT(dev, m.CNIIP))
		}
	}

	// Never a route chain: that type exists only on hook output.
	mssChain := desiredChain{spec: chainSpec{ChainMSS, nftables.ChainTypeFilter, *nftables.ChainHookPostrouting, *nftables.ChainPriorityMangle, nftables.ChainPolicyAccept}}
	mssChain.rules = append(mssChain.rules,
		clampMSS("mss-local-remote", SetLocal, SetRemote, mss),
		clampMSS("mss-remote-local", SetRemote, SetLocal, mss),
	)

	input := desiredChain{spec: chainSpec{ChainInput, nftables.ChainTypeFilter, *nftables.ChainHookInput, *nftables.ChainPriorityFilter, nftables.ChainPolicyAccept}}
	forward := desiredChain{spec: chainSpec{ChainForward, nftables.ChainTypeFilter, *nftables.ChainHookForward, *nftables.ChainPriorityFilter, nftables.ChainPolicyAccept}}
	if len(ports) > 0 {
		input.rules = append(input.rules, desiredRule{
			name: "accept-vxlan",
			text: "udp dport " + portsText(ports) + " accept",
			build: func(b *batch) []expr.Any {
				ex := []expr.Any{
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				}
				ex = append(ex, b.matchPorts(ports)...)
				return append(ex, &expr.Verdict{Kind: expr.VerdictAccept})
			},
		})
	}
	for _, dev := range devices {
		input.rules = append(input.rules, acceptIfname("accept-iif", expr.MetaKeyIIFNAME, dev))
	}
	for _, dev := range devices {
		forward.rules = append(forward.rules, acceptIfname("accept-iif", expr.MetaKeyIIFNAME, dev))
	}
	for _, dev := range devices {
		forward.rules = append(forward.rules, acceptIfname("accept-oif", expr.MetaKeyOIFNAME, dev))
	}
	d.chains = []desiredChain{nat, mssChain, input, forward}
	return d, nil
}

// mssValue is nil for pmtu mode (clamp to the route MTU).
func mssAction(m packetfilter.MSS) (*uint16, error) {
	switch m.Mode {
	case "", packetfilter.MSSPMTU:
		return nil, nil
	case packetfilter.MSSFixed:
		if m.Value == 0 {
			return nil, fmt.Errorf("mss mode %q needs a value", m.Mode)
		}
		v := m.Value
		return &v, nil
	default:
		return nil, fmt.Errorf("unknown mss mode %q", m.Mode)
	}
}

func keepSource(name, from, to string) desiredRule {
	return desiredRule{
		name: name,
		text: fmt.Sprintf("ip saddr @%s ip daddr @%s snat to ip saddr", from, to),
		build: func(b *batch) []expr.Any {
			ex := b.lookupAddr(12, from, false)
			ex = append(ex, b.lookupAddr(16, to, false)...)
			return append(ex,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
			)
		},
	}
}

func clampMSS(name, from, to string, fixed *uint16) desiredRule {
	action := "rt mtu"
	if fixed != nil {
		action = strconv.Itoa(int(*fixed))
	}
	return desiredRule{
		name: name,
		// The SYN test comes first: this chain sees every packet, and
		// two set lookups per packet showed in the data-path benchmark.
		text: fmt.Sprintf("tcp flags syn / syn,rst ip saddr @%s ip daddr @%s tcp option maxseg size set %s", from, to, action),
		build: func(b *batch) []expr.Any {
			ex := synOnly()
			ex = append(ex, b.lookupAddr(12, from, false)...)
			ex = append(ex, b.lookupAddr(16, to, false)...)
			return append(ex, mssWrite(fixed)...)
		},
	}
}

// synOnly matches `tcp flags syn / syn,rst`.
func synOnly() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x06}, Xor: []byte{0x00}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
	}
}

// mssWrite is `tcp option maxseg size set rt mtu` (or a fixed value): the
// same bytecode nft generates.
func mssWrite(fixed *uint16) []expr.Any {
	write := &expr.Exthdr{SourceRegister: 1, Type: 2, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt}
	if fixed != nil {
		return []expr.Any{
			&expr.Immediate{Register: 1, Data: binary.BigEndian.AppendUint16(nil, *fixed)},
			write,
		}
	}
	return []expr.Any{
		&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 2, Size: 2},
		write,
	}
}

func acceptIfname(name string, key expr.MetaKey, dev string) desiredRule {
	kw := "iifname"
	if key == expr.MetaKeyOIFNAME {
		kw = "oifname"
	}
	return desiredRule{
		name: name,
		text: kw + " " + strconv.Quote(dev) + " accept",
		build: func(*batch) []expr.Any {
			return []expr.Any{
				&expr.Meta{Key: key, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameKey(dev)},
				&expr.Verdict{Kind: expr.VerdictAccept},
			}
		},
	}
}

// hostSNAT gives host-network traffic to remote clusters the CNI IP as
// source. Matching only remote destinations keeps VTEP-to-VTEP traffic on
// the same device untouched.
func hostSNAT(dev string, cni netip.Addr) desiredRule {
	return desiredRule{
		name: "host-snat",
		text: fmt.Sprintf("oifname %q ip saddr != @%s ip daddr @%s snat to %s", dev, SetLocal, SetRemote, cni),
		build: func(b *batch) []expr.Any {
			ex := []expr.Any{
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameKey(dev)},
			}
			ex = append(ex, b.lookupAddr(12, SetLocal, true)...)
			ex = append(ex, b.lookupAddr(16, SetRemote, false)...)
			a := cni.As4()
			return append(ex,
				&expr.Immediate{Register: 1, Data: a[:]},
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
			)
		},
	}
}

func ifnameKey(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func portsText(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	if len(s) == 1 {
		return s[0]
	}
	return "{ " + strings.Join(s, ", ") + " }"
}

func uniqSorted[T string | uint16](in []T) []T {
	out := slices.Clone(in)
	slices.Sort(out)
	out = slices.Compact(out)
	var zero T
	return slices.DeleteFunc(out, func(v T) bool { return v == zero })
}

// ruleUserData stores the tag as an nft comment, so `nft list` shows which
// weft rule a line is.
func ruleUserData(tag string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, tag)
}

func ruleTag(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

// intervalElements turns intervals into nft interval-set elements: a start
// element and, unless the interval runs to 255.255.255.255, an end element.
func intervalElements(ivs []cidrset.Interval) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(ivs))
	for _, iv := range ivs {
		s := iv.StartAddr().As4()
		out = append(out, nftables.SetElement{Key: s[:]})
		if e, ok := iv.EndAddr(); ok {
			b := e.As4()
			out = append(out, nftables.SetElement{Key: b[:], IntervalEnd: true})
		}
	}
	return out
}

// elementsIntervals reads interval-set elements back into intervals. The
// kernel dumps them in any order and, for sets nft filled, with an extra end
// element at 0.0.0.0; an end element with no open start is ignored.
func elementsIntervals(elems []nftables.SetElement) []cidrset.Interval {
	type point struct {
		key uint64
		end bool
	}
	pts := make([]point, 0, len(elems))
	for _, e := range elems {
		if len(e.Key) != 4 {
			continue
		}
		pts = append(pts, point{uint64(binary.BigEndian.Uint32(e.Key)), e.IntervalEnd})
	}
	// At one key an end sorts before a start: touching intervals.
	slices.SortFunc(pts, func(a, b point) int {
		if a.key != b.key {
			if a.key < b.key {
				return -1
			}
			return 1
		}
		if a.end == b.end {
			return 0
		}
		if a.end {
			return -1
		}
		return 1
	})
	var out []cidrset.Interval
	open, start := false, uint64(0)
	for _, p := range pts {
		switch {
		case !p.end && !open:
			open, start = true, p.key
		case !p.end && open:
			// Two starts in a row: the first runs up to the second.
			out = append(out, cidrset.Interval{Start: start, End: p.key})
			start = p.key
		case p.end && open:
			out = append(out, cidrset.Interval{Start: start, End: p.key})
			open = false
		}
	}
	if open {
		out = append(out, cidrset.Interval{Start: start, End: 1 << 32})
	}
	return out
}
