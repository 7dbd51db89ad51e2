package harness

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/config"
)

// fakeCluster builds Cluster values without namespaces: WeftdConfig only
// reads names, addresses and paths.
func fakeCluster(id string, pod, svc string, ipBase byte, nodes int) *Cluster {
	c := &Cluster{ID: id, PodCIDR: netip.MustParsePrefix(pod), ServiceCIDR: netip.MustParsePrefix(svc)}
	for i := 1; i <= nodes; i++ {
		dir := fmt.Sprintf("/tmp/x/%s-n%d", id, i)
		c.Nodes = append(c.Nodes, &Node{
			Name: fmt.Sprintf("%s-n%d", id, i), Cluster: id,
			IP:       netip.AddrFrom4([4]byte{192, 168, ipBase, byte(10 + i)}),
			Dir:      dir,
			Socket:   dir + "/run/weft.sock",
			SpoolDir: dir + "/run/spool",
			StateDir: dir + "/run",
		})
	}
	return c
}

// The configuration the harness generates is one weftd's own parser
// accepts, with the values the harness meant.
func TestWeftdConfigParses(t *testing.T) {
	c1 := fakeCluster("c1", "10.1.0.0/16", "10.101.0.0/16", 10, 3)
	c2 := fakeCluster("c2", "10.2.0.0/16", "10.102.0.0/16", 20, 2)
	for _, tc := range []struct {
		name     string
		node     *Node
		gateway  *Node
		remoteGW map[string]*Node
		wantGWIP string
	}{
		{"gateway", c1.Nodes[0], c1.Nodes[0], nil, "192.168.20.11"},
		{"non-gateway, remote gateway chosen", c1.Nodes[2], c1.Nodes[0], map[string]*Node{"c2": c2.Nodes[1]}, "192.168.20.12"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := c1.WeftdConfig(tc.node, tc.gateway, []*Cluster{c2}, tc.remoteGW).MustYAML()
			cfg, err := config.Parse(y)
			if err != nil {
				t.Fatalf("weftd config refused: %v\n%s", err, y)
			}
			if cfg.NodeName != tc.node.Name || cfg.NodeIP != tc.node.IP.String() || cfg.Socket != tc.node.Socket ||
				cfg.SpoolDir != tc.node.SpoolDir || cfg.StateDir != tc.node.StateDir || cfg.Metrics() != "" {
				t.Errorf("identity/paths not carried: %+v", cfg)
			}
			if cfg.Cluster.Gateway != tc.gateway.Name || len(cfg.Cluster.Nodes) != 3 || cfg.IsGateway() != (tc.node == tc.gateway) {
				t.Errorf("cluster: %+v", cfg.Cluster)
			}
			if len(cfg.Remotes) != 1 || cfg.Remotes[0].GatewayIP != tc.wantGWIP || cfg.Remotes[0].PodCIDRs[0] != "10.2.0.0/16" {
				t.Errorf("remotes: %+v", cfg.Remotes)
			}
		})
	}
}

