package reliability

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
)

// Promise 8: foreign packet-filter objects that would drop weft's traffic
// are detected and reported with a fix, and never touched.
func TestCoexistForeignDrops(t *testing.T) {
	cases := []struct {
		name, backend string
		setup         []string // sh scripts run in the node before weftd
		list          string   // prints the foreign objects (must not change)
		condType      string
		reason        string
	}{
		{
			name: "nft inet table forward policy drop", backend: "nftables",
			setup:    []string{`nft add table inet fw && nft add chain inet fw forward '{ type filter hook forward priority 0; policy drop; }' && nft add rule inet fw forward ct state established accept`},
			list:     "nft list table inet fw",
			condType: "ForeignDropPolicy", reason: "ForwardPolicyDrop",
		},
		{
			name: "nft ip table input policy drop", backend: "nftables",
			setup:    []string{`nft add table ip hostfw && nft add chain ip hostfw input '{ type filter hook input priority 0; policy drop; }' && nft add rule ip hostfw input iifname lo accept`},
			list:     "nft list table ip hostfw",
			condType: "ForeignDropPolicy", reason: "InputPolicyDrop",
		},
		{
			name: "iptables-legacy FORWARD DROP (Docker-like)", backend: "iptables",
			setup: []string{`iptables-legacy -P FORWARD DROP && iptables-legacy -N DOCKER-USER && iptables-legacy -A FORWARD -j DOCKER-USER`},
			// weft's own WEFT chains and jumps may appear; nothing else may change.
			list:     `iptables-legacy-save -t filter | grep -v -e '^#' -e WEFT | sed 's/\[[0-9]*:[0-9]*\]//'`,
			condType: "ForeignForwardDrop", reason: "ForwardPolicyDrop",
		},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			defer run.sum.Track(t, PCoexist)()
			if _, err := exec.LookPath(strings.Fields(c.setup[0])[0]); err != nil {
				t.Skipf("%v", err)
			}
			env := harness.NewTestEnv(t)
			ctx := ctxFor(t, 60*time.Second)
			n, cfg := oneNode(t, env, nodeSpec{backend: c.backend})
			for _, s := range c.setup {
				if out, err := n.Exec("sh", "-c", s); err != nil {
					t.Fatalf("%s: %v: %s", s, err, out)
				}
			}
			before, err := n.Exec("sh", "-c", c.list)
			if err != nil {
				t.Fatal(err)
			}
			w, err := n.StartWeftd(ctx, cfg.MustYAML())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := n.RunPod(ctx, "default", "coexist"); err != nil {
				t.Fatal(err)
			}
			st, err := w.WaitFor(ctx, func(s api.Status) bool {
				_, ok := cond(s, c.condType)
				return ok && s.LastReconcile != nil && s.LastReconcile.Error == ""
			})
			if err != nil {
				t.Fatalf("foreign drop not reported: %v", err)
			}
			got, _ := cond(st, c.condType)
			if got.Status || got.Reason != c.reason || got.Fix == "" || got.Message == "" {
				t.Fatalf("condition %+v, want %s false, reason %s, with a message and a fix", got, c.condType, c.reason)
			}
			time.Sleep(1500 * time.Millisecond) // a resync or two
			after, err := n.Exec("sh", "-c", c.list)
			if err != nil || after != before {
				t.Fatalf("weft touched the foreign objects (%v):\nbefore:\n%s\nafter:\n%s", err, before, after)
			}
			t.Logf("%s: %s — fix: %s", c.condType, got.Message, got.Fix)
		})
	}
}

// A firewalld-like table: owner-flagged (it lives as long as its creator's
// netlink socket and nobody else may change it) with a forward chain whose
// policy is drop. weft reports it, names the owner flag so the operator
// changes the owning daemon's configuration, and never touches it.
func TestCoexistOwnerFlaggedTable(t *testing.T) {
	defer run.sum.Track(t, PCoexist)()
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	n, cfg := oneNode(t, env, nodeSpec{backend: "nftables"})

	// The owner: a lasting netlink connection held by this test process.
	owner, err := nftables.New(nftables.WithNetNSFd(int(n.NS.Fd())), nftables.AsLasting())
	if err != nil {
		t.Fatal(err)
	}
	defer owner.CloseLasting()
	tbl := owner.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "firewalld", Flags: nftables.TableFlagOwner})
	drop := nftables.ChainPolicyDrop
	owner.AddChain(&nftables.Chain{
		Name: "filter_FORWARD", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(10), Policy: &drop,
	})
	if err := owner.Flush(); err != nil {
		t.Skipf("kernel refuses an owner-flagged table: %v", err)
	}
	before, err := n.Exec("nft", "list", "table", "inet", "firewalld")
	if err != nil || !strings.Contains(before, "flags owner") {
		t.Fatalf("owner-flagged table not in place (%v):\n%s", err, before)
	}

	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.RunPod(ctx, "default", "owner"); err != nil {
		t.Fatal(err)
	}
	st, err := w.WaitFor(ctx, func(s api.Status) bool {
		c, ok := cond(s, "ForeignDropPolicy")
		return ok && strings.Contains(c.Message, "firewalld")
	})
	if err != nil {
		t.Fatalf("owner-flagged drop not reported: %v", err)
	}
	got, _ := cond(st, "ForeignDropPolicy")
	if got.Status || !strings.Contains(got.Message, "owner") || got.Fix == "" {
		t.Fatalf("condition %+v: want it to name the owner flag and give a fix", got)
	}
	time.Sleep(1500 * time.Millisecond) // a resync or two
	after, err := n.Exec("nft", "list", "table", "inet", "firewalld")
	if err != nil || after != before {
		t.Fatalf("weft touched the owner-flagged table (%v):\nbefore:\n%s\nafter:\n%s", err, before, after)
	}
	t.Logf("ForeignDropPolicy: %s — fix: %s", got.Message, got.Fix)
	run.sum.Figure(PCoexist, "owner-flagged (firewalld-like) table reported, untouched")
}
