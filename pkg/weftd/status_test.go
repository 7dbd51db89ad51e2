package weftd

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ready := api.Status{
		Node: "c1-n2", Cluster: "c1", Role: "non-gateway", Ready: true, Version: "v0.1.0",
		CNIInterface: &api.CNIInterface{Name: "vxlan.calico", IP: "10.1.2.0", Source: "plugin", Since: now.Add(-3 * time.Hour)},
		PacketFilter: "nftables", Attachments: 12,
		LastReconcile: &api.Reconcile{At: now.Add(-4 * time.Second), DurationMs: 2.4},
		Remotes: []api.Remote{
			{ID: "c2", CIDRs: []string{"10.2.0.0/16", "10.102.0.0/16"}, RoutesInstalled: true},
		},
		Conditions: []api.Condition{
			{Type: "CNIInterfaceReady", Status: true, Reason: "Found", Since: now.Add(-3 * time.Hour)},
			{Type: "DataplaneReady", Status: true, Reason: "Applied", Since: now.Add(-3 * time.Hour)},
		},
	}
	dual := ready
	dual.CNIInterface = &api.CNIInterface{Name: "vxlan.calico", IP: "10.1.2.0", Source: "plugin", Since: now.Add(-3 * time.Hour),
		Name6: "vxlan-v6.calico", IP6: "fd00:1:0:2::", Source6: "well-known"}
	dual.Remotes = []api.Remote{{ID: "c2", CIDRs: []string{"10.2.0.0/16", "fd00:2::/56"}, RoutesInstalled: false,
		Families: []api.RemoteFamily{{Family: "ipv4", RoutesInstalled: true}, {Family: "ipv6", RoutesInstalled: false}}}}
	v6First := ready
	v6First.Ready = false
	v6First.CNIInterface = &api.CNIInterface{Since: now.Add(-time.Minute), Name6: "vxlan-v6.calico", IP6: "fd00:1:0:2::", Source6: "well-known"}
	broken := ready
	broken.Ready = false
	broken.CNIInterface = nil
	broken.LastReconcile = &api.Reconcile{At: now.Add(-time.Second), DurationMs: 1.1, Error: "no CNI interface"}
	broken.Remotes = []api.Remote{{ID: "c2", CIDRs: []string{"10.2.0.0/16"}}}
	probed := ready
	probed.PathHealth = &api.PathHealth{Targets: []api.PathTarget{
		{Name: "gateway/c1-n1", Hop: "node-to-gateway", Cluster: "c1", Node: "c1-n1", Address: "240.168.10.11:4803", Up: true, Sent: 100, Lost: 1,
			RTT: api.PathRTT{LastMs: 0.31, MinMs: 0.2, MaxMs: 1.5}},
		{Name: "remote/c2", Hop: "node-to-remote", Cluster: "c2", Address: "10.2.0.1:4803", Up: false, Sent: 100, Lost: 7,
			Message: "no answer from 10.2.0.1:4803 to the last 5 probes or more"},
	}}
	broken.Conditions = []api.Condition{{Type: "CNIInterfaceReady", Status: false, Reason: "NotFound",
		Message: "no interface holds an address in 10.1.0.0/16", Fix: "check that the primary CNI runs on this node"}}

	tests := []struct {
		name string
		st   api.Status
		want []string
		not  []string
	}{
		{"ready", ready, []string{
			"node c1-n2  cluster c1  role non-gateway  ready",
			"CNI interface  vxlan.calico 10.1.2.0 (via plugin, since 2026-03-01T09:00:00Z, 3h0m0s ago)",
			"packet filter  nftables",
			"attachments    12",
			"last reconcile 4s ago, 2.4 ms, ok",
			"10.2.0.0/16,10.102.0.0/16",
			"routes in place",
			"ok   CNIInterfaceReady      Found",
		}, []string{"NOT READY", "fix:"}},
		{"dual stack", dual, []string{
			"CNI interface  vxlan.calico 10.1.2.0 (via plugin, since 2026-03-01T09:00:00Z, 3h0m0s ago)",
			"CNI IPv6       vxlan-v6.calico fd00:1:0:2:: (via well-known)",
			"routes ipv4 in place, ipv6 missing",
		}, nil},
		{"dual stack, IPv6 first", v6First, []string{
			"CNI interface  no IPv4 address found yet (since 2026-03-01T11:59:00Z, 1m0s ago)",
			"CNI IPv6       vxlan-v6.calico fd00:1:0:2:: (via well-known)",
		}, []string{"CNI interface   "}},
		{"broken", broken, []string{
			"NOT READY",
			"CNI interface  not found yet",
			"error: no CNI interface",
			"routes missing",
			"FAIL CNIInterfaceReady      NotFound: no interface holds an address in 10.1.0.0/16",
			"fix: check that the primary CNI runs on this node",
		}, []string{"routes in place"}},
		{"probed", probed, []string{
			"gateway path   c1-n1 240.168.10.11:4803: up, rtt 0.31 ms (min 0.20, max 1.50), loss 1/100",
			"routes in place; path DOWN (no answer from 10.2.0.1:4803 to the last 5 probes or more)",
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			PrintStatus(&b, tt.st, now)
			out := b.String()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("missing %q in\n%s", w, out)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(out, w) {
					t.Errorf("unexpected %q in\n%s", w, out)
				}
			}
			if n := strings.Count(out, "\n"); n > 24 {
				t.Errorf("%d lines: more than one screen", n)
			}
		})
	}
}
