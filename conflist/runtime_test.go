package conflist_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/weft-net/weft/conflist"
	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/spool"
)

// withPortmap renders the harness node's conflist for layout and adds
// portmap after the primary plugin, giving the shape of Calico's (ptp
// standing in for calico, 1.0.0) and flannel's (bridge for flannel, 0.3.1)
// real conflists with plugins that run here.
func withPortmap(t *testing.T, n *harness.Node, layout harness.Layout) []byte {
	t.Helper()
	b, err := n.Conflist(harness.CNIOptions{Layout: layout})
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	doc["plugins"] = append(doc["plugins"].([]any), map[string]any{
		"type": "portmap", "snat": true, "capabilities": map[string]any{"portMappings": true},
	})
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// install-cni's result is a chain the real runtime path accepts: libcni
// parses it and cnitool ADDs a pod through primary → portmap → weft (the
// daemon is away, so weft spools the event and ADD succeeds with
// failPolicy open), then DELs it; uninstall restores the original bytes.
func TestCNIToolThroughInstalledConflist(t *testing.T) {
	env := harness.NewTestEnv(t)
	if !env.HasBin("weft") {
		t.Skipf("%s not built (make build)", env.Bin("weft"))
	}
	if _, err := os.Stat(env.Tool("portmap")); err != nil {
		t.Skipf("portmap not built (make tools): %v", err)
	}
	u, err := harness.NewUnderlay(env)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		layout  harness.Layout
		ip      string
		podCIDR string
		version string
	}{
		{harness.LayoutCalico, "192.168.50.11", "10.5.1.0/24", "1.0.0"},
		{harness.LayoutFlannel, "192.168.50.12", "10.5.2.0/24", "0.3.1"},
	}
	for _, tt := range tests {
		t.Run(string(tt.layout), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			n, err := u.AddNode(harness.NodeOptions{
				Name: "ic-" + string(tt.layout), Cluster: "ic", IP: netip.MustParseAddr(tt.ip),
				PodCIDR: netip.MustParsePrefix(tt.podCIDR), CNI: harness.CNIOptions{Layout: tt.layout},
			})
			if err != nil {
				t.Fatal(err)
			}
			orig := withPortmap(t, n, tt.layout)
			if err := os.WriteFile(n.ConflistPath(), orig, 0o644); err != nil {
				t.Fatal(err)
			}
			binDir := filepath.Join(n.Dir, "cni-bin")
			w := n.WeftEntry()
			in := conflist.New(conflist.Options{
				ConfDir: n.ConfDir, BinDir: binDir, PluginSource: env.Bin("weft"),
				Entry: conflist.Entry{Socket: n.Socket, SpoolDir: n.SpoolDir, FailPolicy: "open",
					Timeout: "2s", LogFile: w["logFile"].(string)},
			})
			res, err := in.Install(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if res.Primary != n.ConflistPath() {
				t.Errorf("primary %s, want %s", res.Primary, n.ConflistPath())
			}
			list, err := libcni.ConfListFromFile(n.ConflistPath())
			if err != nil {
				t.Fatalf("libcni: %v", err)
			}
			last := list.Plugins[len(list.Plugins)-1].Network
			if len(list.Plugins) != 3 || last.Type != "weft" || list.CNIVersion != tt.version {
				t.Fatalf("chain after install: %d plugins, last %q, version %s", len(list.Plugins), last.Type, list.CNIVersion)
			}

			p, err := n.NewPod("default", "installed")
			if err != nil {
				t.Fatal(err)
			}
			ip, err := n.AttachCNITool(ctx, p)
			if err != nil {
				t.Fatalf("cnitool add through the installed conflist: %v", err)
			}
			if !n.PodCIDR.Contains(ip) {
				t.Errorf("pod IP %s not in %s", ip, n.PodCIDR)
			}
			// weft ran: with the daemon away it spooled the ADD.
			if ents, err := os.ReadDir(n.SpoolDir); err != nil || len(ents) == 0 {
				t.Errorf("no spooled event: weft was not in the chain (%v)", err)
			}
			if err := n.DetachCNITool(ctx, p); err != nil {
				t.Errorf("cnitool del: %v", err)
			}

			if _, err := in.Uninstall(); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(n.ConflistPath()); string(b) != string(orig) {
				t.Errorf("uninstall did not restore the original bytes:\n%s", b)
			}
			if _, err := os.Stat(filepath.Join(binDir, conflist.BinaryName)); !os.IsNotExist(err) {
				t.Errorf("binary left after uninstall: %v", err)
			}
		})
	}
}

