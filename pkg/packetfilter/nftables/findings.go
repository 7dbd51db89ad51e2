package nftbackend

import (
	"context"
	"fmt"
	"sort"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/pkg/packetfilter"
)

// Finding types this backend reports.
const (
	FindingForeignDropPolicy = "ForeignDropPolicy"
	FindingInspection        = "PacketFilterInspection"
)

// Findings lists the host's other nftables tables, read-only, and reports
// base chains on hook input or forward whose policy is drop: weft's accept
// rules cannot override a drop decided in another table. Only chain headers
// are read, never foreign rules, so a rule the library cannot parse (a
// native expression in an iptables-nft chain, say) cannot make it fail.
func (b *Backend) Findings(ctx context.Context) (out []packetfilter.Finding) {
	defer func() {
		// Parsing foreign objects is the library's job; a bug there must
		// become a finding, not a crash of the daemon.
		if r := recover(); r != nil {
			out = append(out, packetfilter.Finding{
				Type: FindingInspection, Reason: "ListPanicked",
				Message: fmt.Sprintf("listing the host's nftables chains failed: %v", r),
				Fix:     "inspect `nft list ruleset`; weft keeps working, only this inspection is skipped",
			})
		}
	}()
	if ctx.Err() != nil {
		return nil
	}
	chains, owned, ipv6, err := b.listChains()
	if err == nil {
		return foreignDropFindings(chains, owned, ipv6)
	}
	b.log.Warn("cannot inspect host nftables chains", "err", err)
	return []packetfilter.Finding{{
		Type: FindingInspection, Reason: "ListFailed",
		Message: fmt.Sprintf("listing the host's nftables chains failed: %v", err),
		Fix:     "inspect `nft list ruleset`; weft keeps working, only this inspection is skipped",
	}}
}

// listChains lists every chain of every table on the reusable connection,
// and which tables are owner-flagged (firewalld-style: only the creating
// process may change them, and they vanish with it), keyed family/name;
// ipv6 is whether weft's last Apply carried IPv6.
func (b *Backend) listChains() ([]*nftables.Chain, map[tableKey]uint32, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cc, err := b.lastingConn()
	if err != nil {
		return nil, nil, b.ipv6, err
	}
	tables, err := cc.ListTables()
	if err != nil {
		b.dropLastingLocked()
		return nil, nil, b.ipv6, err
	}
	owned := map[tableKey]uint32{}
	for _, t := range tables {
		if t.Flags&nftables.TableFlagOwner != 0 {
			owned[tableKey{t.Family, t.Name}] = t.Owner
		}
	}
	chains, err := cc.ListChains()
	if err != nil {
		b.dropLastingLocked()
	}
	return chains, owned, b.ipv6, err
}

type tableKey struct {
	family nftables.TableFamily
	name   string
}

// foreignDropFindings reports drop policies of families weft's traffic
// passes: ip and inet, and ip6 when weft carries IPv6.
func foreignDropFindings(chains []*nftables.Chain, owned map[tableKey]uint32, ipv6 bool) []packetfilter.Finding {
	var out []packetfilter.Finding
	for _, c := range chains {
		if c.Table == nil || c.Hooknum == nil || c.Policy == nil || *c.Policy != nftables.ChainPolicyDrop {
			continue
		}
		fam := c.Table.Family
		switch fam {
		case nftables.TableFamilyIPv4, nftables.TableFamilyINet:
		case nftables.TableFamilyIPv6:
			if !ipv6 {
				continue // an IPv4-only weft: ip6 drops do not see its traffic
			}
		default:
			continue // arp, bridge, netdev drops do not see weft's traffic
		}
		if (fam == nftables.TableFamilyIPv4 || fam == nftables.TableFamilyIPv6) && c.Table.Name == TableName {
			continue
		}
		var hook, reason, allow string
		switch *c.Hooknum {
		case unix.NF_INET_FORWARD:
			hook, reason = "forward", "ForwardPolicyDrop"
			allow = `iifname "vx-weft*" accept; oifname "vx-weft*" accept`
		case unix.NF_INET_LOCAL_IN:
			hook, reason = "input", "InputPolicyDrop"
			allow = "udp dport <weft VXLAN ports> accept"
		default:
			continue
		}
		family := familyName(fam)
		f := packetfilter.Finding{
			Type:   FindingForeignDropPolicy,
			Reason: reason,
			Message: fmt.Sprintf("table %s %s chain %s (hook %s) has policy drop; weft's accept in its own table cannot override it",
				family, c.Table.Name, c.Name, hook),
			Fix: fmt.Sprintf("allow weft's traffic in %s %s %s before the drop: %s (and the cluster CIDRs if that chain filters by address)",
				family, c.Table.Name, c.Name, allow),
		}
		if pid, ok := owned[tableKey{fam, c.Table.Name}]; ok {
			// Nobody but the owner may change it, and it is rebuilt from
			// the owner's configuration: the fix goes there.
			f.Message += fmt.Sprintf("; the table is owner-flagged (owned by netlink port %d, e.g. firewalld)", pid)
			f.Fix = fmt.Sprintf("the table belongs to the process that created it (firewalld or similar): allow weft there, e.g. `firewall-cmd --permanent --zone=trusted --add-interface=vx-weft` (and vx-weft-cable on gateways), plus udp ports of weft's VXLAN devices; editing %s %s directly is refused", family, c.Table.Name)
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Message < out[j].Message })
	return out
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprintf("family-%d", f)
}
