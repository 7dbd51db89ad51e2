package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/client"
	iptbackend "github.com/weft-net/weft/pkg/packetfilter/iptables"
	nftbackend "github.com/weft-net/weft/pkg/packetfilter/nftables"
)

// OperatorPath is figure 8: the path an operator sees with 20,000 remote
// CIDRs (non-adjacent, so 20,000 routes and 20,000 set elements), for each
// packet-filter backend: `weftd run` from exec to ready (the data plane
// absent before, as on a new node), and one CIDR added to the config file
// (renamed into place, as a ConfigMap update or an editor does) until its
// route and its set element are in the kernel. Both include reading and
// validating the YAML file; the reference is the same kernel work done by
// the standard tools (`ip -batch` for the routes, `nft -f` or `ipset
// restore` for the set), measured in the same run.
func OperatorPath(ctx context.Context, _ *harness.Env, o Options) ([]Row, error) {
	n := o.pick(20000, 2000)
	var rows []Row
	for _, backend := range []string{"nftables", "iptables"} {
		r, err := operatorPath(ctx, o, backend, n)
		rows = append(rows, r...)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", backend, err)
		}
	}
	return rows, nil
}

func operatorPath(ctx context.Context, o Options, backend string, n int) ([]Row, error) {
	starts, adds := o.pick(5, 2), o.pick(10, 3)
	env, err := harness.NewEnv(o.Log)
	if err != nil {
		return nil, err
	}
	defer env.Close()
	node, cfg, err := oneNode(env, harness.LayoutFlannel)
	if err != nil {
		return nil, err
	}
	if err := stateOnTmpfs(env, cfg); err != nil {
		return nil, err
	}
	cfg["packetFilter"] = backend
	cidrs := RemoteCIDRs(n)
	pods := make([]string, n)
	for i, p := range cidrs {
		pods[i] = p.String()
	}
	cfg["remotes"] = []any{map[string]any{"id": "c2", "podCIDRs": pods, "gatewayIP": "192.168.20.11"}}
	// The CNI interface exists before weftd starts, as on a node that
	// already runs pods: ready waits for weft alone.
	if err := addCNIBridge(node); err != nil {
		return nil, err
	}
	yml := cfg.MustYAML()
	c := client.New(node.Socket, 5*time.Second)
	k := &kernelProbe{node: node, backend: backend}

	// Start → ready, from nothing: `weftd cleanup` between the trials.
	var cold, warm []time.Duration
	var w *harness.Weftd
	for i := 0; i < starts; i++ {
		if w != nil {
			if err := w.Stop(); err != nil {
				return nil, err
			}
			if out, err := node.WeftdCleanup(ctx); err != nil {
				return nil, fmt.Errorf("cleanup: %w: %s", err, out)
			}
		}
		var d time.Duration
		if w, d, err = startReady(ctx, node, c, yml); err != nil {
			return nil, err
		}
		cold = append(cold, d)
	}
	routes, elems, err := k.counts()
	if err != nil {
		return nil, err
	}
	if routes != n || elems != n {
		return nil, fmt.Errorf("after start: %d routes and %d set elements, want %d each", routes, elems, n)
	}
	// A restart over the data plane already in place (an upgrade).
	for i := 0; i < o.pick(3, 1); i++ {
		if err := w.Stop(); err != nil {
			return nil, err
		}
		var d time.Duration
		if w, d, err = startReady(ctx, node, c, yml); err != nil {
			return nil, err
		}
		warm = append(warm, d)
	}

	// One CIDR added to the file, then removed again; the same in JSON,
	// which weftd also reads, to show what the YAML parse costs.
	var added, removed, checkCost, jsonAdded, inPlaceAdded []time.Duration
	var passMs []float64
	inPlace := false // written over the file (truncate, write, close) instead of renamed
	trial := func(i int, render func(harness.WeftdConfig) []byte) (time.Duration, error) {
		extra := netip.PrefixFrom(netip.AddrFrom4([4]byte{30, byte(i), 0, 0}), 24)
		cfg["remotes"] = []any{map[string]any{"id": "c2", "podCIDRs": append(pods[:n:n], extra.String()), "gatewayIP": "192.168.20.11"}}
		d, cc, err := k.rewrite(ctx, w.ConfigPath, render(cfg), extra, true, inPlace)
		if err != nil {
			return 0, fmt.Errorf("add %s: %w; weftd log:\n%s", extra, err, w.LogTail(2048))
		}
		checkCost = append(checkCost, cc)
		time.Sleep(600 * time.Millisecond) // let the passes (this one, and the re-read a route deletion causes) finish
		if st, err := c.Status(ctx); err == nil && st.LastReconcile != nil {
			passMs = append(passMs, st.LastReconcile.DurationMs)
		}
		cfg["remotes"] = []any{map[string]any{"id": "c2", "podCIDRs": pods, "gatewayIP": "192.168.20.11"}}
		rd, _, err := k.rewrite(ctx, w.ConfigPath, render(cfg), extra, false, inPlace)
		if err != nil {
			return 0, fmt.Errorf("remove %s: %w", extra, err)
		}
		removed = append(removed, rd)
		time.Sleep(600 * time.Millisecond)
		return d, nil
	}
	asYAML := func(c harness.WeftdConfig) []byte { return c.MustYAML() }
	asJSON := func(c harness.WeftdConfig) []byte {
		b, err := json.Marshal(map[string]any(c))
		if err != nil {
			panic(err) // the harness's own maps always marshal
		}
		return b
	}
	for i := 0; i < adds; i++ {
		d, err := trial(i, asYAML)
		if err != nil {
			return nil, err
		}
		added = append(added, d)
	}
	for i := 0; i < max(adds/2, 1); i++ {
		d, err := trial(100+i, asJSON)
		if err != nil {
			return nil, err
		}
		jsonAdded = append(jsonAdded, d)
	}
	// An editor or `cp` writing over the file: read when the writer
	// closes it, not at the truncation nor after a debounce.
	inPlace = true
	for i := 0; i < max(adds/2, 1); i++ {
		d, err := trial(150+i, asYAML)
		if err != nil {
			return nil, err
		}
		inPlaceAdded = append(inPlaceAdded, d)
	}
	if err := os.WriteFile(w.ConfigPath, yml, 0o644); err != nil {
		return nil, err
	}
	st, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}

	refStart, refOne, err := k.toolsReference(ctx, env, cidrs, o.pick(3, 1))
	if err != nil {
		return nil, fmt.Errorf("reference: %w", err)
	}
	short := map[string]string{"nftables": "nft", "iptables": "ipt"}[backend]
	refTool := map[string]string{"nftables": "`ip -batch` + `nft -f`", "iptables": "`ip -batch` + `ipset restore`"}[backend]
	sc, sr := Summarize(Ms(cold)), Summarize(Ms(refStart))
	sa, so := Summarize(Ms(added)), Summarize(Ms(refOne))
	size := fmt.Sprintf("%d", n)
	if n == 20000 {
		size = "20,000"
	}
	return []Row{
		{ID: "8s-" + short, Figure: fmt.Sprintf("weftd start → ready, %s remote CIDRs (%s)", size, backend), Unit: "ms",
			Weft: sc, RefName: refTool + ", same routes and set", Ref: &sr, Goal: &Goal{Text: "≤ 1 s", Max: 1000},
			Extra: map[string]any{"restartOverExistingMs": Summarize(Ms(warm)), "routes": routes, "setElements": elems,
				"configBytes": len(yml), "lastReconcileMs": st.LastReconcile.DurationMs},
			Note: "exec of `weftd run` (YAML file parsed and validated) until /readyz says ready, data plane removed by `weftd cleanup` before each trial; routes and set elements counted in the kernel after"},
		{ID: "8i-" + short, Figure: fmt.Sprintf("one CIDR added to the file → route + set element, on %s (%s)", size, backend), Unit: "ms",
			Weft: sa, RefName: "`ip route add` + " + map[string]string{"nftables": "`nft add element`", "iptables": "`ipset add`"}[backend], Ref: &so,
			Goal: &Goal{Text: "≤ 50 ms", Max: 50},
			Extra: map[string]any{"removedMs": Summarize(Ms(removed)), "kernelCheckMs": Summarize(Ms(checkCost)),
				"sameFileAsJSONMs": Summarize(Ms(jsonAdded)), "writtenInPlaceMs": Summarize(Ms(inPlaceAdded)), "daemonPassMs": Summarize(passMs)},
			Note: fmt.Sprintf("from the rename of the new file into place until the route (one FIB lookup) and the set element (one lookup) are seen in the kernel; includes the config watcher, parsing %s YAML entries and one reconcile pass; writtenInPlaceMs: the same change written over the file (truncate, write, close), from the start of the write; the reference's `nft add element` re-reads the set first", size)},
	}, nil
}

