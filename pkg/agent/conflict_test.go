package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/weft-net/weft/pkg/dataplane"
	"github.com/weft-net/weft/pkg/discovery"
)

// A VXLAN device of Submariner's route agent on weft's VNI and port is a
// DataplaneReady condition with the operator's fix, not a generic failure;
// it clears when the device is gone.
func TestVXLANConflictCondition(t *testing.T) {
	a, k, rec, _ := newTestAgent(t)
	k.set(discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})
	ce := &dataplane.ConflictError{Device: "vx-weft", Foreign: dataplane.SubmarinerDevice, VNI: 100, Port: 4800}
	rec.fail = errors.Join(fmt.Errorf("sysctl: something else"), ce)
	if err := a.Reconcile(context.Background()); err == nil {
		t.Fatal("reconcile succeeded with a conflict")
	}
	c := cond(a.Status(), CondDataplaneReady)
	if c.Status || c.Reason != "VXLANConflict" || c.Fix != ce.Fix() || !strings.Contains(c.Message, "vx-submariner") || !strings.Contains(c.Fix, "Submariner's route agent") {
		t.Errorf("condition %+v", c)
	}
	if ready, why := a.Ready(); ready || !strings.Contains(why, "vx-submariner") {
		t.Errorf("ready %v (%s) with a conflict", ready, why)
	}
	rec.fail = nil
	if err := a.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := cond(a.Status(), CondDataplaneReady); !c.Status || c.Reason == "VXLANConflict" {
		t.Errorf("condition after the conflict went: %+v", c)
	}
}

// finderRecorder is a recorder whose data plane also reports Submariner's
// device, as dataplane.Netlink does.
type finderRecorder struct {
	*recorder
	dev *dataplane.ForeignVXLAN
}

func (f *finderRecorder) Submariner() (dataplane.ForeignVXLAN, bool) {
	if f.dev == nil {
		return dataplane.ForeignVXLAN{}, false
	}
	return *f.dev, true
}

// Submariner's route agent on another port or VNI: no conflict, weft runs
// and is ready, and a condition says that two route agents run here. It
// survives verifying passes (which clear stale packet-filter findings) and
// goes with the device; while the devices collide, DataplaneReady alone
// speaks.
func TestSubmarinerRouteAgentCondition(t *testing.T) {
	a, k, rec, _ := newTestAgent(t)
	fr := &finderRecorder{recorder: rec}
	a.d.Dataplane = fr
	k.set(discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})
	ctx := context.Background()

	fr.dev = &dataplane.ForeignVXLAN{Name: dataplane.SubmarinerDevice, VNI: 100, Port: 4800}
	for range 2 {
		if err := a.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		c := cond(a.Status(), CondSubmarinerRouteAgent)
		if c.Status || c.Reason != "RouteAgentRunning" || !strings.Contains(c.Message, "vx-submariner (VNI 100, UDP port 4800)") || !strings.Contains(c.Fix, "stop Submariner's route agent") {
			t.Fatalf("condition %+v", c)
		}
		if ready, why := a.Ready(); !ready {
			t.Fatalf("not ready with a non-colliding route agent: %s", why)
		}
	}

	rec.fail = &dataplane.ConflictError{Device: "vx-weft", Foreign: dataplane.SubmarinerDevice, VNI: 100, Port: 4800}
	_ = a.Reconcile(ctx)
	if c := cond(a.Status(), CondSubmarinerRouteAgent); c.Reason != "absent" {
		t.Errorf("condition next to the conflict: %+v", c)
	}
	rec.fail, fr.dev = nil, nil
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if c := cond(a.Status(), CondSubmarinerRouteAgent); c.Reason != "absent" {
		t.Errorf("condition after the device went: %+v", c)
	}
}
