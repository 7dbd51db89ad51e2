package healthpublish

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-net/weft/pkg/kubesource"
	"github.com/weft-net/weft/pkg/pathhealth"
)

var t0 = time.Date(2026, 12, 2, 2, 0, 0, 0, time.UTC)

func tgt(name string, hop pathhealth.Hop, cluster, node, addr string, up bool, rtt time.Duration) pathhealth.TargetStatus {
	ts := pathhealth.TargetStatus{
		Target: pathhealth.Target{Name: name, Hop: hop, Cluster: cluster, Node: node, Address: netip.MustParseAddrPort(addr), Source: netip.MustParseAddr("10.1.1.1")},
		Up:     up, Since: t0, RTT: pathhealth.RTT{Last: rtt, Min: rtt / 2, Mean: rtt, Max: 2 * rtt, StdDev: rtt / 10}, Sent: 10,
	}
	if !up {
		ts.Lost, ts.Message = 10, "no answer to the last 5 probes"
	}
	return ts
}

func snap(ts ...pathhealth.TargetStatus) pathhealth.Snapshot {
	return pathhealth.Snapshot{At: t0, Node: "c1-n1", Cluster: "c1", Targets: ts}
}

func lookup(specs map[string]kubesource.EndpointSpec) EndpointLookup {
	return func(id string) (kubesource.EndpointSpec, bool) { s, ok := specs[id]; return s, ok }
}

func TestRouteAgentStatus(t *testing.T) {
	c2 := kubesource.EndpointSpec{ClusterID: "c2", CableName: "submariner-cable-c2-192-168-20-12", Hostname: "c2-n2", Subnets: []string{"10.2.0.0/16"},
		PrivateIP: "192.168.20.12", PublicIP: "203.0.113.2", Backend: "vxlan", BackendConfig: map[string]string{"udp-port": "4800"},
		PrivateIPs: []string{"192.168.20.12", "fd00:20::12"}, PublicIPs: []string{"203.0.113.2"}, HealthCheckIPs: []string{"fd00:2::1"}}
	gw := tgt("gateway/c1-n2", pathhealth.HopGateway, "c1", "c1-n2", "192.168.10.12:4803", true, time.Millisecond)
	rc2 := tgt("remote/c2", pathhealth.HopRemote, "c2", "c2-n2", "10.2.0.1:4803", true, 1500*time.Microsecond)
	rc3 := tgt("remote/c3", pathhealth.HopRemote, "c3", "c3-n2", "10.3.0.1:4803", false, 0)
	cable := tgt("cable/c2", pathhealth.HopCable, "c2", "c2-n2", "192.168.20.12:4803", true, 700*time.Microsecond)

	st := routeAgentStatus(snap(cable, gw, rc2, rc3), "weft v1", lookup(map[string]kubesource.EndpointSpec{"c2": c2}))
	if st.Version != "weft v1" || st.StatusFailure != "" || len(st.RemoteEndpoints) != 2 {
		t.Fatalf("status %+v", st)
	}
	e2, e3 := st.RemoteEndpoints[0], st.RemoteEndpoints[1]
	// c2: both its targets answer; the RTT is the whole path's, not the cable's.
	if e2.Status != Connected || e2.StatusMessage != "" || *e2.LatencyRTT != (LatencyRTTSpec{Last: "1.5ms", Min: "750µs", Average: "1.5ms", Max: "3ms", StdDev: "150µs"}) {
		t.Errorf("c2: %+v %+v", e2, e2.LatencyRTT)
	}
	if !reflect.DeepEqual(e2.Spec, EndpointSpec{ClusterID: "c2", CableName: c2.CableName, Hostname: "c2-n2", Subnets: c2.Subnets,
		PrivateIP: c2.PrivateIP, PublicIP: c2.PublicIP, Backend: "vxlan", BackendConfig: c2.BackendConfig,
		PrivateIPs: c2.PrivateIPs, PublicIPs: c2.PublicIPs, HealthCheckIPs: c2.HealthCheckIPs}) {
		t.Errorf("c2 spec %+v", e2.Spec)
	}
	// c3: no Endpoint known; its spec is what the target says, with the
	// schema's required list present.
	if e3.Status != ConnectionError || !strings.Contains(e3.StatusMessage, "this node → cluster c3 through the gateway (10.3.0.1:4803) unreachable: no answer") {
		t.Errorf("c3: %+v", e3)
	}
	if e3.Spec.ClusterID != "c3" || e3.Spec.Hostname != "c3-n2" || e3.Spec.Subnets == nil || e3.Spec.PrivateIP != "10.3.0.1" || *e3.LatencyRTT != (LatencyRTTSpec{"0s", "0s", "0s", "0s", "0s"}) {
		t.Errorf("c3 spec %+v rtt %+v", e3.Spec, e3.LatencyRTT)
	}

	// The gateway down: every unreachable remote names that hop first.
	gw.Up, gw.Message = false, "no answer"
	rc2.Up, rc2.Message = false, "no answer"
	st = routeAgentStatus(snap(gw, rc2), "", nil)
	if m := st.RemoteEndpoints[0].StatusMessage; !strings.HasPrefix(m, "this node → gateway c1-n2 (192.168.10.12:4803) unreachable") || !strings.Contains(m, "cluster c2") {
		t.Errorf("gateway down: %q", m)
	}
	// Nothing sent yet: connecting.
	rc2.Sent, rc2.Lost = 0, 0
	if st := routeAgentStatus(snap(rc2), "", nil); st.RemoteEndpoints[0].Status != Connecting {
		t.Errorf("nothing sent: %+v", st.RemoteEndpoints[0])
	}
	// Up (a prober starts so) but nothing answered yet: connecting, not
	// connected with an RTT of 0s.
	fresh := tgt("remote/c2", pathhealth.HopRemote, "c2", "c2-n2", "10.2.0.1:4803", true, 0)
	if st := routeAgentStatus(snap(fresh), "", nil); st.RemoteEndpoints[0].Status != Connecting || st.RemoteEndpoints[0].StatusMessage != "no probe answered yet" {
		t.Errorf("nothing answered: %+v", st.RemoteEndpoints[0])
	}
	// No remote probed: an empty list, never null (the schema requires it).
	if st := routeAgentStatus(snap(), "", nil); st.RemoteEndpoints == nil {
		t.Error("no remotes: nil list")
	}
}

