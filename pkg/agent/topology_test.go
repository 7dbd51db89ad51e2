package agent

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/discovery"
	"github.com/weft-net/weft/pkg/toposource"
)

const kubeTestConfig = `
nodeName: c1-n2
cluster:
  id: c1
  podCIDRs: [10.1.0.0/16]
  serviceCIDRs: [10.101.0.0/16]
topology: kubernetes
`

// fakeSource is a topology source driven by the test.
type fakeSource struct {
	mu      sync.Mutex
	t       toposource.Topology
	have    bool
	changed chan struct{}
}

func (f *fakeSource) Current() (toposource.Topology, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t, f.have
}
func (f *fakeSource) Changed() <-chan struct{}                      { return f.changed }
func (f *fakeSource) For(*config.Config) (toposource.Source, error) { return f, nil }
func (f *fakeSource) set(t toposource.Topology) {
	f.mu.Lock()
	f.t, f.have = t, true
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func kubeTopology(gateway string, nodes ...string) toposource.Topology {
	t := toposource.Topology{Source: "kubernetes", Sync: toposource.Sync{Synced: true, Reason: "Watching", Since: time.Unix(100, 0).UTC()}}
	for i, n := range nodes {
		ip := netip.AddrFrom4([4]byte{192, 168, 10, byte(11 + i)})
		t.Nodes = append(t.Nodes, toposource.Node{Name: n, IP: ip, From: "Node/" + n})
		if n == gateway {
			t.Gateway = toposource.Gateway{Name: n, IP: ip, From: "Endpoint submariner-operator/c1-" + n}
		}
	}
	t.Remotes = []toposource.Remote{{ID: "c2", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}, GatewayIP: netip.MustParseAddr("192.168.20.11"), From: "Endpoint submariner-operator/c2"}}
	return t
}

func TestAgentTakesTopologyFromSource(t *testing.T) {
	src := &fakeSource{changed: make(chan struct{}, 1)}
	a, k, rec, _ := newTestAgentWith(t, kubeTestConfig, func(d *Deps) { d.Topology, d.TopologyChanged = src.For, src.changed })
	k.set(append(k.ifaces, discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})...)
	ctx := context.Background()

	// Nothing from the API and nothing persisted: not ready, nothing applied.
	if err := a.Reconcile(ctx); err == nil {
		t.Fatal("reconcile without a topology succeeded")
	}
	if ready, why := a.Ready(); ready || rec.calls != 0 {
		t.Fatalf("ready=%v (%s), applies=%d without a topology", ready, why, rec.calls)
	}

	src.set(kubeTopology("c1-n1", "c1-n1", "c1-n2"))
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	s := a.Status()
	if !s.Ready || s.Role != "non-gateway" {
		t.Fatalf("ready=%v role=%s", s.Ready, s.Role)
	}
	if vx := rec.dp.Devices[0]; len(vx.Peers) != 1 || vx.Peers[0].Underlay != netip.MustParseAddr("192.168.10.11") {
		t.Fatalf("peers = %+v, want the gateway c1-n1", vx.Peers)
	}
	if s.Topology == nil || s.Topology.Source != "kubernetes" || s.Topology.Nodes != 2 || s.Topology.Gateway.From != "Endpoint submariner-operator/c1-c1-n1" ||
		len(s.Topology.Remotes) != 1 || s.Topology.Remotes[0].From != "Endpoint submariner-operator/c2" {
		t.Fatalf("topology status = %+v", s.Topology)
	}

	// The gateway moves to this node: its FDB gets every other node.
	src.set(kubeTopology("c1-n2", "c1-n1", "c1-n2", "c1-n3"))
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if r := a.Status().Role; r != "gateway" {
		t.Fatalf("role = %s after the gateway moved here", r)
	}
	if vx := rec.dp.Devices[0]; vx.Name != "vx-weft" || len(vx.Peers) != 2 {
		t.Fatalf("gateway peers = %+v", rec.dp.Devices)
	}

	// Stale: the data plane stays, the condition says so, readiness holds.
	stale := kubeTopology("c1-n2", "c1-n1", "c1-n2", "c1-n3")
	stale.Sync = toposource.Sync{Reason: "Stale", Message: "watch nodes: connection refused", Since: time.Unix(200, 0).UTC()}
	src.set(stale)
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	s = a.Status()
	var cond *struct {
		status bool
		reason string
		since  time.Time
	}
	for _, c := range s.Conditions {
		if c.Type == CondTopologySynced {
			cond = &struct {
				status bool
				reason string
				since  time.Time
			}{c.Status, c.Reason, c.Since}
		}
	}
	if cond == nil || cond.status || cond.reason != "Stale" || !cond.since.Equal(time.Unix(200, 0)) {
		t.Fatalf("TopologySynced = %+v", cond)
	}
	if !s.Ready || len(rec.dp.Devices[0].Peers) != 2 {
		t.Fatalf("stale topology: ready=%v, devices %+v", s.Ready, rec.dp.Devices)
	}
}

func TestWatchTopologyTriggers(t *testing.T) {
	src := &fakeSource{changed: make(chan struct{}, 1)}
	a := &Agent{urgent: make(chan struct{}, 1), d: Deps{Topology: src.For, TopologyChanged: src.changed}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.WatchTopology(ctx)
	src.set(kubeTopology("c1-n1", "c1-n1"))
	select {
	case <-a.urgent:
	case <-time.After(5 * time.Second):
		t.Fatal("a topology change did not trigger a pass")
	}
}
