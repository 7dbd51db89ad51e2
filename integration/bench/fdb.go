package bench

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/dataplane"
)

// gatewayState is a gateway's netlink state with n other nodes of its
// cluster: one VXLAN device and a static FDB + neighbour entry per node.
func gatewayState(n int) dataplane.State {
	own := netip.MustParseAddr("192.168.0.1")
	vtep := func(u netip.Addr) netip.Addr { b := u.As4(); b[0] = 240; return netip.AddrFrom4(b) }
	peers := make([]dataplane.Peer, n)
	for i := range peers {
		// 192.168.0.2 … : the host bits under /8 give distinct VTEPs.
		v := uint32(192)<<24 | uint32(168)<<16 | uint32(i+2)
		u := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		peers[i] = dataplane.Peer{VTEP: vtep(u), MAC: dataplane.MACFor(vtep(u)), Underlay: u}
	}
	return dataplane.State{
		Devices: []dataplane.VXLAN{{
			Name: "vx-weft", VNI: 100, Port: 4800, Underlay: "eth0", LocalIP: own,
			Addr: netip.PrefixFrom(vtep(own), 8), MAC: dataplane.MACFor(vtep(own)), Peers: peers,
		}},
		Table: 240, RulePriority: 240,
		LooseRPFilter: []string{"vx-weft", "eth0"},
	}
}

// GatewayFDB is figure 4: the gateway's FDB and neighbours for N nodes of
// cluster.nodes, full apply (from nothing) and one node added, through the
// netlink data plane in a throwaway namespace. There is no reference
// implementation to run here: the figure stands against its goal.
func GatewayFDB(ctx context.Context, env *harness.Env, o Options) ([]Row, error) {
	sizes := []int{10, 100, 1000, 5000}
	fullReps, incReps := 5, 10
	if o.Quick {
		sizes, fullReps, incReps = []int{10, 100, 1000}, 2, 4
	}
	var rows []Row
	for _, n := range sizes {
		nsx, err := env.NewNS("weft-bench")
		if err != nil {
			return rows, err
		}
		for _, c := range [][]string{
			{"link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"},
			{"addr", "add", "192.168.0.1/16", "dev", "eth0"},
			{"link", "set", "eth0p", "up"},
			{"link", "set", "eth0", "up"},
		} {
			if _, err := nsx.Exec("ip", c...); err != nil {
				return rows, err
			}
		}
		m := dataplane.New(nil)
		base, plus := gatewayState(n), gatewayState(n+1)
		var full, inc []time.Duration
		var fullChanges, addChanges, delChanges int
		err = nsx.Do(func(ns.NetNS) error {
			for r := 0; r < fullReps; r++ {
				if err := m.Cleanup(ctx, []string{"vx-weft"}, 240, 240); err != nil {
					return err
				}
				t0 := time.Now()
				st, err := m.ApplyStats(ctx, base)
				if err != nil {
					return fmt.Errorf("full apply %d nodes: %w", n, err)
				}
				full = append(full, time.Since(t0))
				fullChanges = st.Changes
			}
			for r := 0; r < incReps; r++ {
				t0 := time.Now()
				st, err := m.ApplyStats(ctx, plus)
				if err != nil {
					return fmt.Errorf("add node on %d: %w", n, err)
				}
				inc = append(inc, time.Since(t0))
				addChanges = st.Changes
				// Back to n, timed too: removing a node is the same diff.
				t0 = time.Now()
				if st, err = m.ApplyStats(ctx, base); err != nil {
					return fmt.Errorf("remove node on %d: %w", n, err)
				}
				inc = append(inc, time.Since(t0))
				delChanges = st.Changes
			}
			return nil
		})
		if err != nil {
			return rows, err
		}
		var fg *Goal
		ig := &Goal{Text: "≤ 5 ms", Max: 5}
		if n == 5000 {
			fg = &Goal{Text: "≤ 1 s", Max: 1000}
		}
		extra := map[string]any{"fullChanges": fullChanges, "addChanges": addChanges, "removeChanges": delChanges}
		onlyChanged := addChanges == 2 && delChanges == 2 // one FDB + one neighbour entry
		rows = append(rows,
			Row{ID: fmt.Sprintf("4f-%d", n), Figure: fmt.Sprintf("gateway FDB full apply, %d nodes", n), Unit: "ms",
				Weft: Summarize(Ms(full)), RefName: "(no reference)", Goal: fg, Extra: extra},
			Row{ID: fmt.Sprintf("4i-%d", n), Figure: fmt.Sprintf("gateway FDB one node added/removed on %d", n), Unit: "ms",
				Weft: Summarize(Ms(inc)), RefName: "(no reference)", Goal: ig, Cond: &onlyChanged, Extra: extra,
				Note: "add and remove samples pooled; Cond = exactly one FDB + one neighbour write each"},
		)
	}
	return rows, nil
}
