package nftbackend

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/weft-net/weft/pkg/cidrset"
	"github.com/weft-net/weft/pkg/packetfilter"
)

func tags(d *desired, chain string) []string {
	for _, c := range d.chains {
		if c.spec.name == chain {
			var out []string
			for _, r := range c.rules {
				out = append(out, r.tag())
			}
			return out
		}
	}
	return nil
}

func mustRender(t *testing.T, m packetfilter.Model) *desired {
	t.Helper()
	d, err := render(m)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return d
}

func TestRenderHostSNAT(t *testing.T) {
	tests := []struct {
		name    string
		cniIP   string
		devices []string
		want    int // host-snat rules
	}{
		{"no CNI IP", "", []string{"vx-weft"}, 0},
		{"IPv6 CNI IP", "fd00::1", []string{"vx-weft"}, 0},
		{"one device", "10.1.2.1", []string{"vx-weft"}, 1},
		{"two devices", "10.1.2.1", []string{"vx-weft-cable", "vx-weft", "vx-weft"}, 2},
		{"no device", "10.1.2.1", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := baseModel()
			m.Devices = tt.devices
			if tt.cniIP != "" {
				m.CNIIP = netip.MustParseAddr(tt.cniIP)
			}
			got := 0
			for _, tag := range tags(mustRender(t, m), ChainNAT) {
				if strings.HasPrefix(tag, tagPrefix+"host-snat:") {
					got++
				}
			}
			if got != tt.want {
				t.Fatalf("%d host-snat rules, want %d", got, tt.want)
			}
		})
	}
}

func TestRenderTagsTrackContent(t *testing.T) {
	m := baseModel()
	m.CNIIP = netip.MustParseAddr("10.1.2.1")
	a := tags(mustRender(t, m), ChainNAT)
	if b := tags(mustRender(t, m), ChainNAT); !slices.Equal(a, b) {
		t.Fatalf("render not deterministic: %v vs %v", a, b)
	}
	m.CNIIP = netip.MustParseAddr("10.1.2.2")
	if b := tags(mustRender(t, m), ChainNAT); slices.Equal(a, b) {
		t.Fatal("tags did not change with the CNI IP")
	}
	// Set contents are not part of any rule: changing CIDRs keeps tags.
	m2 := baseModel()
	m2.CNIIP = netip.MustParseAddr("10.1.2.1")
	m2.RemoteCIDRs = append(m2.RemoteCIDRs, netip.MustParsePrefix("10.9.0.0/16"))
	if b := tags(mustRender(t, m2), ChainNAT); !slices.Equal(a, b) {
		t.Fatal("tags changed with set contents")
	}
}

func TestRenderMSS(t *testing.T) {
	tests := []struct {
		mss     packetfilter.MSS
		wantErr bool
	}{
		{packetfilter.MSS{}, false},
		{packetfilter.MSS{Mode: packetfilter.MSSPMTU}, false},
		{packetfilter.MSS{Mode: packetfilter.MSSFixed, Value: 1360}, false},
		{packetfilter.MSS{Mode: packetfilter.MSSFixed}, true},
		{packetfilter.MSS{Mode: "clamp"}, true},
	}
	for _, tt := range tests {
		m := baseModel()
		m.MSS = tt.mss
		_, err := render(m)
		if (err != nil) != tt.wantErr {
			t.Errorf("render with %+v: err = %v, want error %t", tt.mss, err, tt.wantErr)
		}
	}
}

func TestElementsRoundTrip(t *testing.T) {
	in := cidrset.Intervals(prefixes("10.0.1.0/24", "10.0.2.0/23", "192.168.0.0/16", "255.255.255.0/24"))
	elems := intervalElements(in)
	// The open-ended last interval has no end element.
	if got, want := len(elems), 2*len(in)-1; got != want {
		t.Fatalf("%d elements, want %d", got, want)
	}
	// The kernel dumps elements in its own order, and sets nft filled carry
	// an extra end element at 0.0.0.0.
	shuffled := append([]nftables.SetElement{{Key: []byte{0, 0, 0, 0}, IntervalEnd: true}}, elems...)
	slices.Reverse(shuffled)
	if got := elementsIntervals(shuffled); !slices.Equal(got, in) {
		t.Fatalf("round trip = %v, want %v", got, in)
	}
}

func TestDiffIntervals(t *testing.T) {
	iv := func(ps ...string) []cidrset.Interval { return cidrset.Intervals(prefixes(ps...)) }
	tests := []struct {
		name           string
		have, want     []cidrset.Interval
		wantDel, wantA []cidrset.Interval
	}{
		{"equal", iv("10.0.0.0/8"), iv("10.0.0.0/8"), nil, nil},
		{"add", iv("10.0.0.0/8"), iv("10.0.0.0/8", "192.168.0.0/16"), nil, iv("192.168.0.0/16")},
		{"delete", iv("10.0.0.0/8", "192.168.0.0/16"), iv("192.168.0.0/16"), iv("10.0.0.0/8"), nil},
		{"grow", iv("10.0.0.0/25"), iv("10.0.0.0/24"), iv("10.0.0.0/25"), iv("10.0.0.0/24")},
		{"from empty", nil, iv("10.0.0.0/8"), nil, iv("10.0.0.0/8")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			del, add := diffIntervals(tt.have, tt.want)
			if !slices.Equal(del, tt.wantDel) || !slices.Equal(add, tt.wantA) {
				t.Fatalf("diff = del %v add %v, want del %v add %v", del, add, tt.wantDel, tt.wantA)
			}
		})
	}
}

func TestElementMessages(t *testing.T) {
	tests := []struct {
		intervals int
		want      int
	}{
		{0, 0},
		{1, 1},
		{1000, 1},
		{5000, 4}, // 40 bytes per interval, ~64 KiB per message
	}
	for _, tt := range tests {
		var ps []netip.Prefix
		for i := range tt.intervals {
			ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(2 * i / 256), byte(2 * i % 256), 0}), 24))
		}
		if got := elementMessages(intervalElements(cidrset.Intervals(ps))); got != tt.want {
			t.Errorf("%d intervals: %d messages, want %d", tt.intervals, got, tt.want)
		}
	}
}
