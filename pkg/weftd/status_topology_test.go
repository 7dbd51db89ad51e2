package weftd

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

func TestPrintStatusTopology(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	since := now.Add(-30 * time.Second)
	st := api.Status{Node: "c1-n2", Cluster: "c1", Role: "non-gateway", Topology: &api.Topology{
		Source: "kubernetes", Reason: "Stale", Message: "watch nodes: connection refused", Since: &since, Nodes: 3,
		Gateway: &api.TopologyGateway{Name: "c1-n1", IP: "192.168.10.11", From: "Endpoint submariner-operator/c1-gw"},
		Remotes: []api.TopologyRemote{{ID: "c2", GatewayIP: "192.168.20.11", From: "Endpoint submariner-operator/c2-gw"}},
	}}
	var b bytes.Buffer
	PrintStatus(&b, st, now)
	for _, w := range []string{
		"topology       kubernetes, NOT IN SYNC (Stale) since 2026-03-01T11:59:30Z (30s ago), 3 nodes",
		"watch nodes: connection refused",
		"gateway      c1-n1 192.168.10.11 from Endpoint submariner-operator/c1-gw",
		"remote       c2 gateway 192.168.20.11 from Endpoint submariner-operator/c2-gw",
	} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("missing %q in\n%s", w, b.String())
		}
	}
}

func TestPrintStatusControl(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	renew, since := now.Add(-400*time.Millisecond), now.Add(-12*time.Second)
	for _, tc := range []struct {
		name string
		c    api.TopologyControl
		want []string
		not  []string
	}{
		{name: "leader out of sync", c: api.TopologyControl{Candidate: true, Leading: true, LeaseHolder: "c1-n2", LeaseRenewTime: &renew, LeadershipChanges: 2,
			Broker: &api.BrokerSync{Reason: "BrokerUnreachable", Message: "dial tcp 10.0.0.1:6443: connection refused", Since: &since, Errors: 9}},
			want: []string{"election     candidate, holds the Lease; Lease held by c1-n2, renewed 400ms ago; 2 leadership changes seen",
				"broker       NOT IN SYNC (BrokerUnreachable): dial tcp 10.0.0.1:6443: connection refused; 9 failed passes"}},
		{name: "follower", c: api.TopologyControl{Candidate: true, LeaseHolder: "c1-n3", Broker: &api.BrokerSync{Synced: true}},
			want: []string{"election     candidate; Lease held by c1-n3;"}, not: []string{"broker  "}},
		{name: "not a candidate", c: api.TopologyControl{LeaseHolder: ""}, want: []string{"not a candidate; Lease no holder known"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			var b bytes.Buffer
			PrintStatus(&b, api.Status{Node: "c1-n2", Topology: &api.Topology{Source: "kubernetes", Synced: true, Control: &c}}, now)
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("missing %q in\n%s", w, b.String())
				}
			}
			for _, w := range tc.not {
				if strings.Contains(b.String(), w) {
					t.Errorf("%q in\n%s", w, b.String())
				}
			}
		})
	}
}

func TestPrintStatusTopologyDualStackGateway(t *testing.T) {
	st := api.Status{Node: "c1-n2", Topology: &api.Topology{Source: "file", Synced: true, Nodes: 2,
		Gateway: &api.TopologyGateway{Name: "c1-n1", IP: "192.168.10.11", IP6: "fd00:10::11", From: "file"}}}
	var b bytes.Buffer
	PrintStatus(&b, st, time.Now())
	if w := "gateway      c1-n1 192.168.10.11 fd00:10::11 from file"; !strings.Contains(b.String(), w) {
		t.Errorf("missing %q in\n%s", w, b.String())
	}
}
