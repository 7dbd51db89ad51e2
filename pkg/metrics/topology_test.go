package metrics

import (
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

func TestTopologyMetrics(t *testing.T) {
	since := time.Unix(1_800_000_000, 0).UTC()
	fs := &fakeStatus{st: api.Status{Topology: &api.Topology{
		Source: "kubernetes", Synced: true, Reason: "Watching", Since: &since, Nodes: 3,
		Gateway: &api.TopologyGateway{Name: "c1-n1", IP: "192.168.10.11", From: "Endpoint submariner-operator/c1"},
		Remotes: []api.TopologyRemote{{ID: "c2", GatewayIP: "192.168.20.11", From: "Endpoint submariner-operator/c2"}},
	}}}
	base := serve(t, NewMux(New(fs.get), func() (bool, string) { return true, "" }))
	fams := scrape(t, base)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"weft_topology_synced", map[string]string{"source": "kubernetes", "reason": "Watching"}, 1},
		{"weft_topology_sync_change_timestamp_seconds", map[string]string{"source": "kubernetes"}, 1_800_000_000},
		{"weft_topology_nodes", map[string]string{"source": "kubernetes"}, 3},
		{"weft_topology_gateway_info", map[string]string{"gateway": "c1-n1", "from": "Endpoint submariner-operator/c1"}, 1},
		{"weft_topology_remote_info", map[string]string{"remote": "c2", "gateway_ip": "192.168.20.11", "from": "Endpoint submariner-operator/c2"}, 1},
	} {
		if v, ok := value(fams, c.name, c.labels); !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	fs.set(func(s *api.Status) { s.Topology.Synced, s.Topology.Reason = false, "Stale" })
	if v, ok := value(scrape(t, base), "weft_topology_synced", map[string]string{"reason": "Stale"}); !ok || v != 0 {
		t.Errorf("stale: weft_topology_synced = %v (%v), want 0", v, ok)
	}
}

func TestControlMetrics(t *testing.T) {
	fs := &fakeStatus{st: api.Status{Topology: &api.Topology{
		Source: "kubernetes", Synced: true, Reason: "Watching",
		Control: &api.TopologyControl{Candidate: true, Leading: true, LeaseHolder: "c1-n2", LeadershipChanges: 2,
			Broker: &api.BrokerSync{Synced: false, Errors: 7}},
	}}}
	base := serve(t, NewMux(New(fs.get), func() (bool, string) { return true, "" }))
	fams := scrape(t, base)
	for name, want := range map[string]float64{
		"weft_gateway_leadership_changes_total": 2,
		"weft_gateway_leading":                  1,
		"weft_broker_sync_errors_total":         7,
	} {
		if v, ok := value(fams, name, nil); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	fs.set(func(s *api.Status) { s.Topology.Control = nil })
	if _, ok := value(scrape(t, base), "weft_gateway_leading", nil); ok {
		t.Error("weft_gateway_leading exported without endpoints: weft")
	}
}