// install-cni puts weft into a conflist at every cniVersion weft speaks, and
// a pod ADD through it with the real cnitool returns the primary's result in
// that version, unchanged, with weft having read it: before 0.2.0 was
// supported, libcni failed every ADD of a 0.2.0 chain with code 1
// ("incompatible CNI versions") before weft's failPolicy could apply.
func TestCNIToolAtEveryConflistVersion(t *testing.T) {
	env := harness.NewTestEnv(t)
	if !env.HasBin("weft") {
		t.Skipf("%s not built (make build)", env.Bin("weft"))
	}
	u, err := harness.NewUnderlay(env)
	if err != nil {
		t.Fatal(err)
	}
	for i, ver := range []string{"0.2.0", "0.3.1", "1.0.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			opts := harness.CNIOptions{Layout: harness.LayoutFlannel, CNIVersion: ver}
			n, err := u.AddNode(harness.NodeOptions{
				Name: fmt.Sprintf("v%d", i), Cluster: "ver", IP: netip.MustParseAddr(fmt.Sprintf("192.168.51.%d", 11+i)),
				PodCIDR: netip.MustParsePrefix(fmt.Sprintf("10.6.%d.0/24", i+1)), CNI: opts,
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := n.WriteConflist(opts); err != nil {
				t.Fatal(err)
			}
			w := n.WeftEntry()
			in := conflist.New(conflist.Options{
				ConfDir: n.ConfDir, BinDir: filepath.Join(n.Dir, "cni-bin"), PluginSource: env.Bin("weft"),
				Entry: conflist.Entry{Socket: n.Socket, SpoolDir: n.SpoolDir, FailPolicy: "open",
					Timeout: "2s", LogFile: w["logFile"].(string)},
			})
			if _, err := in.Install(ctx); err != nil {
				t.Fatal(err)
			}
			list, err := libcni.ConfListFromFile(n.ConflistPath())
			if err != nil {
				t.Fatal(err)
			}
			if last := list.Plugins[len(list.Plugins)-1].Network; last.Type != "weft" || list.CNIVersion != ver {
				t.Fatalf("after install: last plugin %q, cniVersion %q", last.Type, list.CNIVersion)
			}
			p, err := n.NewPod("default", "v"+ver)
			if err != nil {
				t.Fatal(err)
			}
			ip, err := n.AttachCNITool(ctx, p)
			if err != nil {
				t.Fatalf("cnitool add through a %s chain with weft: %v", ver, err)
			}
			var printed struct {
				CNIVersion string `json:"cniVersion"`
			}
			if err := json.Unmarshal(p.RawResult, &printed); err != nil || printed.CNIVersion != ver {
				t.Errorf("result printed in cniVersion %q (%v), want %s: %s", printed.CNIVersion, err, ver, p.RawResult)
			}
			if !n.PodCIDR.Contains(ip) {
				t.Errorf("pod IP %s not in %s", ip, n.PodCIDR)
			}
			// weft read the result: the event it spooled (the daemon is
			// away) carries the pod's address and gateway.
			entries, _, err := spool.List(n.SpoolDir)
			if err != nil || len(entries) != 1 {
				t.Fatalf("spool holds %d events (%v), want weft's ADD", len(entries), err)
			}
			ev := entries[0].Event
			if len(ev.IPs) == 0 || !strings.HasPrefix(ev.IPs[0].Address, ip.String()+"/") || ev.IPs[0].Gateway == "" {
				t.Errorf("spooled ADD %+v does not carry the pod IP %s and its gateway", ev, ip)
			}
			if err := n.DetachCNITool(ctx, p); err != nil {
				t.Errorf("cnitool del: %v", err)
			}
		})
	}
}
