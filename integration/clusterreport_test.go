package integration

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/scenario"
	"github.com/weft-net/weft/pkg/healthpublish"
)

// checkRouteAgents: every real weftd of the Kubernetes scenario writes its
// node's Submariner RouteAgent from its own probes: the other cluster
// connected, its Endpoint's spec, the round-trip times of the probes that
// went through the data path.
func checkRouteAgents(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	start := time.Now()
	for _, m := range s.Members {
		other := "c2"
		if m.Cluster.ID == "c2" {
			other = "c1"
		}
		srv := s.Kube.Server(m.Cluster.ID)
		var ra healthpublish.RouteAgent
		var last string
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, err := srv.Kubectl(ctx, "get", "routeagents.submariner.io", "-n", scenario.SubmarinerNamespace, m.Node.Name, "-o", "json")
			last = out
			if err == nil {
				d := json.NewDecoder(strings.NewReader(out))
				d.DisallowUnknownFields()
				ra = healthpublish.RouteAgent{}
				if err := d.Decode(&ra); err != nil {
					t.Fatalf("%s: RouteAgent does not decode strictly with weft's types: %v\n%s", m.Node.Name, err, out)
				}
				if len(ra.Status.RemoteEndpoints) == 1 && ra.Status.RemoteEndpoints[0].Status == healthpublish.Connected {
					break
				}
			} else {
				last = err.Error()
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no RouteAgent with %s connected after 20 s: %s", m.Node.Name, other, last)
			}
			time.Sleep(100 * time.Millisecond)
		}
		e := ra.Status.RemoteEndpoints[0]
		gw := s.Gateway(other)
		if !strings.HasPrefix(ra.Status.Version, "weft ") || e.Spec.ClusterID != other || e.Spec.Hostname != gw.Name || e.Spec.PrivateIP != gw.IP.String() || e.Spec.CableName == "" || e.Spec.Backend != "vxlan" {
			t.Errorf("%s: RouteAgent %+v, want weft's, %s's Endpoint spec (gateway %s %s)", m.Node.Name, ra.Status, other, gw.Name, gw.IP)
		}
		rtt, err := time.ParseDuration(e.LatencyRTT.Last)
		if err != nil || rtt <= 0 || rtt > time.Second {
			t.Errorf("%s: latencyRTT.last %q, want a measured round trip", m.Node.Name, e.LatencyRTT.Last)
		}
		t.Logf("%s: RouteAgent %s connected, latencyRTT last %s min %s average %s max %s stdDev %s", m.Node.Name, other,
			e.LatencyRTT.Last, e.LatencyRTT.Min, e.LatencyRTT.Average, e.LatencyRTT.Max, e.LatencyRTT.StdDev)
	}
	t.Logf("all %d RouteAgents written by their weftd (%s after the check began)", len(s.Members), time.Since(start).Round(time.Millisecond))
}

// checkNodePaths: with endpoints: weft every real weftd writes its node's
// NodePath: both conditions true, a measured RTT for each target.
func checkNodePaths(ctx context.Context, t *testing.T, s *scenario.Scenario) {
	for _, m := range s.Members {
		srv := s.Kube.Server(m.Cluster.ID)
		var np healthpublish.NodePath
		var last string
		ok := func() bool {
			if len(np.Status.Conditions) != 2 || len(np.Status.Targets) == 0 {
				return false
			}
			for _, c := range np.Status.Conditions {
				// The gateway probes no gateway: Unknown there.
				if c.Status == "False" || (c.Status == "Unknown" && (c.Type != healthpublish.CondGatewayReachable || m.Node != s.Gateway(m.Cluster.ID))) {
					return false
				}
			}
			for _, tg := range np.Status.Targets {
				if !tg.Up || tg.RTT.Last == "0s" {
					return false
				}
			}
			return true
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, err := srv.Kubectl(ctx, "get", "nodepaths.weft.dev", "-n", "weft-system", m.Node.Name, "-o", "json")
			last = out
			if err == nil {
				d := json.NewDecoder(strings.NewReader(out))
				d.DisallowUnknownFields()
				np = healthpublish.NodePath{}
				if err := d.Decode(&np); err != nil {
					t.Fatalf("%s: NodePath does not decode strictly with weft's types: %v\n%s", m.Node.Name, err, out)
				}
				if ok() {
					break
				}
			} else {
				last = err.Error()
			}
			if time.Now().After(deadline) {
				st, _ := m.Weftd.Status(ctx)
				js, _ := json.MarshalIndent(st, "", "  ")
				t.Fatalf("%s: no NodePath with every target up after 20 s: %s\nweftd status: %s", m.Node.Name, last, js)
			}
			time.Sleep(100 * time.Millisecond)
		}
		var ts []string
		for _, tg := range np.Status.Targets {
			ts = append(ts, tg.Name+" ("+tg.Hop+") "+tg.RTT.Last)
		}
		t.Logf("%s: NodePath %s=%s %s=%s; %s", m.Node.Name, np.Status.Conditions[0].Type, np.Status.Conditions[0].Status,
			np.Status.Conditions[1].Type, np.Status.Conditions[1].Status, strings.Join(ts, ", "))
	}
}
