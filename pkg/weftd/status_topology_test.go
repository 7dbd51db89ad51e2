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