// What counts as a change: up/down, a remote appearing or leaving, its
// Endpoint changing; not RTT jitter or probe counts.
func TestShapes(t *testing.T) {
	gw := tgt("gateway/c1-n2", pathhealth.HopGateway, "c1", "c1-n2", "192.168.10.12:4803", true, time.Millisecond)
	rc2 := tgt("remote/c2", pathhealth.HopRemote, "c2", "c2-n2", "10.2.0.1:4803", true, time.Millisecond)
	jitter := func(ts pathhealth.TargetStatus) pathhealth.TargetStatus {
		ts.RTT.Last, ts.RTT.Mean, ts.RTT.Max, ts.RTT.StdDev, ts.Sent = 1234*time.Microsecond, 1100*time.Microsecond, 9*time.Millisecond, time.Millisecond, 99
		return ts
	}
	downed := func(ts pathhealth.TargetStatus) pathhealth.TargetStatus {
		ts.Up, ts.Since, ts.Message = false, t0.Add(time.Minute), "no answer"
		return ts
	}
	base := snap(gw, rc2)
	later := func(s pathhealth.Snapshot) pathhealth.Snapshot { s.At = s.At.Add(30 * time.Second); return s }
	c2 := map[string]kubesource.EndpointSpec{"c2": {ClusterID: "c2", Hostname: "c2-n2", Subnets: []string{"10.2.0.0/16"}}}
	moved := map[string]kubesource.EndpointSpec{"c2": {ClusterID: "c2", Hostname: "c2-n3", Subnets: []string{"10.2.0.0/16"}}}
	cases := []struct {
		name    string
		next    pathhealth.Snapshot
		specs   map[string]kubesource.EndpointSpec
		changed bool
	}{
		{"RTT jitter", later(snap(jitter(gw), jitter(rc2))), c2, false},
		{"remote down", snap(gw, downed(rc2)), c2, true},
		{"gateway down", snap(downed(gw), downed(rc2)), c2, true},
		{"remote leaves", snap(gw), c2, true},
		{"remote appears", snap(gw, rc2, tgt("remote/c3", pathhealth.HopRemote, "c3", "", "10.3.0.1:4803", true, time.Millisecond)), c2, true},
		{"remote gateway moved", snap(gw, rc2), moved, true},
		{"first answer", snap(gw, rc2), c2, true}, // from a base whose remote had none yet
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := base
			if c.name == "first answer" {
				unanswered := rc2
				unanswered.RTT = pathhealth.RTT{}
				base = snap(gw, unanswered)
			}
			a := routeAgentShape(routeAgentStatus(base, "v", lookup(c2)))
			b := routeAgentShape(routeAgentStatus(c.next, "v", lookup(c.specs)))
			if got := !reflect.DeepEqual(a, b); got != c.changed {
				t.Errorf("RouteAgent changed %v, want %v", got, c.changed)
			}
			if c.name == "remote gateway moved" {
				return // the NodePath does not carry Endpoint specs
			}
			first := nodePathStatus(base, nil)
			pa := nodePathShape(first)
			pb := nodePathShape(nodePathStatus(c.next, first.Conditions))
			if got := !reflect.DeepEqual(pa, pb); got != c.changed {
				t.Errorf("NodePath changed %v, want %v:\n%+v\n%+v", got, c.changed, pa, pb)
			}
		})
	}
}

