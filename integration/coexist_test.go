package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
)

// Coexistence with tools that write native nftables: Netbird puts native
// expressions into the iptables-nft `ip filter FORWARD` chain (which makes
// iptables 1.8.x report the table incompatible, kube-router's crash), and
// kube-proxy's nftables mode owns an `ip kube-proxy` table. weft must work
// next to both, touch neither, and report what it cannot parse.

// cxNative builds the foreign tables through github.com/google/nftables,
// as Netbird and kube-proxy do, in n's namespace.
func cxNative(n *harness.Node) error {
	return n.NS.Do(func(ns.NetNS) error {
		c, err := nftables.New()
		if err != nil {
			return fmt.Errorf("nftables conn: %w", err)
		}
		// The table and chain as iptables-nft creates them, with the
		// native rules Netbird adds.
		filter := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "filter"})
		accept := nftables.ChainPolicyAccept
		fwd := c.AddChain(&nftables.Chain{
			Name: "FORWARD", Table: filter, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
		})
		c.AddRule(&nftables.Rule{Table: filter, Chain: fwd, Exprs: []expr.Any{
			// ct state established,related accept
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
				Xor:  make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}})
		wt0 := make([]byte, unix.IFNAMSIZ)
		copy(wt0, "wt0")
		c.AddRule(&nftables.Rule{Table: filter, Chain: fwd, Exprs: []expr.Any{
			// iifname "wt0" accept
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: wt0},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}})

		// kube-proxy (nftables mode) masquerades what its service chains
		// marked, at srcnat.
		kp := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "kube-proxy"})
		post := c.AddChain(&nftables.Chain{
			Name: "nat-postrouting", Table: kp, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept,
		})
		c.AddRule(&nftables.Rule{Table: kp, Chain: post, Exprs: []expr.Any{
			// meta mark & 0x4000 == 0x4000 masquerade fully-random
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binary.NativeEndian.AppendUint32(nil, 0x4000), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, 0x4000)},
			&expr.Masq{FullyRandom: true},
		}})
		if err := c.Flush(); err != nil {
			return fmt.Errorf("write foreign nftables rules: %w", err)
		}
		return nil
	})
}

// cxSnapshot is what weft must not change on a node.
type cxSnapshot struct {
	filter, kubeProxy string
	tables            []string
}

func cxTake(t *testing.T, n *harness.Node) cxSnapshot {
	t.Helper()
	return cxSnapshot{
		filter:    dpExec(t, n, "nft", "-a", "list", "table", "ip", "filter"),
		kubeProxy: dpExec(t, n, "nft", "-a", "list", "table", "ip", "kube-proxy"),
		tables:    cxTables(t, n),
	}
}

