package reliability

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
)

// Promise 4: someone else breaks what weft owns; weft repairs it without a
// restart, and the time to repair is measured. The repaired state must be
// the very state of a clean start (snapshot), not just "something there".
func TestFaultsFromOutside(t *testing.T) {
	defer run.sum.TrackSkip(t, PFaults)() // its cases are subtests; a skip before them counts too
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) { faultsFor(t, backend) })
	}
}

func faultsFor(t *testing.T, backend string) {
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 150*time.Second)
	n, cfg := oneNode(t, env, nodeSpec{backend: backend})
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.RunPod(ctx, "default", "anchor"); err != nil {
		t.Fatal(err)
	}
	st, err := w.WaitReady(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PacketFilter != backend {
		t.Fatalf("packetFilter = %q, want %q", st.PacketFilter, backend)
	}
	time.Sleep(500 * time.Millisecond) // let the first resync settle
	ref := snapshot(n, "cni0")
	check := ref
	if backend == "iptables" { // no nft table is expected then
		check = strings.Replace(check, "## nft\nERROR", "## nft\n", 1)
	}
	if strings.Contains(check, "ERROR") {
		t.Fatalf("clean state incomplete:\n%s", ref)
	}
	pid := w.PID

	sh := func(script string) func() error {
		return func() error {
			if out, err := n.Exec("sh", "-c", script); err != nil {
				return fmt.Errorf("%s: %w: %s", script, err, out)
			}
			return nil
		}
	}
	type fault struct {
		name  string
		do    func() error
		after func() error // what the harness (not weft) restores
	}
	faults := []fault{
		{name: "route table flushed", do: sh("ip route flush table 240")},
		{name: "vx-weft deleted", do: sh("ip link del vx-weft")},
		{name: "rp_filter reset to 1", do: sh("echo 1 > /proc/sys/net/ipv4/conf/vx-weft/rp_filter; echo 1 > /proc/sys/net/ipv4/conf/eth0/rp_filter; echo 1 > /proc/sys/net/ipv4/conf/cni0/rp_filter")},
		{name: "ip rule deleted", do: sh("ip rule del lookup 240")},
		{name: "nft flush ruleset", do: sh("nft flush ruleset")},
	}
	if backend == "nftables" {
		faults = append(faults,
			fault{name: "nft table deleted", do: sh("nft delete table ip weft")},
			fault{name: "nft chains deleted", do: sh(`for c in $(nft -j list chains ip weft | grep -o '"name": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/' | sort -u); do nft flush chain ip weft $c; nft delete chain ip weft $c; done`)},
			fault{name: "nft set flushed", do: sh("nft flush set ip weft remote")},
		)
	} else {
		faults = append(faults,
			fault{name: "WEFT chain flushed", do: sh("iptables -t nat -F WEFT-POSTROUTING")},
			fault{name: "WEFT jump deleted", do: sh("iptables -t nat -D POSTROUTING -m comment --comment weft -j WEFT-POSTROUTING")},
			fault{name: "ipset flushed", do: sh("ipset flush weft-remote")},
		)
	}
	faults = append(faults, fault{
		name: "underlay down and up",
		do:   sh("ip link set eth0 down; sleep 0.3; ip link set eth0 up"),
		// The default route went with the link: the node's, not weft's.
		after: sh(fmt.Sprintf("ip route replace default via %s dev eth0", harness.UnderlayNextHop)),
	})

	var worst time.Duration
	var worstName string
	for _, f := range faults {
		t.Run(strings.ReplaceAll(f.name, " ", "_"), func(t *testing.T) {
			defer run.sum.Track(t, PFaults)()
			start := time.Now()
			if err := f.do(); err != nil {
				t.Fatal(err)
			}
			if f.after != nil {
				if err := f.after(); err != nil {
					t.Fatal(err)
				}
			}
			cctx := ctxFor(t, 20*time.Second)
			d, err := converge(cctx, w, ref, "cni0", start)
			if err != nil {
				t.Fatalf("after %q: %v", f.name, err)
			}
			if w.PID != pid || !w.Running() {
				t.Fatal("weftd restarted")
			}
			t.Logf("%s: repaired in %v", f.name, d.Round(time.Millisecond))
			if d > worst {
				worst, worstName = d, f.name
			}
		})
	}
	run.sum.Figure(PFaults, "%s: worst repair %s (%s)", backend, Ms(worst), worstName)

	// An invalid config file replaces the good one: the last good config
	// stays in force, the error is in status, nothing is touched.
	t.Run("invalid_config", func(t *testing.T) {
		defer run.sum.Track(t, PFaults)()
		good, err := os.ReadFile(w.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(w.ConfigPath, []byte("nodeName: c1-n1\ncluster: {id: c1, podCIDRs: [10.1.0.0/33]}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cctx := ctxFor(t, 15*time.Second)
		st, err := w.WaitFor(cctx, func(s api.Status) bool {
			c, ok := cond(s, "ConfigValid")
			return ok && !c.Status
		})
		if err != nil {
			t.Fatalf("invalid config not reported: %v", err)
		}
		c, _ := cond(st, "ConfigValid")
		if !strings.Contains(c.Message, "podCIDRs") || c.Reason == "" {
			t.Errorf("ConfigValid condition = %+v, want the field path of the error", c)
		}
		time.Sleep(1500 * time.Millisecond) // one resync with the bad file present
		if got := snapshot(n, "cni0"); got != ref {
			t.Fatalf("the data plane changed after an invalid config:\n%s", diffLines(ref, got))
		}
		if !w.Running() {
			t.Fatal("weftd exited on an invalid config")
		}
		if err := os.WriteFile(w.ConfigPath, good, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := w.WaitFor(cctx, func(s api.Status) bool {
			c, ok := cond(s, "ConfigValid")
			return ok && c.Status && s.Ready
		}); err != nil {
			t.Fatalf("good config not taken back: %v", err)
		}
	})
}
