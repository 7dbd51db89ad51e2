package iptbackend

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"

	"github.com/weft-net/weft/pkg/packetfilter"
)

// Names weft owns. They are part of the contract (weftd cleanup and
// operators look for them).
const (
	SetLocal  = "weft-local"
	SetRemote = "weft-remote"
	// The IPv6 sets (hash:net family inet6): ipsets are per namespace, not
	// per family, so they need names of their own.
	SetLocal6  = "weft-local6"
	SetRemote6 = "weft-remote6"

	ChainPostrouting = "WEFT-POSTROUTING"
	ChainMSS         = "WEFT-MSS"
	ChainInput       = "WEFT-INPUT"
	ChainForward     = "WEFT-FORWARD"

	// jumpComment marks weft's jump rules in the built-in chains.
	jumpComment = "weft"
)

// family is what differs between weft's iptables and ip6tables rules.
type family struct {
	name string // "iptables" or "ip6tables": the binaries' prefix
	// setLocal and setRemote are the family's ipsets.
	setLocal, setRemote string
	// everything is the family's whole address space, NETMAP's identity
	// target.
	everything string
	ipv6       bool
}

var (
	ipv4 = &family{name: "iptables", setLocal: SetLocal, setRemote: SetRemote, everything: "0.0.0.0/0"}
	ipv6 = &family{name: "ip6tables", setLocal: SetLocal6, setRemote: SetRemote6, everything: "::/0", ipv6: true}
	// families in the order Apply writes them.
	families = []*family{ipv4, ipv6}
)

// hook is one of weft's chains and the built-in chain that jumps to it.
type hook struct {
	table   string
	builtin string
	chain   string
}

// hooks in the order tables are written; order within a table is the
// order of the chains' declarations.
var hooks = []hook{
	{"nat", "POSTROUTING", ChainPostrouting},
	{"mangle", "POSTROUTING", ChainMSS},
	{"filter", "INPUT", ChainInput},
	{"filter", "FORWARD", ChainForward},
}

var tableOrder = []string{"nat", "mangle", "filter"}

// jumpSpec is the canonical (iptables-save) form of weft's jump rule.
func jumpSpec(chain string) string {
	return "-m comment --comment " + jumpComment + " -j " + chain
}

// ownChain reports whether name is one of weft's chains.
func ownChain(name string) bool {
	for _, h := range hooks {
		if h.chain == name {
			return true
		}
	}
	return false
}