// Process control against the real weftd: start, status over the CLI,
// SIGTERM, restart, SIGKILL. Skips until bin/weftd is built.
func TestWeftdLifecycle(t *testing.T) {
	env := newEnv(t)
	if !env.HasBin("weftd") {
		t.Skipf("%s not built (make build)", env.Bin("weftd"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	u := must(NewUnderlay(env))(t)
	c := must(NewCluster(env, u, ClusterSpec{ID: "c1", Nodes: 1, PodCIDR: "10.1.0.0/16",
		ServiceCIDR: "10.101.0.0/16", NodeIPBase: "192.168.10.0", CNI: CNIOptions{Layout: LayoutFlannel, Weft: true}}))(t)
	n := c.Nodes[0]
	cfg := c.WeftdConfig(n, n, nil, nil).MustYAML()

	w := must(n.StartWeftd(ctx, cfg))(t)
	st, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Node == n.Name })
	if err != nil {
		t.Fatal(err)
	}
	if st.Cluster != "c1" || st.Role != "gateway" {
		t.Errorf("status: %+v", st)
	}
	if err := w.Stop(); err != nil {
		t.Errorf("SIGTERM: %v\n%s", err, w.LogTail(2000))
	}
	if w.Running() {
		t.Error("running after Stop")
	}

	w2 := must(n.StartWeftd(ctx, w.Config))(t)
	if w2.PID == w.PID {
		t.Error("restart reused the PID")
	}
	if _, err := w2.WaitFor(ctx, func(s api.Status) bool { return s.Node == n.Name }); err != nil {
		t.Fatal(err)
	}
	// The weft entry of the conflist reaches this daemon: an ADD shows up
	// as an attachment.
	if _, err := n.RunPod(ctx, "default", "p1"); err != nil {
		t.Fatal(err)
	}
	if _, err := w2.WaitFor(ctx, func(s api.Status) bool { return s.Attachments == 1 }); err != nil {
		t.Error(err)
	}
	if err := w2.Kill(); err != nil {
		t.Error(err)
	}
	if _, err := n.WeftdStatus(ctx, w2.Socket); err == nil {
		t.Error("status answered after SIGKILL")
	}

	// An invalid configuration: weftd stays up on the file's socket, not
	// ready, and its status names the problem. The file names the node's
	// own spool and state directories: without them weftd would fall back
	// to the host's /run/weft.
	w3, err := n.StartWeftd(ctx, []byte(fmt.Sprintf("socket: %s\nspoolDir: %s\nstateDir: %s\ncluster: {id: c1, podCIDRs: [10.1.0.0/33]}\n", n.Socket, n.SpoolDir, n.StateDir)))
	if err != nil {
		t.Fatalf("weftd with an invalid configuration did not come up: %v", err)
	}
	st, err = w3.Status(ctx)
	if err != nil || st.Ready || st.Config == nil || st.Config.Valid || !strings.Contains(fmt.Sprint(st.Config.Problems), "10.1.0.0/33") {
		t.Errorf("status with an invalid configuration: %+v %+v (%v)", st, st.Config, err)
	}
	if err := w3.Stop(); err != nil {
		t.Error(err)
	}
}

// The dual-stack and IPv6-only configurations the harness generates are
// accepted by weftd's parser, with the VXLAN underlay of the plan: IPv4
// in dual stack, IPv6 (nodes, cable and nodeIP6) in IPv6 only.
func TestWeftdConfigFamilies(t *testing.T) {
	for _, fam := range []Family{FamilyDual, FamilyIPv6} {
		t.Run(fam.String(), func(t *testing.T) {
			cs := []*Cluster{
				fakeCluster("c1", "10.1.0.0/16", "10.101.0.0/16", 10, 2),
				fakeCluster("c2", "10.2.0.0/16", "10.102.0.0/16", 20, 2),
			}
			for i, c := range cs {
				c.Family = fam
				c.PodCIDR6 = netip.MustParsePrefix(fmt.Sprintf("fd00:%d::/56", i+1))
				c.ServiceCIDR6 = netip.MustParsePrefix(fmt.Sprintf("fd00:10%d::/112", i+1))
				for j, n := range c.Nodes {
					n.IP6, n.PodCIDR6 = Underlay6For(n.IP), subnet6(c.PodCIDR6, j+1)
					if fam == FamilyIPv6 {
						n.IP = netip.Addr{}
					}
				}
				if fam == FamilyIPv6 {
					c.PodCIDR, c.ServiceCIDR = netip.Prefix{}, netip.Prefix{}
				}
			}
			n := cs[0].Nodes[1]
			y := cs[0].WeftdConfig(n, n, cs[1:], nil).MustYAML()
			cfg, err := config.Parse(y)
			if err != nil {
				t.Fatalf("weftd config refused: %v\n%s", err, y)
			}
			p := cfg.Parsed
			v6only := fam == FamilyIPv6
			if p.Underlay6 != v6only || p.Cable6 != v6only || p.NodeIP6 != n.IP6 || p.NodeIP.IsValid() == v6only {
				t.Errorf("underlay: Underlay6 %v Cable6 %v NodeIP %v NodeIP6 %v\n%s", p.Underlay6, p.Cable6, p.NodeIP, p.NodeIP6, y)
			}
			wantPods := 2
			if v6only {
				wantPods = 1
			}
			if len(p.PodCIDRs) != wantPods || p.PodCIDRs[len(p.PodCIDRs)-1] != cs[0].PodCIDR6 ||
				len(p.Remotes) != 1 || len(p.Remotes[0].PodCIDRs) != wantPods || len(p.Remotes[0].ServiceCIDRs) != wantPods {
				t.Errorf("CIDRs: local %v, remotes %+v", p.PodCIDRs, p.Remotes)
			}
			if v6only && p.Remotes[0].GatewayIP != cs[1].Nodes[0].IP6 || !v6only && p.Remotes[0].GatewayIP != cs[1].Nodes[0].IP {
				t.Errorf("remote gateway %v", p.Remotes[0].GatewayIP)
			}
			if got := subnet6(cs[0].PodCIDR6, 3); got.String() != "fd00:1:0:3::/64" {
				t.Errorf("node 3's IPv6 pod subnet %s", got)
			}
			if got := Underlay6For(netip.MustParseAddr("192.168.10.11")); got.String() != "fd00:ff::c0a8:a0b" {
				t.Errorf("IPv6 underlay address %s", got)
			}
		})
	}
}
