package nftbackend

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// ProbeError lists the kernel features weft's tables need that the kernel
// refused, each with the family of the table that needs it ("ip" or "ip6").
type ProbeError struct {
	Missing []string
	// Families holds the family of each Missing feature.
	Families []string
	Errs     []error
}

func (e *ProbeError) Error() string {
	parts := make([]string, len(e.Missing))
	for i, m := range e.Missing {
		parts[i] = fmt.Sprintf("%s: %s (%v)", e.Families[i], m, e.Errs[i])
	}
	return "nftables cannot carry weft's rules: missing " + strings.Join(parts, "; ")
}

func (e *ProbeError) Unwrap() []error { return e.Errs }

// Only reports whether every missing feature is of family ("ip6" on a
// kernel without IPv6 NAT, say): an IPv4-only node can still use nftables.
func (e *ProbeError) Only(family string) bool {
	for _, f := range e.Families {
		if f != family {
			return false
		}
	}
	return len(e.Families) > 0
}

// Probe checks, for each family in throwaway tables ip weft-probe-<pid>
// and ip6 weft-probe-<pid> that it deletes again, that the kernel accepts
// everything weft's tables use: an interval set of the family's addresses,
// a nat chain at postrouting srcnat-10 with `snat to ip saddr`, a filter
// chain at postrouting priority mangle writing the TCP MSS option from the
// route MTU and from a constant, and input/forward filter chains matching
// interface names, and UDP ports through an anonymous set. Each feature is
// its own transaction so the error names each missing one, per family.
func (b *Backend) Probe(ctx context.Context) error {
	cc, err := b.conn()
	if err != nil {
		return fmt.Errorf("nftables probe: %w", err)
	}
	perr := &ProbeError{}
	for _, f := range families {
		if err := probeFamily(ctx, cc, f, perr); err != nil {
			return err
		}
	}
	if len(perr.Missing) > 0 {
		return perr
	}
	return nil
}

func probeFamily(ctx context.Context, cc *nftables.Conn, f *family, perr *ProbeError) error {
	table := &nftables.Table{Name: fmt.Sprintf("%s-probe-%d", TableName, os.Getpid()), Family: f.table}
	local := netip.MustParsePrefix("10.255.0.0/16")
	if f == ipv6 {
		local = netip.MustParsePrefix("fd00:ffff::/32")
	}
	fixed := uint16(1360)
	post := func(b *batch, name string, typ nftables.ChainType, prio nftables.ChainPriority) *nftables.Chain {
		return b.addChain(chainSpec{name, typ, *nftables.ChainHookPostrouting, prio, nftables.ChainPolicyAccept})
	}
	withSets := func(bt *batch) error {
		for _, name := range []string{SetLocal, SetRemote} {
			s := &nftables.Set{Table: table, Name: name, KeyType: f.key, Interval: true}
			if err := bt.addSet(s, intervalElements(prefixIvals([]netip.Prefix{local}))); err != nil {
				return err
			}
		}
		return nil
	}
	addrs := "ipv4"
	if f == ipv6 {
		addrs = "ipv6"
	}
	features := []struct {
		name  string
		build func(*batch) error
	}{
		{addrs + " interval sets", withSets},
		{fmt.Sprintf("nat chain at hook postrouting priority srcnat-10 with `snat to %s saddr`", f.name), func(bt *batch) error {
			if err := withSets(bt); err != nil {
				return err
			}
			c := post(bt, "nat", nftables.ChainTypeNAT, prioSrcNATM10)
			bt.addRule(c, keepSource(f, "probe", SetLocal, SetRemote))
			return nil
		}},
		{"filter chain at hook postrouting priority mangle with `tcp option maxseg size set rt mtu`", func(bt *batch) error {
			if err := withSets(bt); err != nil {
				return err
			}
			c := post(bt, "mss", nftables.ChainTypeFilter, *nftables.ChainPriorityMangle)
			bt.addRule(c, clampMSS(f, "probe", SetLocal, SetRemote, nil))
			return nil
		}},
		{"`tcp option maxseg size set <value>`", func(bt *batch) error {
			if err := withSets(bt); err != nil {
				return err
			}
			c := post(bt, "mss", nftables.ChainTypeFilter, *nftables.ChainPriorityMangle)
			bt.addRule(c, clampMSS(f, "probe", SetLocal, SetRemote, &fixed))
			return nil
		}},
		{"filter chains at hooks input/forward matching interface names and a UDP port set", func(bt *batch) error {
			in := bt.addChain(chainSpec{"input", nftables.ChainTypeFilter, *nftables.ChainHookInput, *nftables.ChainPriorityFilter, nftables.ChainPolicyAccept})
			fw := bt.addChain(chainSpec{"forward", nftables.ChainTypeFilter, *nftables.ChainHookForward, *nftables.ChainPriorityFilter, nftables.ChainPolicyAccept})
			bt.addRule(fw, acceptIfname("probe", expr.MetaKeyOIFNAME, "weft-probe0"))
			bt.cc.AddRule(&nftables.Rule{Table: table, Chain: in, Exprs: append([]expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			}, append(bt.matchPorts([]uint16{4800, 4801}), &expr.Verdict{Kind: expr.VerdictAccept})...)})
			return nil
		}},
	}
	for _, ft := range features {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("nftables probe: %w", err)
		}
		bt := newBatch(cc, table)
		bt.addTable()
		err := ft.build(bt)
		if err == nil {
			err = cc.Flush()
		}
		// Delete in a transaction of its own: the kernel validates chain
		// bindings at commit, which it may skip for a table deleted in the
		// same batch.
		cc.DelTable(table)
		if derr := cc.Flush(); derr != nil && !errors.Is(derr, unix.ENOENT) && err == nil {
			return fmt.Errorf("nftables probe: delete table %s %s: %w", f.name, table.Name, derr)
		}
		if err != nil {
			perr.Missing = append(perr.Missing, ft.name)
			perr.Families = append(perr.Families, f.name)
			perr.Errs = append(perr.Errs, err)
		}
	}
	return nil
}
