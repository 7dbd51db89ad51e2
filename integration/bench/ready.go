package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/client"
	nftbackend "github.com/weft-net/weft/pkg/packetfilter/nftables"
)

// TimeToReady is figure 2: vxlan.calico exists without an address; the
// address is added (time taken just before the netlink call) and the clock
// stops when the daemon says ready with that CNI IP, every route of table
// 240 has it as src, and the host-network SNAT to it is in `ip weft`. The
// anchor is Submariner's route agent, which retries discovery for ~129 s
// and then never again; the physical floor is the netlink event latency.
func TimeToReady(ctx context.Context, env *harness.Env, o Options) ([]Row, error) {
	trials := o.pick(50, 10)
	n, cfg, err := oneNode(env, harness.LayoutCalico)
	if err != nil {
		return nil, err
	}
	cfg["packetFilter"] = "nftables"
	// Readiness waits for the durable record of the CNI interface (an
	// fsync): measure it on tmpfs, as in production.
	if err := stateOnTmpfs(env, cfg); err != nil {
		return nil, err
	}
	table := 240
	for _, c := range [][]string{
		{"link", "add", harness.CalicoDevice, "type", "vxlan", "id", "4096", "dstport", "4789", "local", n.IP.String(), "dev", "eth0", "nolearning"},
		{"link", "set", harness.CalicoDevice, "mtu", "1450"},
		{"link", "set", harness.CalicoDevice, "up"},
	} {
		if _, err := n.Exec("ip", c...); err != nil {
			return nil, err
		}
	}
	if _, err := n.StartWeftd(ctx, cfg.MustYAML()); err != nil {
		return nil, err
	}
	c := client.New(n.Socket, 2*time.Second)
	var took []time.Duration
	var reconcileMs []float64
	var lastRec float64
	var polls int
	var pollTime time.Duration
	err = n.NS.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(harness.CalicoDevice)
		if err != nil {
			return err
		}
		// A lasting connection: closing a netfilter socket waits for an
		// RCU grace period, which would blur the measurement.
		nft, err := nftables.New(nftables.AsLasting())
		if err != nil {
			return err
		}
		defer nft.CloseLasting()
		// converged reports whether ip is fully in force, and when the
		// daemon said so: the kernel check after the status answer is
		// slower than the daemon and must not count against it.
		converged := func(ip netip.Addr) (bool, time.Time, error) {
			st, err := c.Status(ctx)
			at := time.Now()
			if err != nil {
				return false, at, err
			}
			if !st.Ready || st.CNIInterface == nil || st.CNIInterface.IP != ip.String() {
				return false, at, nil
			}
			if st.LastReconcile != nil {
				lastRec = st.LastReconcile.DurationMs
			}
			rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
			if err != nil {
				return false, at, err
			}
			if len(rs) == 0 {
				return false, at, nil
			}
			for _, r := range rs {
				if !r.Src.Equal(net.IP(ip.AsSlice())) {
					return false, at, nil
				}
			}
			ok, err := hasSNAT(nft, ip)
			return ok, at, err
		}
		for i := 0; i < trials; i++ {
			ip := netip.AddrFrom4([4]byte{10, 1, 1, byte(10 + i)})
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}}
			t0 := time.Now()
			if err := netlink.AddrAdd(link, addr); err != nil {
				return fmt.Errorf("trial %d: add %s: %w", i, ip, err)
			}
			deadline := t0.Add(10 * time.Second)
			for {
				p0 := time.Now()
				ok, at, err := converged(ip)
				if err != nil {
					return fmt.Errorf("trial %d: %w", i, err)
				}
				polls++
				pollTime += at.Sub(p0)
				if ok {
					took = append(took, at.Sub(t0))
					reconcileMs = append(reconcileMs, lastRec)
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("trial %d: not ready 10 s after %s appeared", i, ip)
				}
				time.Sleep(time.Millisecond)
			}
			if err := netlink.AddrDel(link, addr); err != nil {
				return fmt.Errorf("trial %d: remove %s: %w", i, ip, err)
			}
			// Let the daemon see the interface go before the next trial.
			wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			for wctx.Err() == nil {
				st, err := c.Status(wctx)
				if err == nil && (st.CNIInterface == nil || st.CNIInterface.IP != ip.String()) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s := Summarize(Ms(took))
	res := float64(pollTime) / float64(polls) / 1e6
	return []Row{{
		ID: "2", Figure: "time to ready after the CNI interface gets its address", Unit: "ms",
		Weft: s, RefName: "Submariner: retries ~129 s, then never",
		Goal:  &Goal{Text: "p50 ≤ 20 ms, p99 ≤ 100 ms", Max: 20},
		Cond:  ptr(s.P99 <= 100),
		Extra: map[string]any{"p99": s.P99, "trials": trials, "pollMs": res, "lastReconcileMs": Summarize(reconcileMs)},
		Note: fmt.Sprintf("p99 %s ms; resolution ≈ %.2f ms (one status round trip per poll, 1 ms apart; routes and SNAT verified in the kernel once status says ready)",
			fmtNum(s.P99), res+1) + fmt.Sprintf("; the reconcile that made it ready took %s ms (median)", fmtNum(Summarize(reconcileMs).Median)),
	}}, nil
}

func ptr[T any](v T) *T { return &v }

// hasSNAT reports whether weft's nat chain snats to ip.
func hasSNAT(c *nftables.Conn, ip netip.Addr) (bool, error) {
	t := &nftables.Table{Name: nftbackend.TableName, Family: nftables.TableFamilyIPv4}
	rules, err := c.GetRules(t, &nftables.Chain{Name: nftbackend.ChainNAT, Table: t})
	if err != nil {
		return false, nil // table not there yet
	}
	want := ip.AsSlice()
	for _, r := range rules {
		for i, e := range r.Exprs {
			im, ok := e.(*expr.Immediate)
			if !ok || !bytes.Equal(im.Data, want) || i+1 >= len(r.Exprs) {
				continue
			}
			if _, ok := r.Exprs[i+1].(*expr.NAT); ok {
				return true, nil
			}
		}
	}
	return false, nil
}
