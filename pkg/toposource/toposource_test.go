package toposource

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/config"
)

const fileCfg = `
nodeName: c1-n2
cluster:
  id: c1
  podCIDRs: [10.1.0.0/16]
  serviceCIDRs: [10.101.0.0/16]
  gateway: c1-n1
  nodes:
    - {name: c1-n1, ip: 192.168.10.11}
    - {name: c1-n2, ip: 192.168.10.12}
remotes:
  - {id: c2, podCIDRs: [10.2.0.0/16], serviceCIDRs: [10.102.0.0/16], gatewayIP: 192.168.20.11, healthCheckIP: 10.2.0.1}
`

const kubeCfg = `
nodeName: c1-n2
cluster:
  id: c1
  podCIDRs: [10.1.0.0/16]
  serviceCIDRs: [10.101.0.0/16]
topology: kubernetes
`

func parse(t *testing.T, doc string) *config.Config {
	t.Helper()
	cfg, err := config.ParseWith([]byte(doc), config.Env{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The file's topology, applied to a kubernetes-mode config, gives the
// desired-state computation exactly what the file gave it.
func TestApplyOfFileTopologyMatchesTheFile(t *testing.T) {
	file := parse(t, fileCfg)
	eff, problems := Apply(parse(t, kubeCfg), FromConfig(file))
	if len(problems) > 0 {
		t.Fatalf("problems: %q", problems)
	}
	if eff.Cluster.Gateway != "c1-n1" || !reflect.DeepEqual(eff.Parsed.Nodes, file.Parsed.Nodes) {
		t.Errorf("gateway %q nodes %+v", eff.Cluster.Gateway, eff.Parsed.Nodes)
	}
	if eff.Parsed.NodeIP != netip.MustParseAddr("192.168.10.12") {
		t.Errorf("node IP %v, want this node's from its Node", eff.Parsed.NodeIP)
	}
	r := eff.Parsed.Remotes
	if len(r) != 1 || r[0].ID != "c2" || r[0].GatewayIP != netip.MustParseAddr("192.168.20.11") || r[0].HealthCheckIP != netip.MustParseAddr("10.2.0.1") ||
		!reflect.DeepEqual(r[0].PodCIDRs, []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16"), netip.MustParsePrefix("10.102.0.0/16")}) {
		t.Errorf("remotes %+v", r)
	}
}

// A dual-stack Node's IPv6 address reaches the desired-state computation
// (the file cannot say it yet: config refuses IPv6 until weft carries it).
func TestApplyCarriesIPv6(t *testing.T) {
	top := Topology{Nodes: []Node{
		{Name: "c1-n1", IP: netip.MustParseAddr("192.168.10.11"), IP6: netip.MustParseAddr("fd00:10::11")},
		{Name: "c1-n2", IP: netip.MustParseAddr("192.168.10.12"), IP6: netip.MustParseAddr("fd00:10::12")},
	}, Gateway: Gateway{Name: "c1-n1"}}
	eff, problems := Apply(parse(t, kubeCfg), top)
	if len(problems) > 0 {
		t.Fatalf("problems: %q", problems)
	}
	want := []config.ParsedNode{
		{Name: "c1-n1", IP: netip.MustParseAddr("192.168.10.11"), IP6: netip.MustParseAddr("fd00:10::11")},
		{Name: "c1-n2", IP: netip.MustParseAddr("192.168.10.12"), IP6: netip.MustParseAddr("fd00:10::12")},
	}
	if !reflect.DeepEqual(eff.Parsed.Nodes, want) || eff.Cluster.Nodes[1].IP6 != "fd00:10::12" {
		t.Errorf("nodes %+v / %+v, want %+v", eff.Parsed.Nodes, eff.Cluster.Nodes, want)
	}
	if eff.Parsed.NodeIP6 != netip.MustParseAddr("fd00:10::12") {
		t.Errorf("node IPv6 %v, want this node's from its Node", eff.Parsed.NodeIP6)
	}
}

// The file's gateway carries its IPv6 address to status.
func TestFromConfigGatewayIPv6(t *testing.T) {
	cfg := parse(t, fileCfg)
	cfg.Parsed.Nodes[0].IP6 = netip.MustParseAddr("fd00:10::11") // as Validate parses ip6
	if g := FromConfig(cfg).Gateway; g.Name != "c1-n1" || g.IP6 != netip.MustParseAddr("fd00:10::11") {
		t.Errorf("gateway %+v, want c1-n1 with fd00:10::11", g)
	}
}

func TestApplyProblems(t *testing.T) {
	cfg := parse(t, kubeCfg)
	top := Topology{
		Nodes: []Node{
			{Name: "c1-n2", IP: netip.MustParseAddr("192.168.10.12")},
			{Name: "c1-n3", IP: netip.MustParseAddr("192.168.10.12")},
		},
		// Not a Node (a nodeSelector that leaves it out): still a peer.
		Gateway: Gateway{Name: "c1-gw", IP: netip.MustParseAddr("192.168.10.1"), From: "Endpoint x/c1"},
		Remotes: []Remote{
			{ID: "c2", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}, HealthCheckIP: netip.MustParseAddr("10.9.0.1"), From: "Endpoint x/c2"},
			{ID: "c3", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.5.0/24")}, From: "Endpoint x/c3"},
			{ID: "c4", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.2.128.0/17")}, From: "Endpoint x/c4"},
		},
	}
	eff, problems := Apply(cfg, top)
	want := []string{
		`nodes "c1-n2" and "c1-n3" both have address 192.168.10.12: "c1-n3" ignored`,
		`remote "c2" (Endpoint x/c2): IPv4 health-check IP 10.9.0.1 is outside its CIDRs: its IPv4 path is not probed`,
		`remote "c3" (Endpoint x/c3): 10.1.5.0/24 overlaps 10.1.0.0/16 of the local cluster: remote ignored`,
		`remote "c4" (Endpoint x/c4): 10.2.128.0/17 overlaps 10.2.0.0/16 of remote "c2": remote ignored`,
	}
	if !reflect.DeepEqual(problems, want) {
		t.Errorf("problems =\n%q\nwant\n%q", problems, want)
	}
	names := []string{}
	for _, n := range eff.Parsed.Nodes {
		names = append(names, n.Name)
	}
	if strings.Join(names, ",") != "c1-n2,c1-gw" {
		t.Errorf("nodes = %v", names)
	}
	if len(eff.Parsed.Remotes) != 1 || eff.Parsed.Remotes[0].ID != "c2" || eff.Parsed.Remotes[0].HealthCheckIP.IsValid() {
		t.Errorf("remotes = %+v", eff.Parsed.Remotes)
	}
	if len(cfg.Parsed.Nodes) != 0 || cfg.Cluster.Gateway != "" {
		t.Error("Apply modified its input")
	}
}

// An Endpoint whose hostname is not a Node's name (an FQDN) still makes
// the Node with its private IP the gateway, so that node knows its role.
func TestApplyGatewayByAddress(t *testing.T) {
	top := Topology{
		Nodes: []Node{
			{Name: "c1-n1", IP: netip.MustParseAddr("192.168.10.11")},
			{Name: "c1-n2", IP: netip.MustParseAddr("192.168.10.12")},
		},
		Gateway: Gateway{Name: "c1-n2.example.internal", IP: netip.MustParseAddr("192.168.10.12"), From: "Endpoint x/c1"},
	}
	eff, problems := Apply(parse(t, kubeCfg), top)
	if eff.Cluster.Gateway != "c1-n2" || !eff.IsGateway() || len(eff.Parsed.Nodes) != 2 || len(problems) != 0 {
		t.Errorf("gateway %q (this node's role gateway: %v), nodes %+v, problems %q", eff.Cluster.Gateway, eff.IsGateway(), eff.Parsed.Nodes, problems)
	}
}

func TestPersistRoundTripAndCorruption(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadPersisted(dir); !errors.Is(err, ErrNotPersisted) {
		t.Fatalf("empty dir: %v, want ErrNotPersisted", err)
	}
	top := FromConfig(parse(t, fileCfg))
	top.Source = Kubernetes
	top.Sync = Sync{Synced: true, Reason: "Watching", Since: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	if err := Persist(dir, top); err != nil {
		t.Fatal(err)
	}
	got, err := LoadPersisted(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, top) {
		t.Errorf("round trip:\n%+v\nwant\n%+v", got, top)
	}
	path := filepath.Join(dir, PersistFile)
	b, _ := os.ReadFile(path)
	for name, bad := range map[string][]byte{
		"torn":     b[:len(b)/2],
		"bit flip": []byte(strings.Replace(string(b), "c1-n1", "c1-n7", 1)),
		"not json": []byte("\x00\x00"),
	} {
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadPersisted(dir); err == nil || errors.Is(err, ErrNotPersisted) || !strings.Contains(err.Error(), "corrupt") {
			t.Errorf("%s: err = %v, want a corrupt-file error", name, err)
		}
	}
}

// The cluster's underlay family from the API's view, and what it makes of
// each node, remote gateway and health-check address.
func TestApplyFamilies(t *testing.T) {
	a := netip.MustParseAddr
	pfx := netip.MustParsePrefix
	cfgFor := func(podCIDRs string) *config.Config {
		return parse(t, strings.Replace(kubeCfg, "podCIDRs: [10.1.0.0/16]\n  serviceCIDRs: [10.101.0.0/16]", "podCIDRs: "+podCIDRs+"\n  serviceCIDRs: []", 1))
	}
	remote := Remote{
		ID: "c2", CIDRs: []netip.Prefix{pfx("10.2.0.0/16"), pfx("fd00:2::/56")},
		GatewayIP: a("192.168.20.11"), GatewayIP6: a("fd00:20::11"),
		HealthCheckIP: a("10.2.1.1"), HealthCheckIP6: a("fd00:2:0:1::1"), From: "Endpoint x/c2",
	}
	tests := []struct {
		name      string
		podCIDRs  string
		nodes     []Node
		gateway   Gateway
		remotes   []Remote
		underlay6 bool
		members   []config.ParsedNode
		nodeIP6   netip.Addr
		gatewayIP netip.Addr // remote c2's cable address
		hc, hc6   netip.Addr
		problems  []string
	}{
		{
			name:     "IPv6-only cluster: IPv6 underlay, the remote's IPv6 gateway, both health checks kept",
			podCIDRs: "[fd00:1::/56]",
			nodes: []Node{
				{Name: "c1-n1", IP6: a("fd00:10::11"), From: "Node/c1-n1"},
				{Name: "c1-n2", IP6: a("fd00:10::12"), From: "Node/c1-n2"},
			},
			gateway:   Gateway{Name: "c1-n1", IP6: a("fd00:10::11"), From: "Endpoint x/c1"},
			remotes:   []Remote{remote},
			underlay6: true,
			members:   []config.ParsedNode{{Name: "c1-n1", IP6: a("fd00:10::11")}, {Name: "c1-n2", IP6: a("fd00:10::12")}},
			nodeIP6:   a("fd00:10::12"), gatewayIP: a("fd00:20::11"), hc: a("10.2.1.1"), hc6: a("fd00:2:0:1::1"),
		},
		{
			name:     "IPv6 pods, every node dual stack: the IPv4 underlay, as the file's rule",
			podCIDRs: "[fd00:1::/56]",
			nodes: []Node{
				{Name: "c1-n1", IP: a("192.168.10.11"), IP6: a("fd00:10::11")},
				{Name: "c1-n2", IP: a("192.168.10.12"), IP6: a("fd00:10::12")},
			},
			gateway: Gateway{Name: "c1-n1"},
			remotes: []Remote{remote},
			members: []config.ParsedNode{{Name: "c1-n1", IP: a("192.168.10.11"), IP6: a("fd00:10::11")}, {Name: "c1-n2", IP: a("192.168.10.12"), IP6: a("fd00:10::12")}},
			nodeIP6: a("fd00:10::12"), gatewayIP: a("192.168.20.11"), hc: a("10.2.1.1"), hc6: a("fd00:2:0:1::1"),
		},
		{
			name:     "IPv6 underlay: a node without IPv6 waits, named",
			podCIDRs: "[fd00:1::/56]",
			nodes: []Node{
				{Name: "c1-n1", IP6: a("fd00:10::11"), From: "Node/c1-n1"},
				{Name: "c1-n2", IP6: a("fd00:10::12"), From: "Node/c1-n2"},
				{Name: "c1-n3", IP: a("192.168.10.13"), From: "Node/c1-n3"},
			},
			gateway:   Gateway{Name: "c1-n1"},
			underlay6: true,
			members:   []config.ParsedNode{{Name: "c1-n1", IP6: a("fd00:10::11")}, {Name: "c1-n2", IP6: a("fd00:10::12")}},
			nodeIP6:   a("fd00:10::12"),
			problems:  []string{`node "c1-n3" (Node/c1-n3) has no IPv6 address, and the cluster's VXLAN underlay is IPv6 (node "c1-n1" has IPv6 only): not a member until it has one`},
		},
		{
			name:     "dual-stack pods: an IPv6-only node waits, the underlay stays IPv4",
			podCIDRs: "[10.1.0.0/16, fd00:1::/56]",
			nodes: []Node{
				{Name: "c1-n1", IP: a("192.168.10.11"), IP6: a("fd00:10::11"), From: "Node/c1-n1"},
				{Name: "c1-n2", IP: a("192.168.10.12"), IP6: a("fd00:10::12"), From: "Node/c1-n2"},
				{Name: "c1-n3", IP6: a("fd00:10::13"), From: "Node/c1-n3"},
			},
			gateway: Gateway{Name: "c1-n1"},
			remotes: []Remote{remote},
			members: []config.ParsedNode{{Name: "c1-n1", IP: a("192.168.10.11"), IP6: a("fd00:10::11")}, {Name: "c1-n2", IP: a("192.168.10.12"), IP6: a("fd00:10::12")}},
			nodeIP6: a("fd00:10::12"), gatewayIP: a("192.168.20.11"), hc: a("10.2.1.1"), hc6: a("fd00:2:0:1::1"),
			problems: []string{`node "c1-n3" (Node/c1-n3) has no IPv4 address, only fd00:10::13, and cluster.podCIDRs has the IPv4 CIDR 10.1.0.0/16, whose pods need an IPv4 underlay: not a member until it has one`},
		},
		{
			name:     "IPv6 underlay: a gateway that is no Node joins by its IPv6 address; duplicates of either family are refused",
			podCIDRs: "[fd00:1::/56]",
			nodes: []Node{
				{Name: "c1-n2", IP6: a("fd00:10::12")},
				{Name: "c1-n3", IP: a("192.168.10.13"), IP6: a("fd00:10::12")},
			},
			gateway:   Gateway{Name: "c1-gw", IP6: a("fd00:10::1"), From: "Endpoint x/c1"},
			remotes:   []Remote{{ID: "c2", CIDRs: []netip.Prefix{pfx("fd00:2::/56")}, GatewayIP: a("192.168.20.11"), HealthCheckIP6: a("fd00:9::1"), From: "Endpoint x/c2"}},
			underlay6: true,
			members:   []config.ParsedNode{{Name: "c1-n2", IP6: a("fd00:10::12")}, {Name: "c1-gw", IP6: a("fd00:10::1")}},
			nodeIP6:   a("fd00:10::12"),
			// Only an IPv4 gateway address: taken, and the desired state
			// names it as of another family than the underlay.
			gatewayIP: a("192.168.20.11"),
			problems: []string{
				`nodes "c1-n2" and "c1-n3" both have address fd00:10::12: "c1-n3" ignored`,
				`remote "c2" (Endpoint x/c2): IPv6 health-check IP fd00:9::1 is outside its CIDRs: its IPv6 path is not probed`,
			},
		},
		{
			name:     "the gateway's Endpoint names it by IPv6 address when its hostname is no Node's",
			podCIDRs: "[fd00:1::/56]",
			nodes: []Node{
				{Name: "c1-n1", IP6: a("fd00:10::11")},
				{Name: "c1-n2", IP6: a("fd00:10::12")},
			},
			gateway:   Gateway{Name: "gw.example", IP6: a("fd00:10::11"), From: "Endpoint x/c1"},
			underlay6: true,
			members:   []config.ParsedNode{{Name: "c1-n1", IP6: a("fd00:10::11")}, {Name: "c1-n2", IP6: a("fd00:10::12")}},
			nodeIP6:   a("fd00:10::12"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eff, problems := Apply(cfgFor(tt.podCIDRs), Topology{Nodes: tt.nodes, Gateway: tt.gateway, Remotes: tt.remotes})
			if !reflect.DeepEqual(problems, tt.problems) {
				t.Errorf("problems =\n%q\nwant\n%q", problems, tt.problems)
			}
			if eff.Parsed.Underlay6 != tt.underlay6 {
				t.Errorf("underlay6 = %v, want %v", eff.Parsed.Underlay6, tt.underlay6)
			}
			if !reflect.DeepEqual(eff.Parsed.Nodes, tt.members) {
				t.Errorf("nodes = %+v\nwant %+v", eff.Parsed.Nodes, tt.members)
			}
			if len(eff.Cluster.Nodes) != len(tt.members) {
				t.Errorf("raw nodes = %+v", eff.Cluster.Nodes)
			}
			if eff.Parsed.NodeIP6 != tt.nodeIP6 {
				t.Errorf("node IPv6 = %v, want %v", eff.Parsed.NodeIP6, tt.nodeIP6)
			}
			if tt.gateway.Name == "gw.example" && eff.Cluster.Gateway != "c1-n1" {
				t.Errorf("gateway = %q, want c1-n1 (its Node by IPv6 address)", eff.Cluster.Gateway)
			}
			if len(tt.remotes) == 0 {
				return
			}
			r := eff.Parsed.Remotes[0]
			if r.GatewayIP != tt.gatewayIP || r.HealthCheckIP != tt.hc || r.HealthCheckIP6 != tt.hc6 {
				t.Errorf("remote = %+v, want gateway %v, health checks %v %v", r, tt.gatewayIP, tt.hc, tt.hc6)
			}
			if raw := eff.Remotes[0]; raw.GatewayIP != tt.gatewayIP.String() || tt.hc6.IsValid() && raw.HealthCheckIP6 != tt.hc6.String() {
				t.Errorf("raw remote = %+v", raw)
			}
		})
	}
}

// A topology persisted by an older weftd (one gatewayIP, either family)
// picks the same cable address.
func TestRemoteGatewayByFamily(t *testing.T) {
	a := netip.MustParseAddr
	for _, tt := range []struct {
		r    Remote
		v6   bool
		want netip.Addr
	}{
		{Remote{GatewayIP: a("192.168.20.11"), GatewayIP6: a("fd00:20::11")}, false, a("192.168.20.11")},
		{Remote{GatewayIP: a("192.168.20.11"), GatewayIP6: a("fd00:20::11")}, true, a("fd00:20::11")},
		{Remote{GatewayIP: a("fd00:20::11")}, true, a("fd00:20::11")},
		{Remote{GatewayIP: a("192.168.20.11")}, true, a("192.168.20.11")},
		{Remote{GatewayIP6: a("fd00:20::11")}, false, a("fd00:20::11")},
		{Remote{}, false, netip.Addr{}},
	} {
		if got := tt.r.Gateway(tt.v6); got != tt.want {
			t.Errorf("%+v.Gateway(%v) = %v, want %v", tt.r, tt.v6, got, tt.want)
		}
	}
}
