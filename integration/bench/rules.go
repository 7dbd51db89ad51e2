package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"sigs.k8s.io/knftables"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/cidrset"
	"github.com/weft-net/weft/pkg/packetfilter"
	iptbackend "github.com/weft-net/weft/pkg/packetfilter/iptables"
	nftbackend "github.com/weft-net/weft/pkg/packetfilter/nftables"
)

// RemoteCIDRs returns n distinct /24s that no merge can join: every other
// /24 from 20.0.0.0 on (adjacent ones would be merged into one interval).
func RemoteCIDRs(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range out {
		v := uint32(20)<<24 + uint32(2*i)<<8
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), 0}), 24)
	}
	return out
}

func pfModel(remotes []netip.Prefix) packetfilter.Model {
	return packetfilter.Model{
		LocalCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("10.101.0.0/16")},
		RemoteCIDRs: remotes,
		Devices:     []string{"vx-weft", "vx-weft-cable"},
		CNIIP:       netip.MustParseAddr("10.1.1.1"),
		VXLANPorts:  []uint16{4800, 4801},
		MSS:         packetfilter.MSS{Mode: packetfilter.MSSPMTU},
	}
}

// ruleResult is what one implementation measured at one size.
type ruleResult struct {
	full, inc []time.Duration
	// extra: messages, elements, execs…
	extra map[string]any
	// onlyChanged: every incremental apply sent exactly one element and
	// no rebuild.
	onlyChanged bool
}

// RuleProgramming is figure 3: full apply of N remote CIDRs and one CIDR
// added/removed on top, for the nftables backend, the iptables backend and
// the peer kube-proxy and Submariner's nftables driver use:
// sigs.k8s.io/knftables transactions (each one `nft -f`) rendering the
// same table (sets, chains, rules), each in its own throwaway namespace and
// all measured in the same run, at every size.
func RuleProgramming(ctx context.Context, env *harness.Env, o Options) ([]Row, error) {
	sizes := []int{10, 100, 1000, 10000}
	fullReps, incReps := 5, 10
	if o.Quick {
		sizes, fullReps, incReps = []int{10, 100, 1000}, 2, 4
	}
	quiet := slog.New(slog.DiscardHandler)
	var rows []Row
	for _, n := range sizes {
		nft, err := measureNFT(ctx, env, quiet, n, fullReps, incReps)
		if err != nil {
			return rows, err
		}
		ipt, err := measureIPT(ctx, env, quiet, n, max(2, fullReps/2), incReps/2)
		if err != nil {
			return rows, err
		}
		peer, err := measureKnft(ctx, env, n, fullReps, incReps)
		if err != nil {
			return rows, err
		}
		pf, pi := Summarize(Ms(peer.full)), Summarize(Ms(peer.inc))
		const refName = "knftables (`nft -f`)"
		fullRow := func(id, name string, r ruleResult, goal *Goal) Row {
			return Row{ID: id, Figure: fmt.Sprintf("full apply, %d remote CIDRs (%s)", n, name), Unit: "ms",
				Weft: Summarize(Ms(r.full)), RefName: refName, Ref: &pf, Goal: goal, Extra: r.extra}
		}
		var fg *Goal
		if n == 10000 {
			fg = &Goal{Text: "≤ 100 ms", Max: 100}
		}
		rows = append(rows, fullRow(fmt.Sprintf("3f-nft-%d", n), "nftables", nft, fg))
		rows = append(rows, fullRow(fmt.Sprintf("3f-ipt-%d", n), "iptables backend", ipt, nil))
		cond := nft.onlyChanged
		incNote := "one /24 added, then removed; both samples pooled; the reference sends the same one element in its own transaction"
		rows = append(rows, Row{ID: fmt.Sprintf("3i-nft-%d", n), Figure: fmt.Sprintf("one CIDR added/removed on %d (nftables)", n), Unit: "ms",
			Weft: Summarize(Ms(nft.inc)), RefName: refName, Ref: &pi,
			Goal: &Goal{Text: "≤ 5 ms, only the changed element sent", Max: 5}, Cond: &cond, Extra: nft.extra, Note: incNote})
		rows = append(rows, Row{ID: fmt.Sprintf("3i-ipt-%d", n), Figure: fmt.Sprintf("one CIDR added/removed on %d (iptables backend)", n), Unit: "ms",
			Weft: Summarize(Ms(ipt.inc)), RefName: refName, Ref: &pi, Extra: ipt.extra, Note: incNote + "; the iptables backend trusts its verified cache (event-driven pass)"})
	}
	return rows, nil
}

