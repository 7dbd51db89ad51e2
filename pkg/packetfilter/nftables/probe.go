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

	"github.com/weft-net/weft/pkg/cidrset"
)

// ProbeError lists the kernel features weft's table needs that the kernel
// refused.
type ProbeError struct {
	Missing []string
	Errs    []error
}

func (e *ProbeError) Error() string {
	parts := make([]string, len(e.Missing))
	for i, m := range e.Missing {
		parts[i] = fmt.Sprintf("%s (%v)", m, e.Errs[i])
	}
	return "nftables cannot carry weft's rules: missing " + strings.Join(parts, "; ")
}

func (e *ProbeError) Unwrap() []error { return e.Errs }

// Probe checks, in a throwaway table ip weft-probe-<pid> that it deletes
// again, that the kernel accepts everything weft's table uses: an ipv4
// interval set, a nat chain at postrouting srcnat-10 with `snat to ip
// saddr`, a filter chain at postrouting priority mangle writing the TCP MSS
// option from the route MTU and from a constant, and input/forward filter
// chains matching interface names, and UDP ports through an anonymous set. Each
// feature is its own transaction so the error names each missing one.
func (b *Backend) Probe(ctx context.Context) error {
	cc, err := b.conn()
	if err != nil {
		return fmt.Errorf("nftables probe: %w", err)
	}
	table := &nftables.Table{Name: fmt.Sprintf("%s-probe-%d", TableName, os.Getpid()), Family: nftables.TableFamilyIPv4}
	local := netip.MustParsePrefix("10.255.0.0/16")
	fixed := uint16(1360)
	post := func(b *batch, name string, typ nftables.ChainType, prio nftables.ChainPriority) *nftables.Chain {
		return b.addChain(chainSpec{name, typ, *nftables.ChainHookPostrouting, prio, nftables.ChainPolicyAccept})
	}
	withSets := func(bt *batch) error {
		for _, name := range []string{SetLocal, SetRemote} {
			s := &nftables.Set{Table: table, Name: name, KeyType: nftables.TypeIPAddr, Interval: true}
			if err := bt.addSet(s, intervalElements(cidrset.Intervals([]netip.Prefix{local}))); err != nil {
				return err
			}
		}
		return nil
	}
	features := []struct {
		name  string
		build func(*batch) error
	}{
		{"ipv4 interval sets", withSets},
		{"nat chain at hook postrouting priority srcnat-10 with `snat to ip saddr`", func(bt *batch) error {
			if err := withSets(bt); err != nil {
				return err
			}
			c := post(bt, "nat", nftables.ChainTypeNAT, prioSrcNATM10)
			bt.addRule(c, keepSource("probe", SetLocal, SetRemote))
			return nil
		}},
		{"filter chain at hook postrouting priority mangle with `tcp option maxseg size set rt mtu`", func(bt *batch) error {
			if err := withSets(bt); err != nil {
				return err
			}
			c := post(bt, "mss", nftables.ChainTypeFilter, *nftables.ChainPriorityMangle)
			bt.addRule(c, clampMSS("probe", SetLocal, SetRemote, nil))
			return nil
		}},
		{"`tcp option maxseg size set <value>`", func(bt *batch) error {
			if err := withSets(bt); err != nil {
				return err
			}
			c := post(bt, "mss", nftables.ChainTypeFilter, *nftables.ChainPriorityMangle)
			bt.addRule(c, clampMSS("probe", SetLocal, SetRemote, &fixed))
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
	perr := &ProbeError{}
	for _, f := range features {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("nftables probe: %w", err)
		}
		bt := newBatch(cc, table)
		bt.addTable()
		err := f.build(bt)
		if err == nil {
			err = cc.Flush()
		}
		// Delete in a transaction of its own: the kernel validates chain
		// bindings at commit, which it may skip for a table deleted in the
		// same batch.
		cc.DelTable(table)
		if derr := cc.Flush(); derr != nil && !errors.Is(derr, unix.ENOENT) && err == nil {
			return fmt.Errorf("nftables probe: delete table ip %s: %w", table.Name, derr)
		}
		if err != nil {
			perr.Missing = append(perr.Missing, f.name)
			perr.Errs = append(perr.Errs, err)
		}
	}
	if len(perr.Missing) > 0 {
		return perr
	}
	return nil
}
