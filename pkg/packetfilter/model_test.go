package packetfilter

import (
	"net/netip"
	"reflect"
	"testing"
)

// Equal agrees with reflect.DeepEqual on every field but Verify; a field
// added to Model must be added to Equal too, which this test catches.
func TestModelEqual(t *testing.T) {
	base := Model{
		LocalCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
		RemoteCIDRs: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")},
		Devices:     []string{"vx-weft"},
		CNIIP:       netip.MustParseAddr("10.1.1.1"),
		CNIIP6:      netip.MustParseAddr("fd01::1"),
		VXLANPorts:  []uint16{4800},
		MSS:         MSS{Mode: MSSPMTU},
	}
	if n := reflect.TypeOf(Model{}).NumField(); n != 9 {
		t.Fatalf("Model has %d fields: teach Equal the new one", n)
	}
	changes := []func(*Model){
		func(m *Model) { m.LocalCIDRs = nil },
		func(m *Model) { m.RemoteCIDRs = append(m.RemoteCIDRs, netip.MustParsePrefix("10.3.0.0/16")) },
		func(m *Model) { m.Devices = []string{"vx-other"} },
		func(m *Model) { m.CNIIP = netip.Addr{} },
		func(m *Model) { m.CNIIP6 = netip.MustParseAddr("fd01::2") },
		func(m *Model) { m.VXLANPorts = []uint16{4801} },
		func(m *Model) { m.MSS.Value = 1400 },
		func(m *Model) { m.HealthCheckPort = 4803 },
	}
	for i, ch := range changes {
		m := base
		ch(&m)
		if base.Equal(m) {
			t.Errorf("change %d not seen", i)
		}
	}
	v := base
	v.Verify = true
	if !base.Equal(v) {
		t.Error("Verify is not part of the rules")
	}
}