func TestNodePathConditions(t *testing.T) {
	gw := tgt("gateway/c1-n2", pathhealth.HopGateway, "c1", "c1-n2", "192.168.10.12:4803", true, time.Millisecond)
	rc2 := tgt("remote/c2", pathhealth.HopRemote, "c2", "c2-n2", "10.2.0.1:4803", true, time.Millisecond)
	cable := tgt("cable/c2", pathhealth.HopCable, "c2", "c2-n2", "192.168.20.12:4803", true, time.Millisecond)
	dn := func(ts pathhealth.TargetStatus) pathhealth.TargetStatus {
		ts.Up, ts.Message = false, "no answer"
		return ts
	}
	type want struct {
		status  metav1.ConditionStatus
		reason  string
		message string
	}
	cases := []struct {
		name     string
		s        pathhealth.Snapshot
		gw, rems want
	}{
		{"all up", snap(gw, rc2), want{metav1.ConditionTrue, "Reachable", "gateway c1-n2"}, want{metav1.ConditionTrue, "Reachable", "clusters c2 answer"}},
		{"gateway down", snap(dn(gw), dn(rc2)), want{metav1.ConditionFalse, "GatewayUnreachable", "this node → gateway c1-n2"}, want{metav1.ConditionFalse, "GatewayUnreachable", "cluster c2"}},
		{"remote down", snap(gw, dn(rc2)), want{metav1.ConditionTrue, "Reachable", ""}, want{metav1.ConditionFalse, "RemoteUnreachable", "this node → cluster c2"}},
		{"on the gateway, cable down", snap(dn(cable)), want{metav1.ConditionUnknown, "NotProbed", "probes no gateway"}, want{metav1.ConditionFalse, "CableDown", "gateway → remote gateway of c2"}},
		{"nothing probed", snap(), want{metav1.ConditionUnknown, "NotProbed", ""}, want{metav1.ConditionUnknown, "NotProbed", ""}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := nodePathStatus(c.s, nil)
			for i, w := range []want{c.gw, c.rems} {
				got := st.Conditions[i]
				if got.Status != w.status || got.Reason != w.reason || !strings.Contains(got.Message, w.message) || got.LastTransitionTime.IsZero() {
					t.Errorf("%s: %+v, want %+v", got.Type, got, w)
				}
			}
		})
	}
	// The transition time stays while the status holds, and moves when it changes.
	first := nodePathStatus(snap(gw, rc2), nil)
	s := snap(gw, dn(rc2))
	s.At = t0.Add(time.Hour)
	next := nodePathStatus(s, first.Conditions)
	if !next.Conditions[0].LastTransitionTime.Equal(&first.Conditions[0].LastTransitionTime) {
		t.Errorf("GatewayReachable held but its time moved: %v", next.Conditions[0].LastTransitionTime)
	}
	if !next.Conditions[1].LastTransitionTime.Time.Equal(s.At) {
		t.Errorf("RemotesReachable changed at %v, time %v", s.At, next.Conditions[1].LastTransitionTime)
	}
}

// The bucket lets Burst changes through at once, then one per interval:
// a node flapping for an hour costs about 60 writes, not 3,600.
func TestBucket(t *testing.T) {
	b := newBucket(5, time.Minute, t0)
	now := t0
	n := 0
	for range 3600 {
		if b.take(now) {
			n++
		}
		now = now.Add(time.Second)
	}
	if n < 60 || n > 66 {
		t.Errorf("%d writes in an hour of changes every second, want 5 + 60", n)
	}
	b = newBucket(2, time.Minute, t0)
	b.take(t0)
	b.take(t0)
	if b.take(t0) {
		t.Error("a third write within the burst of 2")
	}
	if d := b.next(t0.Add(15 * time.Second)); d != 45*time.Second {
		t.Errorf("next token in %v, want 45s", d)
	}
	b.refund()
	if !b.take(t0.Add(15 * time.Second)) {
		t.Error("a refunded token is not there")
	}
}