// startReady starts weftd and waits until /readyz on its socket says ready.
func startReady(ctx context.Context, node *harness.Node, c *client.Client, yml []byte) (*harness.Weftd, time.Duration, error) {
	t0 := time.Now()
	w, err := node.StartWeftd(ctx, yml)
	if err != nil {
		return nil, 0, err
	}
	deadline := t0.Add(60 * time.Second)
	for {
		ok, _ := c.Ready(ctx)
		if ok {
			return w, time.Since(t0), nil
		}
		if time.Now().After(deadline) {
			return w, 0, fmt.Errorf("not ready 60 s after start; log tail:\n%s", w.LogTail(4096))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// kernelProbe looks at one node's kernel the way an operator's `ip route
// get` and `nft get element` / `ipset test` would: single lookups, not
// dumps of 20,000 entries.
type kernelProbe struct {
	node    *harness.Node
	backend string
}

func (k *kernelProbe) counts() (routes, elems int, err error) {
	err = k.node.NS.Do(func(ns.NetNS) error {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 240}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		routes = len(rs)
		if k.backend == "iptables" {
			res, err := netlink.IpsetList(iptbackend.SetRemote)
			if err != nil {
				return err
			}
			elems = len(res.Entries)
			return nil
		}
		b, err := nftbackend.New()
		if err != nil {
			return err
		}
		ivs, err := b.SetIntervals(context.Background(), nftbackend.SetRemote)
		elems = len(ivs)
		return err
	})
	return routes, elems, err
}

// present reports whether the route to p (in weft's table, reached by its
// rule) and p's set element are both in the kernel.
func (k *kernelProbe) present(cc *nftables.Conn, p netip.Prefix) (route, elem bool, err error) {
	ip := net.IP(p.Addr().Next().AsSlice())
	rs, rerr := netlink.RouteGetWithOptions(ip, &netlink.RouteGetOptions{FIBMatch: true})
	if rerr == nil && len(rs) > 0 && rs[0].Dst != nil && rs[0].Dst.String() == p.String() {
		route = true
	}
	if k.backend == "iptables" {
		elem, err = netlink.IpsetTest(iptbackend.SetRemote, &netlink.IPSetEntry{IP: ip})
		if err != nil {
			return route, false, fmt.Errorf("ipset test: %w", err)
		}
		return route, elem, nil
	}
	elem, err = nftHasElement(cc, p)
	return route, elem, err
}

// rewrite renames data over path (written next to it first, as a
// ConfigMap update or an editor does), or with inPlace writes it over the
// file, and waits until p's route and set element are present (want) or
// absent (!want). It returns the time from the rename (the start of the
// write), and what one kernel check costs.
func (k *kernelProbe) rewrite(ctx context.Context, path string, data []byte, p netip.Prefix, want, inPlace bool) (time.Duration, time.Duration, error) {
	tmp := filepath.Join(filepath.Dir(path), ".weft.yaml.tmp")
	if !inPlace {
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return 0, 0, err
		}
	}
	var took, check time.Duration
	err := k.node.NS.Do(func(ns.NetNS) error {
		cc, err := nftables.New(nftables.AsLasting())
		if err != nil {
			return err
		}
		defer cc.CloseLasting()
		t0 := time.Now()
		if inPlace {
			err = os.WriteFile(path, data, 0o644)
		} else {
			err = os.Rename(tmp, path)
		}
		if err != nil {
			return err
		}
		deadline := t0.Add(10 * time.Second)
		for ctx.Err() == nil {
			c0 := time.Now()
			route, elem, err := k.present(cc, p)
			if err != nil {
				return err
			}
			if route == want && elem == want {
				took, check = time.Since(t0), time.Since(c0)
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("route %t, set element %t 10 s after the write, want %t", route, elem, want)
			}
			time.Sleep(500 * time.Microsecond)
		}
		return ctx.Err()
	})
	return took, check, err
}

// nftHasElement asks the kernel whether weft's remote set has an interval
// starting at p with one NFT_MSG_GETSETELEM lookup (what `nft get element`
// sends), not a dump of 20,000 intervals.
func nftHasElement(cc *nftables.Conn, p netip.Prefix) (bool, error) {
	t := &nftables.Table{Name: nftbackend.TableName, Family: nftables.TableFamilyIPv4}
	s := &nftables.Set{Table: t, Name: nftbackend.SetRemote, KeyType: nftables.TypeIPAddr, Interval: true}
	_, err := cc.FindSetElements(s, []nftables.SetElement{{Key: p.Addr().AsSlice()}})
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return err == nil, err
}

// toolsReference does the same kernel work with the standard tools in a
// fresh namespace: the n routes (`ip -batch`) and the set (`nft -f`, or
// `ipset restore`), then one route and one element added by hand.
func (k *kernelProbe) toolsReference(ctx context.Context, env *harness.Env, cidrs []netip.Prefix, reps int) (full, one []time.Duration, err error) {
	nsx, err := env.NewNS("weft-bench-ref")
	if err != nil {
		return nil, nil, err
	}
	dir, err := env.TempDir("weft-bench-ref-")
	if err != nil {
		return nil, nil, err
	}
	for _, c := range [][]string{{"link", "add", "d0", "type", "veth", "peer", "name", "d1"}, {"link", "set", "d0", "up"}, {"link", "set", "d1", "up"}} {
		if out, err := nsx.Exec("ip", c...); err != nil {
			return nil, nil, fmt.Errorf("ip %v: %w: %s", c, err, out)
		}
	}
	var routes, set strings.Builder
	for _, p := range cidrs {
		fmt.Fprintf(&routes, "route add %s via 241.168.20.11 dev d0 onlink table 240\n", p)
	}
	if k.backend == "iptables" {
		fmt.Fprintf(&set, "create ref-remote hash:net family inet maxelem %d\n", 2*len(cidrs))
		for _, p := range cidrs {
			fmt.Fprintf(&set, "add ref-remote %s\n", p)
		}
	} else {
		set.WriteString("table ip ref {\n  set remote {\n    type ipv4_addr\n    flags interval\n    elements = { ")
		for i, p := range cidrs {
			if i > 0 {
				set.WriteString(", ")
			}
			set.WriteString(p.String())
		}
		set.WriteString(" }\n  }\n}\n")
	}
	rf, sf := filepath.Join(dir, "routes"), filepath.Join(dir, "set")
	if err := os.WriteFile(rf, []byte(routes.String()), 0o644); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(sf, []byte(set.String()), 0o644); err != nil {
		return nil, nil, err
	}
	run := func(name string, args ...string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if out, err := nsx.Exec(name, args...); err != nil {
			return fmt.Errorf("%s %s: %w: %.300s", name, strings.Join(args, " "), err, out)
		}
		return nil
	}
	for i := 0; i < reps; i++ {
		_ = run("ip", "route", "flush", "table", "240")
		if k.backend == "iptables" {
			_ = run("ipset", "destroy", "ref-remote")
		} else {
			_ = run("nft", "delete", "table", "ip", "ref")
		}
		t0 := time.Now()
		if err := run("ip", "-batch", rf); err != nil {
			return nil, nil, err
		}
		if k.backend == "iptables" {
			err = run("ipset", "restore", "-file", sf)
		} else {
			err = run("nft", "-f", sf)
		}
		if err != nil {
			return nil, nil, err
		}
		full = append(full, time.Since(t0))
	}
	for i := 0; i < reps*3; i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{30, byte(i), 0, 0}), 24).String()
		t0 := time.Now()
		if err := run("ip", "route", "add", p, "via", "241.168.20.11", "dev", "d0", "onlink", "table", "240"); err != nil {
			return nil, nil, err
		}
		if k.backend == "iptables" {
			err = run("ipset", "add", "ref-remote", p)
		} else {
			err = run("nft", "add", "element", "ip", "ref", "remote", "{ "+p+" }")
		}
		if err != nil {
			return nil, nil, err
		}
		one = append(one, time.Since(t0))
	}
	return full, one, nil
}
