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

	ChainPostrouting = "WEFT-POSTROUTING"
	ChainMSS         = "WEFT-MSS"
	ChainInput       = "WEFT-INPUT"
	ChainForward     = "WEFT-FORWARD"

	// jumpComment marks weft's jump rules in the built-in chains.
	jumpComment = "weft"
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

// render turns the model into the bodies of weft's chains, each rule in
// the exact form iptables-save prints it, so the save output can be
// compared with it as text.
func render(m packetfilter.Model) (map[string][]string, error) {
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

	const (
		localSrc  = "-m set --match-set " + SetLocal + " src"
		localDst  = "-m set --match-set " + SetLocal + " dst"
		remoteSrc = "-m set --match-set " + SetRemote + " src"
		remoteDst = "-m set --match-set " + SetRemote + " dst"
	)

	// Local↔remote: an identity NAT binding at position 1. NETMAP to
	// 0.0.0.0/0 keeps every address bit (the netmask is empty), and a NAT
	// binding — unlike a plain ACCEPT, which only ends this chain — keeps a
	// later masquerade out, both later in this chain (CNI, kube-proxy
	// rules) and in another nft table that runs after it at the same hook:
	// in netfilter the first source NAT of a connection wins. The nftables
	// backend does the same with `snat to ip saddr`.
	nat := []string{
		localSrc + " " + remoteDst + " -j NETMAP --to 0.0.0.0/0",
		remoteSrc + " " + localDst + " -j NETMAP --to 0.0.0.0/0",
	}
	if m.CNIIP.IsValid() {
		if !m.CNIIP.Unmap().Is4() {
			return nil, fmt.Errorf("CNI IP %s is not IPv4", m.CNIIP)
		}
		// The remote-destination match is what keeps VTEP-to-VTEP traffic
		// (health checks, ping between weft devices) un-NATed.
		for _, d := range devs {
			nat = append(nat, "-o "+d+" -m set ! --match-set "+SetLocal+" src "+remoteDst+
				" -j SNAT --to-source "+m.CNIIP.Unmap().String())
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

// setMembers normalises CIDRs for a hash:net set: IPv4 only, masked,
// deduplicated, sorted. hash:net rejects /0, so it becomes two /1s.
func setMembers(cidrs []netip.Prefix) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, p := range cidrs {
		if !p.IsValid() {
			return nil, fmt.Errorf("invalid CIDR %v", p)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked()
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("CIDR %s is not IPv4", p)
		}
		if p.Bits() == 0 {
			out = append(out, netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1"))
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
