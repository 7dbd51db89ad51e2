package dataplane

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Submariner's route agent (vx-submariner, UDP 4800, VNI 100) or another
// VXLAN device holding weft's VNI and port: weft reports a ConflictError
// with the fix, creates neither its device nor its routes, and leaves the
// other device exactly as it was; once weft's port differs, both run.
func TestVXLANConflict(t *testing.T) {
	tests := []struct {
		name     string
		foreign  []string // ip link add arguments (namespace ul0 exists)
		device   string   // the foreign device's name
		conflict bool
		fix      string // in ConflictError.Fix()
	}{
		{"submariner route agent", []string{"vx-submariner", "type", "vxlan", "id", "100", "dstport", "4800", "dev", "ul0"}, "vx-submariner", true, "stop Submariner's route agent"},
		{"other device same vni and port", []string{"vx-other", "type", "vxlan", "id", "100", "dstport", "4800", "dev", "ul0", "nolearning"}, "vx-other", true, "remove or reconfigure vx-other"},
		{"external device on the port", []string{"vx-ext", "type", "vxlan", "external", "dstport", "4800"}, "vx-ext", true, "remove or reconfigure vx-ext"},
		{"same port other vni", []string{"vx-submariner", "type", "vxlan", "id", "101", "dstport", "4800", "dev", "ul0"}, "vx-submariner", false, ""},
		{"same vni other port", []string{"vx-submariner", "type", "vxlan", "id", "100", "dstport", "4789", "dev", "ul0"}, "vx-submariner", false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := setupNode(t)
			n.MustExec(t, "ip", append([]string{"link", "add"}, tc.foreign...)...)
			n.MustExec(t, "ip", "link", "set", tc.device, "up")
			n.MustExec(t, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", tc.device, "dst", "192.168.10.99")
			before := n.MustExec(t, "ip", "-d", "link", "show", "dev", tc.device)
			fdbBefore := n.MustExec(t, "bridge", "fdb", "show", "dev", tc.device)
			intact := func() {
				t.Helper()
				if got := n.MustExec(t, "ip", "-d", "link", "show", "dev", tc.device); got != before {
					t.Errorf("foreign device changed:\n%s\nwas:\n%s", got, before)
				}
				if got := n.MustExec(t, "bridge", "fdb", "show", "dev", tc.device); got != fdbBefore {
					t.Errorf("foreign FDB changed:\n%s\nwas:\n%s", got, fdbBefore)
				}
			}
			m := New(testLogger(t))
			s := baseState()
			_, err := apply(t, n, m, s)
			// Submariner's device is reported whether or not it collides.
			if dev, found := m.Submariner(); found != (tc.device == SubmarinerDevice) || found && (dev.Name != tc.device || !strings.Contains(strings.Join(tc.foreign, " "), fmt.Sprintf("id %d dstport %d", dev.VNI, dev.Port))) {
				t.Errorf("Submariner() = %+v, %v", dev, found)
			}
			if !tc.conflict {
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
				checkState(t, n, s)
				intact()
				return
			}
			var ce *ConflictError
			if !errors.As(err, &ce) {
				t.Fatalf("Apply: %v, want a ConflictError", err)
			}
			if ce.Device != "vx-weft" || ce.Foreign != tc.device || !strings.Contains(ce.Fix(), tc.fix) || !strings.Contains(ce.Fix(), "vxlan.port") {
				t.Errorf("conflict %+v, fix %q", ce, ce.Fix())
			}
			// Only the conflict: no follow-on error for the routes through
			// the device weft did not create.
			if strings.Count(err.Error(), "\n") != 0 {
				t.Errorf("Apply error has more than the conflict:\n%v", err)
			}
			if _, err := n.Exec("ip", "link", "show", "dev", "vx-weft"); err == nil {
				t.Error("vx-weft created next to a conflicting device")
			}
			// No route was ever added: the kernel has no table 240.
			if out, err := n.Exec("ip", "route", "show", "table", "240"); err == nil && strings.TrimSpace(out) != "" {
				t.Errorf("routes through the missing device:\n%s", out)
			}
			intact()
			// Reported again on every pass, changing nothing.
			if c, err := apply(t, n, m, s); !errors.As(err, &ce) || c != 0 {
				t.Errorf("second Apply: %d changes, %v", c, err)
			}
			intact()

			// The fix: another port for weft. Both run.
			s.Devices[0].Port = 4801
			mustApply(t, n, m, s)
			checkState(t, n, s)
			intact()
		})
	}
}

// weft's device up first: a foreign device that comes later does not make
// weft take its own down or drop its routes.
func TestVXLANConflictAfterWeft(t *testing.T) {
	n := setupNode(t)
	m := New(testLogger(t))
	s := baseState()
	mustApply(t, n, m, s)
	n.MustExec(t, "ip", "link", "add", "vx-ext", "type", "vxlan", "external", "dstport", "4800")
	s.Verify = true
	if c := mustApply(t, n, m, s); c != 0 {
		t.Errorf("Apply with a late foreign device: %d changes, want 0", c)
	}
	checkState(t, n, s)
}
