package integration

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
)

// The real weftd with a dual-stack file, on a gateway node, per backend:
// it discovers the CNI interface's IPv6 address, becomes ready, and
// programs the IPv6 half next to the IPv4 one — the remote's IPv6 CIDR
// routed over the cable with the CNI IPv6 source, the ip -6 rule, the IPv6
// VTEP — and the packet filter's IPv6 objects; status shows both families.
func TestDualStackWeftd(t *testing.T) {
	for _, backend := range dpBackends {
		t.Run(backend, func(t *testing.T) {
			env := harness.NewTestEnv(t)
			if !env.HasBin("weftd") || !env.HasBin("weft") {
				t.Skipf("weft binaries not built in %s (make build)", env.BinDir)
			}
			ctx := ctxFor(t, 60*time.Second)
			n, cfg := handoffNode(t, env, harness.CNIOptions{Layout: harness.LayoutFlannel})
			cl := cfg["cluster"].(map[string]any)
			cl["podCIDRs"] = []string{"10.1.0.0/16", "fd00:1::/56"}
			for _, nd := range cl["nodes"].([]any) {
				nd.(map[string]any)["ip6"] = "fd00:10::11"
			}
			cfg["remotes"] = []any{map[string]any{
				"id": "c2", "podCIDRs": []string{"10.2.0.0/16", "fd00:2::/56"}, "gatewayIP": "192.168.20.11",
			}}
			cfg["packetFilter"] = backend
			// The primary CNI's part: cni0 (made by the first pod) with an
			// IPv6 gateway address, IPv6 forwarding on.
			pod, err := n.NewPod("default", "ds-0")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := n.AttachCNITool(ctx, pod); err != nil {
				t.Fatal(err)
			}
			cni6 := netip.MustParseAddr("fd00:1:0:1::1")
			for _, c := range [][]string{
				{"ip", "-6", "addr", "add", "fd00:10::11/64", "dev", "eth0", "nodad"},
				{"ip", "-6", "addr", "add", cni6.String() + "/64", "dev", "cni0", "nodad"},
				{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
			} {
				if out, err := n.Exec(c[0], c[1:]...); err != nil {
					t.Fatalf("%v: %v %s", c, err, out)
				}
			}
			w, err := n.StartWeftd(ctx, cfg.MustYAML())
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := dpWaitUntil(20*time.Second, func() bool {
				st, err := w.Status(ctx)
				return err == nil && st.Ready && st.CNIInterface != nil && st.CNIInterface.IP6 == cni6.String()
			}); !ok {
				st, _ := w.Status(ctx)
				t.Fatalf("not ready with the IPv6 CNI address: %+v", st)
			}
			st, _ := w.Status(ctx)
			t.Logf("cniInterface %+v", *st.CNIInterface)
			for _, c := range []struct {
				cmd  []string
				want []string
			}{
				{[]string{"ip", "-6", "route", "show", "table", "240"}, []string{"fd00:2::/56 via fd57:6566:7400:1:0:0:c0a8:140b dev vx-weft-cable proto 247 src " + cni6.String()}},
				{[]string{"ip", "route", "show", "table", "240"}, []string{"10.2.0.0/16 via 241.168.20.11 dev vx-weft-cable proto 247 src 10.1.1.1"}},
				{[]string{"ip", "-6", "rule", "show"}, []string{"240:\tfrom all lookup 240 proto 247"}},
				{[]string{"ip", "-6", "addr", "show", "dev", "vx-weft-cable"}, []string{"fd57:6566:7400:1:0:0:c0a8:a0b/96"}},
			} {
				out, err := n.Exec(c.cmd[0], c.cmd[1:]...)
				if err != nil {
					t.Fatalf("%v: %v", c.cmd, err)
				}
				for _, w := range c.want {
					if !strings.Contains(out, w) && !strings.Contains(out, strings.ReplaceAll(w, "fd57:6566:7400:1:0:0:", "fd57:6566:7400:1::")) {
						t.Errorf("%v: missing %q in\n%s", c.cmd, w, out)
					}
				}
			}
			pf := map[string][]string{
				"nftables": {"nft", "list", "table", "ip6", "weft"},
				"iptables": {"ip6tables-save", "-t", "nat"},
			}[backend]
			out, err := n.Exec(pf[0], pf[1:]...)
			if err != nil || !strings.Contains(out, cni6.String()) {
				t.Errorf("%v: no IPv6 host SNAT to %s (%v):\n%s", pf, cni6, err, out)
			}
			human, _, _ := n.WeftdCommand(ctx, "status", "--socket", w.Socket)
			if !strings.Contains(string(human), fmt.Sprintf("CNI IPv6       cni0 %s", cni6)) {
				t.Errorf("weftd status lacks the IPv6 line:\n%s", human)
			}
		})
	}
}