func measureNFT(ctx context.Context, env *harness.Env, log *slog.Logger, n, fullReps, incReps int) (ruleResult, error) {
	nsx, err := env.NewNS("weft-bench")
	if err != nil {
		return ruleResult{}, err
	}
	b, err := nftbackend.New(nftbackend.WithNetNSFd(int(nsx.Fd())), nftbackend.WithLogger(log))
	if err != nil {
		return ruleResult{}, err
	}
	cidrs := RemoteCIDRs(n + 1)
	base, plus := pfModel(cidrs[:n]), pfModel(cidrs)
	res := ruleResult{extra: map[string]any{}, onlyChanged: true}
	for r := 0; r < fullReps; r++ {
		if err := b.Cleanup(ctx); err != nil {
			return res, err
		}
		t0 := time.Now()
		if err := b.Apply(ctx, base); err != nil {
			return res, fmt.Errorf("nftables full apply %d: %w", n, err)
		}
		res.full = append(res.full, time.Since(t0))
		res.extra["fullMessages"] = b.LastApplyStats().Messages
		res.extra["fullElements"] = b.LastApplyStats().ElementsAdded
	}
	var adds, dels []time.Duration
	defer func() {
		res.extra["addMs"], res.extra["removeMs"] = Summarize(Ms(adds)), Summarize(Ms(dels))
	}()
	for r := 0; r < incReps; r++ {
		for _, step := range []struct {
			m   packetfilter.Model
			add bool
		}{{plus, true}, {base, false}} {
			t0 := time.Now()
			if err := b.Apply(ctx, step.m); err != nil {
				return res, fmt.Errorf("nftables incremental apply %d: %w", n, err)
			}
			dt := time.Since(t0)
			res.inc = append(res.inc, dt)
			if step.add {
				adds = append(adds, dt)
			} else {
				dels = append(dels, dt)
			}
			st := b.LastApplyStats()
			key := "removeStats"
			sent := st.ElementsDeleted == 1 && st.ElementsAdded == 0
			if step.add {
				key, sent = "addStats", st.ElementsAdded == 1 && st.ElementsDeleted == 0
			}
			res.extra[key] = st
			if st.Full || !sent {
				res.onlyChanged = false
			}
		}
	}
	return res, nil
}

func measureIPT(ctx context.Context, env *harness.Env, log *slog.Logger, n, fullReps, incReps int) (ruleResult, error) {
	nsx, err := env.NewNS("weft-bench")
	if err != nil {
		return ruleResult{}, err
	}
	b, err := iptbackend.New(iptbackend.WithLogger(log))
	if err != nil {
		return ruleResult{}, err
	}
	cidrs := RemoteCIDRs(n + 1)
	base, plus := pfModel(cidrs[:n]), pfModel(cidrs)
	res := ruleResult{extra: map[string]any{}}
	err = nsx.Do(func(ns.NetNS) error {
		for r := 0; r < fullReps; r++ {
			if err := b.Cleanup(ctx); err != nil {
				return err
			}
			full := base
			full.Verify = true // what the first pass does
			t0 := time.Now()
			if err := b.Apply(ctx, full); err != nil {
				return fmt.Errorf("iptables full apply %d: %w", n, err)
			}
			res.full = append(res.full, time.Since(t0))
			res.extra["fullStats"] = b.LastApplyStats()
		}
		for r := 0; r < max(incReps, 1); r++ {
			for i, m := range []packetfilter.Model{plus, base} {
				t0 := time.Now()
				if err := b.Apply(ctx, m); err != nil {
					return fmt.Errorf("iptables incremental apply %d: %w", n, err)
				}
				res.inc = append(res.inc, time.Since(t0))
				res.extra[[]string{"addStats", "removeStats"}[i]] = b.LastApplyStats()
			}
		}
		res.extra["mode"] = b.Mode()
		return nil
	})
	return res, err
}

