package agent

import (
	"context"
	"net/netip"
	"testing"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/discovery"
	"github.com/weft-net/weft/pkg/topology"
)

// A broken path is reported, survives verifying passes (which drop the
// packet filter's stale findings) and never makes the node unready.
func TestPathHealthReportedNotReadiness(t *testing.T) {
	ctx := context.Background()
	var seen []topology.Inputs
	a, k, _, _ := newTestAgentWith(t, testConfig, func(d *Deps) {
		d.Desired = func(_ *config.Config, in topology.Inputs, _ topology.Result) { seen = append(seen, in) }
	})
	k.set(append(k.ifaces, discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})...)
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0].CNIIP != netip.MustParseAddr("10.1.2.1") {
		t.Fatalf("Desired hook saw %+v, want one pass with the CNI IP", seen)
	}
	h := &api.PathHealth{Targets: []api.PathTarget{{Name: "gateway/c1-n1", Up: false}}}
	a.SetPathHealth(h, []api.Condition{
		{Type: CondGatewayReachable, Status: false, Reason: "NoAnswer", Message: "this node → gateway c1-n1", Fix: "check the underlay"},
		{Type: CondRemotesReachable, Status: true, Reason: "Answering"},
	})
	if err := a.Reconcile(ctx); err != nil { // a verifying pass
		t.Fatal(err)
	}
	st := a.Status()
	if c := cond(st, CondGatewayReachable); c.Status || c.Reason != "NoAnswer" || c.Fix == "" {
		t.Errorf("GatewayReachable = %+v after a verifying pass", c)
	}
	if !st.Ready {
		t.Error("a broken path made the node unready: ready means the objects are in place")
	}
	if st.PathHealth != h {
		t.Errorf("status pathHealth = %+v", st.PathHealth)
	}
	a.SetPathHealth(nil, nil)
	st = a.Status()
	if cond(st, CondGatewayReachable).Reason != "absent" || cond(st, CondRemotesReachable).Reason != "absent" || st.PathHealth != nil {
		t.Errorf("health check off: conditions %+v", st.Conditions)
	}
}
