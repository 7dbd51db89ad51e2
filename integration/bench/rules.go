package bench

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	goipt "github.com/coreos/go-iptables/iptables"

	"github.com/weft-net/weft/integration/harness"
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
// a naive reference (one iptables exec per rule through go-iptables, as the
// field agents do), each in its own throwaway namespace.
func RuleProgramming(ctx context.Context, env *harness.Env, o Options) ([]Row, error) {
	sizes := []int{10, 100, 1000, 10000}
	naiveMax := 1000
	fullReps, incReps := 5, 10
	if o.Quick {
		sizes, naiveMax, fullReps, incReps = []int{10, 100, 1000}, 100, 2, 4
	}
	quiet := slog.New(slog.DiscardHandler)
	var rows []Row
	naive := map[int]ruleResult{}
	for _, n := range sizes {
		if n > naiveMax {
			continue
		}
		r, err := measureNaive(ctx, env, n, max(1, min(fullReps, 3000/n)), min(incReps, 5))
		if err != nil {
			return rows, err
		}
		naive[n] = r
	}
	for _, n := range sizes {
		nft, err := measureNFT(ctx, env, quiet, n, fullReps, incReps)
		if err != nil {
			return rows, err
		}
		ipt, err := measureIPT(ctx, env, quiet, n, max(2, fullReps/2), incReps/2)
		if err != nil {
			return rows, err
		}
		ref, refNote := naiveAt(naive, n)
		fullRow := func(id, name string, r ruleResult, goal *Goal) Row {
			row := Row{ID: id, Figure: fmt.Sprintf("full apply, %d remote CIDRs (%s)", n, name), Unit: "ms",
				Weft: Summarize(Ms(r.full)), RefName: "naive go-iptables", Ref: ref.full, Goal: goal, Extra: r.extra, Note: refNote}
			return row
		}
		var fg *Goal
		if n == 10000 {
			fg = &Goal{Text: "≤ 100 ms", Max: 100}
		}
		rows = append(rows, fullRow(fmt.Sprintf("3f-nft-%d", n), "nftables", nft, fg))
		rows = append(rows, fullRow(fmt.Sprintf("3f-ipt-%d", n), "iptables backend", ipt, nil))
		cond := nft.onlyChanged
		incNote := "one /24 added, then removed; both samples pooled"
		if refNote != "" {
			incNote += "; " + refNote
		}
		rows = append(rows, Row{ID: fmt.Sprintf("3i-nft-%d", n), Figure: fmt.Sprintf("one CIDR added/removed on %d (nftables)", n), Unit: "ms",
			Weft: Summarize(Ms(nft.inc)), RefName: "naive go-iptables", Ref: ref.inc,
			Goal: &Goal{Text: "≤ 5 ms, only the changed element sent", Max: 5}, Cond: &cond, Extra: nft.extra, Note: incNote})
		rows = append(rows, Row{ID: fmt.Sprintf("3i-ipt-%d", n), Figure: fmt.Sprintf("one CIDR added/removed on %d (iptables backend)", n), Unit: "ms",
			Weft: Summarize(Ms(ipt.inc)), RefName: "naive go-iptables", Ref: ref.inc, Extra: ipt.extra, Note: incNote})
	}
	return rows, nil
}

// naiveRef is the naive reference at one size, measured or extrapolated.
type naiveRef struct{ full, inc *Summary }

// naiveAt returns the naive reference at n: measured when it was, else
// extrapolated from the two largest measured sizes with a power law
// (t = a·n^k), which is what one exec per rule against a growing ruleset
// gives (k ≈ 2 for the full apply when each exec re-reads the table).
func naiveAt(m map[int]ruleResult, n int) (naiveRef, string) {
	if r, ok := m[n]; ok {
		f, i := Summarize(Ms(r.full)), Summarize(Ms(r.inc))
		return naiveRef{&f, &i}, ""
	}
	var lo, hi int
	for k := range m {
		if k > hi {
			lo, hi = hi, k
		} else if k > lo {
			lo = k
		}
	}
	if lo == 0 || hi == 0 {
		return naiveRef{}, "naive reference not measured at this size"
	}
	ext := func(a, b []time.Duration) *Summary {
		ma, mb := Summarize(Ms(a)).Median, Summarize(Ms(b)).Median
		if ma <= 0 || mb <= 0 {
			return nil
		}
		k := math.Log(mb/ma) / math.Log(float64(hi)/float64(lo))
		v := mb * math.Pow(float64(n)/float64(hi), k)
		return &Summary{N: 0, Median: v, P99: v, Min: v, Max: v}
	}
	return naiveRef{ext(m[lo].full, m[hi].full), ext(m[lo].inc, m[hi].inc)},
		fmt.Sprintf("naive reference EXTRAPOLATED from %d and %d (power law), not measured", lo, hi)
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
			t0 := time.Now()
			if err := b.Apply(ctx, base); err != nil {
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

// naiveChain is the reference's own nat chain, like the field agents'
// SNAT/ACCEPT chains with one rule per remote CIDR.
const naiveChain = "NAIVE-POSTROUTING"

func measureNaive(ctx context.Context, env *harness.Env, n, fullReps, incReps int) (ruleResult, error) {
	nsx, err := env.NewNS("weft-bench")
	if err != nil {
		return ruleResult{}, err
	}
	cidrs := RemoteCIDRs(n + 1)
	rule := func(p netip.Prefix) []string {
		return []string{"-s", "10.1.0.0/16", "-d", p.String(), "-j", "ACCEPT"}
	}
	res := ruleResult{extra: map[string]any{}}
	err = nsx.Do(func(ns.NetNS) error {
		ipt, err := goipt.New()
		if err != nil {
			return fmt.Errorf("go-iptables: %w", err)
		}
		if err := ipt.NewChain("nat", naiveChain); err != nil {
			return fmt.Errorf("naive chain: %w", err)
		}
		if err := ipt.Insert("nat", "POSTROUTING", 1, "-j", naiveChain); err != nil {
			return fmt.Errorf("naive jump: %w", err)
		}
		for r := 0; r < fullReps; r++ {
			if err := ipt.ClearChain("nat", naiveChain); err != nil {
				return err
			}
			t0 := time.Now()
			for _, p := range cidrs[:n] {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := ipt.Append("nat", naiveChain, rule(p)...); err != nil {
					return fmt.Errorf("naive append %s: %w", p, err)
				}
			}
			res.full = append(res.full, time.Since(t0))
		}
		for r := 0; r < incReps; r++ {
			t0 := time.Now()
			if err := ipt.Append("nat", naiveChain, rule(cidrs[n])...); err != nil {
				return err
			}
			t1 := time.Now()
			if err := ipt.Delete("nat", naiveChain, rule(cidrs[n])...); err != nil {
				return err
			}
			res.inc = append(res.inc, t1.Sub(t0), time.Since(t1))
		}
		res.extra["execsFull"] = n
		return nil
	})
	return res, err
}
