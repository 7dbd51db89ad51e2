package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/weft-net/weft/integration/harness"
)

// pathVariant is one way of connecting the two pods.
type pathVariant struct {
	name  string
	setup func() error
	gbps  []float64
}

// DataPath is figure 5: TCP throughput pod → remote pod (the Go stream
// probe: a pattern streamed to an echo server and verified on return, both
// directions at once) through weft, through the same VXLAN cable without
// weft's nft table, and over plain routing on the underlay without VXLAN.
// Two one-node clusters, each node its own gateway; weftd builds the data
// plane, then stops (SIGTERM leaves it in place) so that the variants can be
// switched under it: the `ip weft` table is deleted and restored from its
// own listing, and plain routing is an ip rule ahead of weft's table.
func DataPath(ctx context.Context, env *harness.Env, o Options) ([]Row, error) {
	rounds := o.pick(11, 2) // odd, and many: 2 shared cores make single transfers swing ±30 %
	size := int64(o.pick(256, 32)) << 20
	u, err := harness.NewUnderlay(env)
	if err != nil {
		return nil, err
	}
	var cs []*harness.Cluster
	for i, spec := range []harness.ClusterSpec{
		{ID: "c1", PodCIDR: "10.1.0.0/16", ServiceCIDR: "10.101.0.0/16", NodeIPBase: "192.168.10.0"},
		{ID: "c2", PodCIDR: "10.2.0.0/16", ServiceCIDR: "10.102.0.0/16", NodeIPBase: "192.168.20.0"},
	} {
		spec.Nodes, spec.CNI = 1, harness.CNIOptions{Layout: harness.LayoutFlannel, Weft: true}
		c, err := harness.NewCluster(env, u, spec)
		if err != nil {
			return nil, fmt.Errorf("cluster %d: %w", i, err)
		}
		cs = append(cs, c)
	}
	n1, n2 := cs[0].Nodes[0], cs[1].Nodes[0]
	var ws []*harness.Weftd
	for i, n := range []*harness.Node{n1, n2} {
		other := cs[1-i]
		cfg := cs[i].WeftdConfig(n, n, []*harness.Cluster{other}, nil)
		cfg["packetFilter"] = "nftables"
		w, err := n.StartWeftd(ctx, cfg.MustYAML())
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	p1, err := n1.RunPod(ctx, "bench", "client")
	if err != nil {
		return nil, err
	}
	p2, err := n2.RunPod(ctx, "bench", "server")
	if err != nil {
		return nil, err
	}
	echo, err := harness.ServeTCPEcho(env, p2.NS, ":7000")
	if err != nil {
		return nil, err
	}
	dst := fmt.Sprintf("%s:%d", p2.IP, echo.Addr.Port())
	for _, w := range ws {
		if _, err := w.WaitReady(ctx); err != nil {
			return nil, err
		}
	}
	if _, err := harness.ProbeTCP(ctx, p1.NS, dst, []byte("hello")); err != nil {
		return nil, fmt.Errorf("path through weft: %w", err)
	}
	for _, w := range ws {
		if err := w.Stop(); err != nil {
			return nil, err
		}
	}
	// Each node's weft table, saved to be restored between variants.
	nodes := []*harness.Node{n1, n2}
	saved := make([]string, len(nodes))
	for i, n := range nodes {
		out, err := n.Exec("nft", "list", "table", "ip", "weft")
		if err != nil {
			return nil, err
		}
		saved[i] = filepath.Join(n.Dir, "weft-table.nft")
		if err := os.WriteFile(saved[i], []byte(out), 0o644); err != nil {
			return nil, err
		}
	}
	tablePresent := true
	setTable := func(want bool) error {
		if want == tablePresent {
			return nil
		}
		for i, n := range nodes {
			var err error
			if want {
				_, err = n.Exec("nft", "-f", saved[i])
			} else {
				_, err = n.Exec("nft", "delete", "table", "ip", "weft")
			}
			if err != nil {
				return err
			}
		}
		tablePresent = want
		return nil
	}
	// A Kubernetes node always has conntrack and NAT hooks (kube-proxy,
	// the CNI's masquerade). Without them, "no weft rules" would also mean
	// "no conntrack", charging conntrack to weft. The stub is an empty nat
	// chain in a table of its own, as kube-proxy's nftables mode has.
	stub := "table ip bench-k8s { chain post { type nat hook postrouting priority srcnat; policy accept; }; }"
	stubOn := false
	setStub := func(want bool) error {
		if want == stubOn {
			return nil
		}
		for _, n := range nodes {
			var err error
			if want {
				_, err = n.Exec("nft", stub)
			} else {
				_, err = n.Exec("nft", "delete", "table", "ip", "bench-k8s")
			}
			if err != nil {
				return err
			}
		}
		stubOn = want
		return nil
	}
	// Plain routing: the other cluster's pods via its node's underlay
	// address, in table 100 that an ip rule puts ahead of weft's 240.
	plainOn := false
	for i, n := range nodes {
		peer, remote := nodes[1-i], cs[1-i].PodCIDR
		if _, err := n.Exec("ip", "route", "add", remote.String(), "via", peer.IP.String(), "dev", "eth0", "table", "100"); err != nil {
			return nil, err
		}
	}
	setPlain := func(want bool) error {
		if want == plainOn {
			return nil
		}
		op := map[bool]string{true: "add", false: "del"}[want]
		for i, n := range nodes {
			if _, err := n.Exec("ip", "rule", op, "to", cs[1-i].PodCIDR.String(), "lookup", "100", "pref", "100"); err != nil {
				return err
			}
		}
		plainOn = want
		return nil
	}
	set := func(plain, table, stub bool) error {
		if err := setPlain(plain); err != nil {
			return err
		}
		if err := setStub(stub); err != nil {
			return err
		}
		return setTable(table)
	}
	variants := []*pathVariant{
		{name: "weft", setup: func() error { return set(false, true, false) }},
		{name: "vxlan-no-rules", setup: func() error { return set(false, false, false) }},
		{name: "plain-routing", setup: func() error { return set(true, false, false) }},
		{name: "vxlan-conntrack", setup: func() error { return set(false, false, true) }},
	}
	var mss = map[string]int{}
	for r := 0; r < rounds; r++ {
		for k := range variants {
			v := variants[(r+k)%len(variants)]
			if err := v.setup(); err != nil {
				return nil, fmt.Errorf("variant %s: %w", v.name, err)
			}
			tctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			t, err := harness.TransferTCP(tctx, p1.NS, dst, size)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("variant %s: %w", v.name, err)
			}
			v.gbps = append(v.gbps, float64(t.Bytes)*8/t.Duration.Seconds()/1e9)
			mss[v.name] = t.ClientMSS
		}
	}
	if err := set(false, true, false); err != nil {
		return nil, err
	}
	weft, vx, plain, vxct := Summarize(variants[0].gbps), Summarize(variants[1].gbps), Summarize(variants[2].gbps), Summarize(variants[3].gbps)
	extra := map[string]any{"rounds": rounds, "bytesEachWay": size, "clientMSS": mss,
		"probe": "Go stream probe (harness.TransferTCP), echo: both directions loaded; Gbit/s per direction"}
	_, iperr := os.Stat("/usr/bin/iperf3")
	if iperr != nil {
		extra["iperf3"] = "not installed; Go probe used"
	}
	return []Row{
		{ID: "5a", Figure: "TCP pod→remote pod through weft vs same VXLAN, no weft table, conntrack on", Unit: "Gbit/s",
			Weft: weft, RefName: "vxlan + empty nat chain", Ref: &vxct, Goal: &Goal{Text: "weft's rules cost ≤ 3 %", MinRatio: 0.97}, Extra: extra,
			Note: "reference has an empty nat chain so conntrack/NAT hooks run as on any Kubernetes node"},
		{ID: "5a'", Figure: "TCP through weft vs same VXLAN with no netfilter at all", Unit: "Gbit/s",
			Weft: weft, RefName: "vxlan, no rules", Ref: &vx, Extra: extra,
			Note: "includes the cost of conntrack itself, which weft's nat chain turns on in an otherwise empty namespace"},
		{ID: "5b", Figure: "TCP over weft's VXLAN (no rules) vs plain routing without VXLAN", Unit: "Gbit/s",
			Weft: vx, RefName: "plain routing", Ref: &plain, Goal: &Goal{Text: "VXLAN ≥ 70 % of plain", MinRatio: 0.7}, Extra: extra},
	}, nil
}
