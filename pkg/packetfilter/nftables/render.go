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

// family is what differs between weft's two tables, `ip weft` and
// `ip6 weft`: the rules are the same, the addresses are not.
type family struct {
	table nftables.TableFamily
	name  string // nft's family keyword, which is also the address keyword in rules
	key   nftables.SetDatatype
	// saddr and daddr are the offsets of the addresses in the network
	// header, addrLen their length.
	saddr, daddr, addrLen uint32
	nat                   uint32 // NFPROTO_* of the NAT expression
}

var (
	ipv4 = &family{table: nftables.TableFamilyIPv4, name: "ip", key: nftables.TypeIPAddr, saddr: 12, daddr: 16, addrLen: 4, nat: unix.NFPROTO_IPV4}
	ipv6 = &family{table: nftables.TableFamilyIPv6, name: "ip6", key: nftables.TypeIP6Addr, saddr: 8, daddr: 24, addrLen: 16, nat: unix.NFPROTO_IPV6}
	// families is every table weft may own, in the order a transaction
	// writes them.
	families = []*family{ipv4, ipv6}
)

func (f *family) weftTable() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: f.table}
}

// desired is the rendered form of a Model: every table weft must own, each
// with everything it must hold.
type desired struct {
	tables []*desiredTable
}

type desiredTable struct {
	fam    *family
	chains []desiredChain
	sets   map[string][]ival
}