var ifnameRe = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,15}$`)

// render turns the model into the bodies of weft's iptables (IPv4) chains.
func render(m packetfilter.Model) (map[string][]string, error) {
	return renderFamily(m, ipv4)
}

// renderFamily turns the model into the bodies of weft's chains of family
// f, each rule in the exact form iptables-save (ip6tables-save) prints it,
// so the save output can be compared with it as text. The rules are the
// same for both families; the sets, NETMAP's identity and the CNI address
// are the family's.
func renderFamily(m packetfilter.Model, f *family) (map[string][]string, error) {
	devs := slices.Clone(m.Devices)
	slices.Sort(devs)
	devs = slices.Compact(devs)
	for _, d := range devs {
		if !ifnameRe.MatchString(d) {
			return nil, fmt.Errorf("device name %q is not a valid interface name", d)
		}
	}
	ports := slices.Clone(m.VXLANPorts)
	slices.Sort(ports)
	ports = slices.Compact(ports)

	var (
		localSrc  = "-m set --match-set " + f.setLocal + " src"
		localDst  = "-m set --match-set " + f.setLocal + " dst"
		remoteSrc = "-m set --match-set " + f.setRemote + " src"
		remoteDst = "-m set --match-set " + f.setRemote + " dst"
	)

	// Local↔remote: an identity NAT binding at position 1. NETMAP to
	// 0.0.0.0/0 keeps every address bit (the netmask is empty), and a NAT
	// binding — unlike a plain ACCEPT, which only ends this chain — keeps a
	// later masquerade out, both later in this chain (CNI, kube-proxy
	// rules) and in another nft table that runs after it at the same hook:
	// in netfilter the first source NAT of a connection wins. The nftables
	// backend does the same with `snat to ip saddr`.
	nat := []string{
		localSrc + " " + remoteDst + " -j NETMAP --to " + f.everything,
		remoteSrc + " " + localDst + " -j NETMAP --to " + f.everything,
	}
	if m.CNIIP.IsValid() && !m.CNIIP.Unmap().Is4() {
		return nil, fmt.Errorf("CNI IP %s is not IPv4 (an IPv6 one goes in CNIIP6)", m.CNIIP)
	}
	if m.CNIIP6.IsValid() && (!m.CNIIP6.Is6() || m.CNIIP6.Is4In6()) {
		return nil, fmt.Errorf("CNI IPv6 address %s is not IPv6", m.CNIIP6)
	}
	cni := m.CNIIP.Unmap()
	if f.ipv6 {
		cni = m.CNIIP6
	}
	if cni.IsValid() {
		// The remote-destination match is what keeps VTEP-to-VTEP traffic
		// (health checks, ping between weft devices) un-NATed.
		for _, d := range devs {
			nat = append(nat, "-o "+d+" -m set ! --match-set "+f.setLocal+" src "+remoteDst+
				" -j SNAT --to-source "+cni.String())
		}
	}

	var mssTarget string
	switch m.MSS.Mode {
	case packetfilter.MSSPMTU, "":
		mssTarget = "-j TCPMSS --clamp-mss-to-pmtu"
	case packetfilter.MSSFixed:
		if m.MSS.Value == 0 {
			return nil, fmt.Errorf("mss mode fixed needs a value")
		}
		mssTarget = "-j TCPMSS --set-mss " + strconv.Itoa(int(m.MSS.Value))
	default:
		return nil, fmt.Errorf("unknown mss mode %q", m.MSS.Mode)
	}
	const syn = "-m tcp --tcp-flags SYN,RST SYN"
	// The SYN test comes first: this chain sees every packet, and the set
	// lookups are the expensive part.
	mss := []string{
		"-p tcp " + syn + " " + localSrc + " " + remoteDst + " " + mssTarget,
		"-p tcp " + syn + " " + remoteSrc + " " + localDst + " " + mssTarget,
	}

	var input, forward []string
	for _, p := range ports {
		if p == 0 {
			return nil, fmt.Errorf("VXLAN port 0 is not a port")
		}
		input = append(input, "-p udp -m udp --dport "+strconv.Itoa(int(p))+" -j ACCEPT")
	}
	if m.HealthCheckPort != 0 {
		input = append(input, "-p udp -m udp --dport "+strconv.Itoa(int(m.HealthCheckPort))+" -j ACCEPT")
	}
	for _, d := range devs {
		input = append(input, "-i "+d+" -j ACCEPT")
		forward = append(forward, "-i "+d+" -j ACCEPT", "-o "+d+" -j ACCEPT")
	}
	return map[string][]string{
		ChainPostrouting: nat,
		ChainMSS:         mss,
		ChainInput:       input,
		ChainForward:     forward,
	}, nil
}

// setMembers normalises CIDRs for the IPv4 hash:net set: IPv4 only,
// masked, deduplicated, sorted. hash:net rejects /0, so it becomes two /1s.
func setMembers(cidrs []netip.Prefix) ([]netip.Prefix, error) {
	return familyMembers(ipv4, cidrs)
}

// familyMembers normalises CIDRs for f's hash:net set, refusing the other
// family's (the caller splits them).
func familyMembers(f *family, cidrs []netip.Prefix) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, p := range cidrs {
		if !p.IsValid() {
			return nil, fmt.Errorf("invalid CIDR %v", p)
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		if p.Addr().Is6() != f.ipv6 {
			if f.ipv6 {
				return nil, fmt.Errorf("CIDR %s is not IPv6", p)
			}
			return nil, fmt.Errorf("CIDR %s is not IPv4", p)
		}
		if p.Bits() == 0 {
			half := netip.PrefixFrom(p.Addr(), 1)
			out = append(out, half, netip.PrefixFrom(lastAddr(half).Next(), 1))
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out), nil
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