// measureKnft programs the same table as the nftables backend through
// sigs.k8s.io/knftables, the way kube-proxy's nftables mode and
// Submariner's nftables driver do: one transaction per sync, rendered as
// nft text and run by `nft -f`. The full apply builds the table from
// nothing (deleted before each repetition, like the backend's); the
// incremental one adds or deletes one set element.
func measureKnft(ctx context.Context, env *harness.Env, n, fullReps, incReps int) (ruleResult, error) {
	nsx, err := env.NewNS("weft-bench")
	if err != nil {
		return ruleResult{}, err
	}
	cidrs := RemoteCIDRs(n + 1)
	m := pfModel(cidrs[:n])
	res := ruleResult{extra: map[string]any{}}
	err = nsx.Do(func(ns.NetNS) error {
		nft, err := knftables.New(knftables.IPv4Family, "weft")
		if err != nil {
			return fmt.Errorf("knftables: %w", err)
		}
		for r := 0; r < fullReps; r++ {
			if r > 0 {
				tx := nft.NewTransaction()
				tx.Delete(&knftables.Table{})
				if err := nft.Run(ctx, tx); err != nil {
					return fmt.Errorf("knftables delete table: %w", err)
				}
			}
			tx := knftFull(nft, m)
			t0 := time.Now()
			if err := nft.Run(ctx, tx); err != nil {
				return fmt.Errorf("knftables full apply %d: %w", n, err)
			}
			res.full = append(res.full, time.Since(t0))
			res.extra["operations"] = tx.NumOperations()
		}
		extra := &knftables.Element{Set: "remote", Key: []string{cidrs[n].String()}}
		for r := 0; r < incReps; r++ {
			for _, add := range []bool{true, false} {
				tx := nft.NewTransaction()
				if add {
					tx.Add(extra)
				} else {
					tx.Delete(extra)
				}
				t0 := time.Now()
				if err := nft.Run(ctx, tx); err != nil {
					return fmt.Errorf("knftables one element (add %t): %w", add, err)
				}
				res.inc = append(res.inc, time.Since(t0))
			}
		}
		return nil
	})
	return res, err
}

// knftFull is the transaction that creates weft's table for m: the sets
// local and remote (intervals, CIDRs merged as the backend merges them),
// the NAT, MSS, input and forward chains with the same rules.
func knftFull(nft knftables.Interface, m packetfilter.Model) *knftables.Transaction {
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	for name, cidrs := range map[string][]netip.Prefix{"local": m.LocalCIDRs, "remote": m.RemoteCIDRs} {
		tx.Add(&knftables.Set{Name: name, Type: "ipv4_addr", Flags: []knftables.SetFlag{knftables.IntervalFlag}})
		for _, p := range cidrset.Merge(cidrs) {
			tx.Add(&knftables.Element{Set: name, Key: []string{p.String()}})
		}
	}
	chain := func(name string, typ knftables.BaseChainType, hook knftables.BaseChainHook, prio knftables.BaseChainPriority, rules ...string) {
		tx.Add(&knftables.Chain{Name: name, Type: &typ, Hook: &hook, Priority: &prio})
		for _, r := range rules {
			tx.Add(&knftables.Rule{Chain: name, Rule: r})
		}
	}
	nat := []string{"ip saddr @local ip daddr @remote snat to ip saddr", "ip saddr @remote ip daddr @local snat to ip saddr"}
	var input, forward []string
	ports := make([]string, len(m.VXLANPorts))
	for i, p := range m.VXLANPorts {
		ports[i] = fmt.Sprint(p)
	}
	input = append(input, "udp dport { "+strings.Join(ports, ", ")+" } accept")
	for _, d := range m.Devices {
		nat = append(nat, fmt.Sprintf("oifname %q ip saddr != @local ip daddr @remote snat to %s", d, m.CNIIP))
		input = append(input, fmt.Sprintf("iifname %q accept", d))
		forward = append(forward, fmt.Sprintf("iifname %q accept", d), fmt.Sprintf("oifname %q accept", d))
	}
	chain("nat-postrouting", knftables.NATType, knftables.PostroutingHook, "srcnat - 10", nat...)
	chain("mss", knftables.FilterType, knftables.PostroutingHook, knftables.ManglePriority,
		"tcp flags syn / syn,rst ip saddr @local ip daddr @remote tcp option maxseg size set rt mtu",
		"tcp flags syn / syn,rst ip saddr @remote ip daddr @local tcp option maxseg size set rt mtu")
	chain("input", knftables.FilterType, knftables.InputHook, knftables.FilterPriority, input...)
	chain("forward", knftables.FilterType, knftables.ForwardHook, knftables.FilterPriority, forward...)
	return tx
}