func cxTables(t *testing.T, n *harness.Node) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(dpExec(t, n, "nft", "list", "tables"), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// cxIptablesSave runs the host's iptables-save (iptables-nft on Debian 12)
// in n; it must exit 0 even next to the foreign rules.
func cxIptablesSave(t *testing.T, n *harness.Node) string {
	t.Helper()
	out, err := n.Exec("iptables-save")
	if err != nil {
		t.Fatalf("%s: iptables-save failed: %v", n.Name, err)
	}
	return out
}

func cxIncompatible(save, table string) bool {
	return strings.Contains(save, "Table `"+table+"' is incompatible")
}

func TestCoexistForeignNativeRules(t *testing.T) {
	dpForBackends(t, func(t *testing.T, backend string) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		w := dpNew(t, backend)
		w.calicoDevices(t)
		nodes := w.nodes()
		t.Logf("host %s", strings.TrimSpace(dpExec(t, nodes[0], "iptables-save", "--version")))
		before := map[string]cxSnapshot{}
		for _, n := range nodes {
			if err := cxNative(n); err != nil {
				t.Fatalf("%s: %v", n.Name, err)
			}
			before[n.Name] = cxTake(t, n)
			// The foreign rules are the kind iptables cannot parse;
			// otherwise this test proves nothing.
			if save := cxIptablesSave(t, n); !cxIncompatible(save, "filter") {
				t.Fatalf("%s: iptables-save does not report the foreign filter table incompatible:\n%s", n.Name, save)
			}
		}

		for _, n := range nodes {
			w.start(t, ctx, n)
		}
		// nftables: nothing stands in the way, the node becomes ready.
		// iptables: the filter table cannot be programmed (weft's accepts
		// there are informative); the rest must be in place and the
		// foreign table reported as a condition.
		wctx, wcancel := context.WithTimeout(ctx, dpConverge)
		for _, n := range nodes {
			wd := w.weftd[n.Name]
			st, err := wd.WaitFor(wctx, func(s api.Status) bool {
				if backend == "nftables" {
					return s.Ready
				}
				return dpHasCond(s, "CNIInterfaceReady", true) && dpHasCond(s, "DataplaneReady", true) &&
					cxCond(s, "ForeignRulesUnparsable", "table filter") != nil
			})
			if err != nil {
				wcancel()
				t.Fatalf("%v\nlog tail:\n%s", err, wd.LogTail(3000))
			}
			if backend == "iptables" {
				c := cxCond(st, "ForeignRulesUnparsable", "table filter")
				t.Logf("%s: ready=%v; condition %s: %s (fix: %s)", n.Name, st.Ready, c.Type, c.Message, c.Fix)
				if c.Fix == "" {
					t.Errorf("%s: condition without a fix: %+v", n.Name, c)
				}
			}
		}
		wcancel()

		// The data plane works: pod to pod across clusters, both ways,
		// with pod IPs kept.
		p1 := dpPod(t, ctx, w.tc.C1.Nodes[1], "p1")
		p2 := dpPod(t, ctx, w.tc.C2.Nodes[1], "p2")
		for _, pair := range [][2]*harness.Pod{{p1, p2}, {p2, p1}} {
			from, to := pair[0], pair[1]
			srv, err := harness.ServeTCPEcho(w.env, to.NS, ":5500")
			if err != nil {
				t.Fatal(err)
			}
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			src, err := harness.DialTCP(pctx, from.NS, netip.AddrPortFrom(to.IP, srv.Addr.Port()).String(), []byte("coexist"))
			pcancel()
			if err != nil || src != from.IP {
				t.Errorf("pod %s → pod %s: source seen %s, %v", from.IP, to.IP, src, err)
			}
			_ = srv.Close()
		}

		for _, n := range nodes {
			wd := w.weftd[n.Name]
			if !wd.Running() || syscall.Kill(wd.PID, 0) != nil {
				t.Errorf("%s: weftd (pid %d) is not running:\n%s", n.Name, wd.PID, wd.LogTail(3000))
			}
			after := cxTake(t, n)
			b := before[n.Name]
			if after.filter != b.filter {
				t.Errorf("%s: table ip filter changed:\n--- before\n%s\n--- after\n%s", n.Name, b.filter, after.filter)
			}
			if after.kubeProxy != b.kubeProxy {
				t.Errorf("%s: table ip kube-proxy changed:\n--- before\n%s\n--- after\n%s", n.Name, b.kubeProxy, after.kubeProxy)
			}
			// The only new tables: weft's own (nftables), or the
			// iptables-nft tables weft writes its chains into.
			added := []string{"table ip weft"}
			if backend == "iptables" {
				added = []string{"table ip mangle", "table ip nat"}
			}
			want := slices.Sorted(slices.Values(append(slices.Clone(b.tables), added...)))
			if !slices.Equal(after.tables, want) {
				t.Errorf("%s: tables %q, want %q", n.Name, after.tables, want)
			}

			save := cxIptablesSave(t, n)
			for _, tbl := range []string{"nat", "mangle"} {
				if cxIncompatible(save, tbl) {
					t.Errorf("%s: iptables-save reports weft's table %s incompatible:\n%s", n.Name, tbl, save)
				}
			}
			if !cxIncompatible(save, "filter") {
				t.Errorf("%s: the foreign filter table is no longer reported (did something rewrite it?):\n%s", n.Name, save)
			}
			hasWeft := strings.Contains(save, "WEFT-")
			if backend == "iptables" {
				for _, want := range []string{
					"-A POSTROUTING -m comment --comment weft -j WEFT-POSTROUTING",
					"-A POSTROUTING -m comment --comment weft -j WEFT-MSS",
				} {
					if !strings.Contains(save, want) {
						t.Errorf("%s: iptables-save lacks %q:\n%s", n.Name, want, save)
					}
				}
			} else if hasWeft {
				t.Errorf("%s: nftables backend left WEFT chains in iptables tables:\n%s", n.Name, save)
			}
		}

		// A masquerade in another nft table that does catch cross-cluster
		// traffic (a CNI's outgoing NAT, natOutgoing-style): weft's
		// self-SNAT at srcnat-10 binds the connection's NAT first, so the
		// pod IP survives.
		t.Run("foreign-masquerade", func(t *testing.T) {
			if backend == "iptables" {
				// weft's iptables chain makes an identity NAT binding
				// (NETMAP to 0.0.0.0/0), so the first NAT binding is
				// weft's — when its chain runs first. iptables-nft's nat
				// POSTROUTING sits at priority srcnat (100), and the kernel
				// runs a NAT chain registered later at the same priority
				// BEFORE the older ones; this foreign chain is added after
				// weft's, so it binds first. Only the nftables backend
				// (srcnat - 10) is immune; iptables mode may only write
				// through the iptables binary, which cannot pick a priority.
				t.Skip("limitation of iptables mode: a foreign nft NAT chain at priority srcnat registered after iptables' own runs first")
			}
			for _, n := range nodes {
				dpExec(t, n, "nft", "add chain ip kube-proxy cni-masq { type nat hook postrouting priority srcnat; } ; "+
					"add rule ip kube-proxy cni-masq ip saddr 10.0.0.0/8 oifname != lo masquerade")
			}
			p3 := dpPod(t, ctx, w.tc.C2.Nodes[1], "p3")
			srv, err := harness.ServeTCPEcho(w.env, p3.NS, ":5501")
			if err != nil {
				t.Fatal(err)
			}
			src, err := harness.DialTCP(ctx, p1.NS, netip.AddrPortFrom(p3.IP, srv.Addr.Port()).String(), []byte("masq"))
			if err != nil || src != p1.IP {
				t.Errorf("pod %s → pod %s next to a foreign masquerade: source seen %s, %v", p1.IP, p3.IP, src, err)
			}
		})
	})
}

// cxCond returns the condition of type typ whose message mentions what.
func cxCond(st api.Status, typ, what string) *api.Condition {
	for i, c := range st.Conditions {
		if c.Type == typ && strings.Contains(c.Message, what) {
			return &st.Conditions[i]
		}
	}
	return nil
}