// table returns the desired table of family f, nil when the model renders
// none.
func (d *desired) table(f *family) *desiredTable {
	for _, t := range d.tables {
		if t.fam == f {
			return t
		}
	}
	return nil
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
// IP, the other set changing) see the same list again. The input is the
// model's whole list (both families): one memo per set and family.
type intervalMemo struct {
	in  []netip.Prefix
	out []ival
}

// intervals returns the merged intervals of f's prefixes of in, reusing
// the previous result when in is element-wise equal to the previous input.
// A nil memo just merges. The result is shared: callers never modify it.
func (m *intervalMemo) intervals(f *family, in []netip.Prefix) []ival {
	merge := func() []ival {
		if f == ipv6 {
			return prefixIvals(cidrset.Merge6(in))
		}
		return v4Ivals(cidrset.Intervals(in))
	}
	if m == nil {
		return merge()
	}
	if m.out != nil && slices.Equal(m.in, in) {
		return m.out
	}
	m.in, m.out = slices.Clone(in), merge()
	return m.out
}

// memos holds one memo per family and set.
type memos map[*family]*[2]intervalMemo

// render turns a model into the desired table contents.
func render(m packetfilter.Model) (*desired, error) {
	return renderMemo(m, nil)
}

// renderMemo is render with memos for the sets (nil: none). Table ip weft
// is always rendered, as before IPv6; table ip6 weft only when the model
// holds an IPv6 CIDR.
func renderMemo(m packetfilter.Model, mm memos) (*desired, error) {
	if err := m.CheckCIDRs(); err != nil {
		return nil, err
	}
	if m.CNIIP.IsValid() && !m.CNIIP.Unmap().Is4() {
		return nil, fmt.Errorf("CNI IP %s is not IPv4 (an IPv6 one goes in CNIIP6)", m.CNIIP)
	}
	if m.CNIIP6.IsValid() && (!m.CNIIP6.Is6() || m.CNIIP6.Is4In6()) {
		return nil, fmt.Errorf("CNI IPv6 address %s is not IPv6", m.CNIIP6)
	}
	d := &desired{}
	for _, f := range families {
		if f == ipv6 && !m.HasIPv6() {
			continue
		}
		var local, remote *intervalMemo
		if mm != nil {
			if mm[f] == nil {
				mm[f] = &[2]intervalMemo{}
			}
			local, remote = &mm[f][0], &mm[f][1]
		}
		cni := m.CNIIP.Unmap()
		if f == ipv6 {
			cni = m.CNIIP6
		}
		t, err := renderTable(f, m, cni, local.intervals(f, m.LocalCIDRs), remote.intervals(f, m.RemoteCIDRs))
		if err != nil {
			return nil, err
		}
		d.tables = append(d.tables, t)
	}
	return d, nil
}

// renderTable renders one family's table: the same chains and rules for
// both, with that family's sets and CNI address.
func renderTable(f *family, m packetfilter.Model, cniIP netip.Addr, local, remote []ival) (*desiredTable, error) {
	mss, err := mssAction(m.MSS)
	if err != nil {
		return nil, err
	}
	devices := uniqSorted(m.Devices)
	ports := uniqSorted(m.VXLANPorts)

	d := &desiredTable{fam: f, sets: map[string][]ival{
		SetLocal:  local,
		SetRemote: remote,
	}}

	nat := desiredChain{spec: chainSpec{ChainNAT, nftables.ChainTypeNAT, *nftables.ChainHookPostrouting, prioSrcNATM10, nftables.ChainPolicyAccept}}
	// Self-SNAT: a no-op address rewrite that still binds the connection's
	// source NAT, so no later NAT chain (kube-proxy's or the CNI's
	// masquerade, in any table) applies: in netfilter the first NAT
	// binding of a connection wins. An accept would not stop them.
	nat.rules = append(nat.rules,
		keepSource(f, "keep-local-remote", SetLocal, SetRemote),
		keepSource(f, "keep-remote-local", SetRemote, SetLocal),
	)
	if cniIP.IsValid() {
		// One rule per device rather than an anonymous ifname set:
		// google/nftables marks anonymous set keys big-endian, which makes
		// nft print interface names in them as "".
		for _, dev := range devices {
			nat.rules = append(nat.rules, hostSNAT(f, dev, cniIP))
		}
	}

	// Never a route chain: that type exists only on hook output.
	mssChain := desiredChain{spec: chainSpec{ChainMSS, nftables.ChainTypeFilter, *nftables.ChainHookPostrouting, *nftables.ChainPriorityMangle, nftables.ChainPolicyAccept}}
	mssChain.rules = append(mssChain.rules,
		clampMSS(f, "mss-local-remote", SetLocal, SetRemote, mss),
		clampMSS(f, "mss-remote-local", SetRemote, SetLocal, mss),
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
	if m.HealthCheckPort != 0 {
		input.rules = append(input.rules, acceptUDPPort("accept-health-check", m.HealthCheckPort))
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

// acceptUDPPort accepts one UDP destination port (weftd's health-check
// responder).
func acceptUDPPort(name string, port uint16) desiredRule {
	return desiredRule{
		name: name,
		text: "udp dport " + strconv.Itoa(int(port)) + " accept",
		build: func(*batch) []expr.Any {
			return []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: portKey(port)},
				&expr.Verdict{Kind: expr.VerdictAccept},
			}
		},
	}
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

// keepSource is `ip saddr @from ip daddr @to snat to ip saddr` (ip6 in
// table ip6 weft: the same rule, nft spells it with its family keyword).
func keepSource(f *family, name, from, to string) desiredRule {
	return desiredRule{
		name: name,
		text: fmt.Sprintf("%[1]s saddr @%[2]s %[1]s daddr @%[3]s snat to %[1]s saddr", f.name, from, to),
		build: func(b *batch) []expr.Any {
			ex := b.lookupAddr(f.saddr, from, false)
			ex = append(ex, b.lookupAddr(f.daddr, to, false)...)
			return append(ex,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddr, Len: f.addrLen},
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: f.nat, RegAddrMin: 1},
			)
		},
	}
}

// clampMSS writes the MSS option of SYNs between the sets. `rt mtu`
// works for both families: the kernel subtracts the header sizes of the
// packet's family.
func clampMSS(f *family, name, from, to string, fixed *uint16) desiredRule {
	action := "rt mtu"
	if fixed != nil {
		action = strconv.Itoa(int(*fixed))
	}
	return desiredRule{
		name: name,
		// The SYN test comes first: this chain sees every packet, and
		// two set lookups per packet showed in the data-path benchmark.
		text: fmt.Sprintf("tcp flags syn / syn,rst %[1]s saddr @%[2]s %[1]s daddr @%[3]s tcp option maxseg size set %[4]s", f.name, from, to, action),
		build: func(b *batch) []expr.Any {
			ex := synOnly()
			ex = append(ex, b.lookupAddr(f.saddr, from, false)...)
			ex = append(ex, b.lookupAddr(f.daddr, to, false)...)
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

// hostSNAT gives host-network traffic to remote clusters the CNI IP (of
// the table's family) as source. Matching only remote destinations keeps
// VTEP-to-VTEP traffic on the same device untouched.
func hostSNAT(f *family, dev string, cni netip.Addr) desiredRule {
	return desiredRule{
		name: "host-snat",
		text: fmt.Sprintf("oifname %q %[2]s saddr != @%[3]s %[2]s daddr @%[4]s snat to %[5]s", dev, f.name, SetLocal, SetRemote, cni),
		build: func(b *batch) []expr.Any {
			ex := []expr.Any{
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameKey(dev)},
			}
			ex = append(ex, b.lookupAddr(f.saddr, SetLocal, true)...)
			ex = append(ex, b.lookupAddr(f.daddr, SetRemote, false)...)
			return append(ex,
				&expr.Immediate{Register: 1, Data: cni.AsSlice()},
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: f.nat, RegAddrMin: 1},
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
