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
