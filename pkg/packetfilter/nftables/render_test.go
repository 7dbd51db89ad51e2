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
	return tableTags(d, ipv4, chain)
}

func tableTags(d *desired, f *family, chain string) []string {
	t := d.table(f)
	if t == nil {
		return nil
	}
	for _, c := range t.chains {
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
	tests := []struct {
		f    *family
		in   []ival
		zero []byte
	}{
		{ipv4, prefixIvals(cidrset.Merge(prefixes("10.0.1.0/24", "10.0.2.0/23", "192.168.0.0/16", "255.255.255.0/24"))), make([]byte, 4)},
		{ipv6, prefixIvals(cidrset.Merge6(prefixes("fd01::/48", "fd02::/47", "2001:db8::/32", "ffff:ffff::/32"))), make([]byte, 16)},
	}
	for _, tt := range tests {
		t.Run(tt.f.name, func(t *testing.T) {
			elems := intervalElements(tt.in)
			// The open-ended last interval has no end element.
			if got, want := len(elems), 2*len(tt.in)-1; got != want {
				t.Fatalf("%d elements, want %d", got, want)
			}
			// The kernel dumps elements in its own order, and sets nft
			// filled carry an extra end element at the zero address.
			shuffled := append([]nftables.SetElement{{Key: tt.zero, IntervalEnd: true}}, elems...)
			slices.Reverse(shuffled)
			if got := elementsIntervals(tt.f, shuffled); !slices.Equal(got, tt.in) {
				t.Fatalf("round trip = %v, want %v", got, tt.in)
			}
			// Keys of the other family are not this set's.
			other := ipv6
			if tt.f == ipv6 {
				other = ipv4
			}
			if got := elementsIntervals(other, elems); len(got) != 0 {
				t.Fatalf("elements read as %s: %v", other.name, got)
			}
		})
	}
}

// IPv4 intervals are what cidrset.Intervals computes, as before IPv6.
func TestIvalsMatchCidrsetIntervals(t *testing.T) {
	ps := prefixes("10.0.1.0/24", "10.0.2.0/23", "192.168.0.0/16", "255.255.255.0/24", "0.0.0.0/32")
	want := cidrset.Intervals(ps)
	got := prefixIvals(cidrset.Merge(ps))
	if fast := v4Ivals(want); !slices.Equal(fast, got) {
		t.Errorf("v4Ivals = %+v, prefixIvals = %+v", fast, got)
	}
	if len(got) != len(want) {
		t.Fatalf("%d intervals, want %d", len(got), len(want))
	}
	for i := range got {
		end := got[i].end.lo
		if got[i].open {
			end = 1 << 32
		}
		if got[i].start.lo != want[i].Start || end != want[i].End || got[i].start.hi != 0 || got[i].v6 {
			t.Errorf("interval %d = %+v, want %v", i, got[i], want[i])
		}
	}
}

func TestDiffIntervals(t *testing.T) {
	iv := func(ps ...string) []ival {
		v4, v6, _ := packetfilter.Split(prefixes(ps...))
		return append(prefixIvals(cidrset.Merge(v4)), prefixIvals(cidrset.Merge6(v6))...)
	}
	tests := []struct {
		name           string
		have, want     []ival
		wantDel, wantA []ival
	}{
		{"equal", iv("10.0.0.0/8"), iv("10.0.0.0/8"), nil, nil},
		{"add", iv("10.0.0.0/8"), iv("10.0.0.0/8", "192.168.0.0/16"), nil, iv("192.168.0.0/16")},
		{"delete", iv("10.0.0.0/8", "192.168.0.0/16"), iv("192.168.0.0/16"), iv("10.0.0.0/8"), nil},
		{"grow", iv("10.0.0.0/25"), iv("10.0.0.0/24"), iv("10.0.0.0/25"), iv("10.0.0.0/24")},
		{"from empty", nil, iv("10.0.0.0/8"), nil, iv("10.0.0.0/8")},
		{"ipv6 grow", iv("fd01::/49"), iv("fd01::/48"), iv("fd01::/49"), iv("fd01::/48")},
		{"ipv6 to the end", iv("fd01::/48"), iv("fd01::/48", "ff00::/8"), nil, iv("ff00::/8")},
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
		if got := elementMessages(intervalElements(prefixIvals(cidrset.Merge(ps)))); got != tt.want {
			t.Errorf("%d intervals: %d messages, want %d", tt.intervals, got, tt.want)
		}
	}
}

func dualModel() packetfilter.Model {
	m := baseModel()
	m.LocalCIDRs = append(m.LocalCIDRs, prefixes("fd01::/48", "fd01:101::/108")...)
	m.RemoteCIDRs = append(m.RemoteCIDRs, prefixes("fd02::/48", "fd02:102::/108")...)
	m.CNIIP = netip.MustParseAddr("10.1.2.1")
	m.CNIIP6 = netip.MustParseAddr("fd01:0:0:2::1")
	return m
}

func TestRenderFamilies(t *testing.T) {
	countSNAT := func(d *desired, f *family) int {
		n := 0
		for _, tag := range tableTags(d, f, ChainNAT) {
			if strings.HasPrefix(tag, tagPrefix+"host-snat:") {
				n++
			}
		}
		return n
	}
	tests := []struct {
		name        string
		edit        func(*packetfilter.Model)
		tables      []string
		snat, snat6 int
	}{
		{"ipv4 only", func(m *packetfilter.Model) { *m = baseModel(); m.CNIIP = netip.MustParseAddr("10.1.2.1") }, []string{"ip"}, 2, 0},
		{"ipv4 only, a CNI IPv6 address alone renders no ip6 table", func(m *packetfilter.Model) {
			*m = baseModel()
			m.CNIIP6 = netip.MustParseAddr("fd01::1")
		}, []string{"ip"}, 0, 0},
		{"dual stack", func(*packetfilter.Model) {}, []string{"ip", "ip6"}, 2, 2},
		{"dual stack, IPv6 CNI address unknown", func(m *packetfilter.Model) { m.CNIIP6 = netip.Addr{} }, []string{"ip", "ip6"}, 2, 0},
		{"ipv6 only: ip weft stays, empty", func(m *packetfilter.Model) {
			m.LocalCIDRs, m.RemoteCIDRs, m.CNIIP = prefixes("fd01::/48"), prefixes("fd02::/48"), netip.Addr{}
		}, []string{"ip", "ip6"}, 0, 2},
		{"only remote IPv6", func(m *packetfilter.Model) { m.LocalCIDRs = baseModel().LocalCIDRs }, []string{"ip", "ip6"}, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := dualModel()
			tt.edit(&m)
			d := mustRender(t, m)
			var names []string
			for _, dt := range d.tables {
				names = append(names, dt.fam.name)
				for set, ivs := range dt.sets {
					for _, iv := range ivs {
						if iv.v6 != (dt.fam == ipv6) {
							t.Errorf("table %s set %s holds %+v", dt.fam.name, set, iv)
						}
					}
				}
			}
			if !slices.Equal(names, tt.tables) {
				t.Fatalf("tables %v, want %v", names, tt.tables)
			}
			if got := countSNAT(d, ipv4); got != tt.snat {
				t.Errorf("%d ip host-snat rules, want %d", got, tt.snat)
			}
			if got := countSNAT(d, ipv6); got != tt.snat6 {
				t.Errorf("%d ip6 host-snat rules, want %d", got, tt.snat6)
			}
		})
	}
	// The IPv4 table of a dual-stack model is the IPv4-only model's table.
	v4 := baseModel()
	v4.CNIIP = netip.MustParseAddr("10.1.2.1")
	a, b := mustRender(t, v4).table(ipv4), mustRender(t, dualModel()).table(ipv4)
	for _, ch := range []string{ChainNAT, ChainMSS, ChainInput, ChainForward} {
		if !slices.Equal(tableTags(&desired{tables: []*desiredTable{a}}, ipv4, ch), tableTags(&desired{tables: []*desiredTable{b}}, ipv4, ch)) {
			t.Errorf("chain %s of ip weft differs with IPv6 in the model", ch)
		}
	}
	if !slices.Equal(a.sets[SetLocal], b.sets[SetLocal]) || !slices.Equal(a.sets[SetRemote], b.sets[SetRemote]) {
		t.Error("sets of ip weft differ with IPv6 in the model")
	}
}

func TestRenderRejectsWrongFamily(t *testing.T) {
	tests := []struct {
		name string
		edit func(*packetfilter.Model)
		want string
	}{
		{"IPv6 in CNIIP", func(m *packetfilter.Model) { m.CNIIP = netip.MustParseAddr("fd00::1") }, "not IPv4"},
		{"IPv4 in CNIIP6", func(m *packetfilter.Model) { m.CNIIP6 = netip.MustParseAddr("10.1.2.1") }, "not IPv6"},
		{"short IPv4-mapped CIDR", func(m *packetfilter.Model) {
			m.RemoteCIDRs = append(m.RemoteCIDRs, netip.MustParsePrefix("::ffff:0:0/64"))
		}, "neither IPv4 nor IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := dualModel()
			tt.edit(&m)
			if _, err := render(m); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("render = %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func TestIvalPrefix(t *testing.T) {
	for _, s := range []string{"10.0.0.0/8", "0.0.0.0/0", "255.255.255.255/32", "255.0.0.0/8", "fd01::/48", "::/0", "ffff::/16", "8000::/1", "fd01::1/128", "::/65", "0:0:0:1::/64"} {
		p := netip.MustParsePrefix(s)
		ivs := prefixIvals([]netip.Prefix{p})
		got, ok := ivs[0].prefix()
		if !ok || got != p {
			t.Errorf("%s: interval %+v reads back as %v (%t)", s, ivs[0], got, ok)
		}
	}
	// Two CIDRs' span is not one CIDR.
	iv := prefixIvals([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")})[0]
	iv.end.lo += 512 // 10.0.0.0-10.0.2.255: three /24s
	if p, ok := iv.prefix(); ok {
		t.Errorf("10.0.0.0-10.0.2.255 read as %v", p)
	}
}

// The tags of ip weft's rules are the ones weft wrote before IPv6 (taken
// from that version): a node upgraded from it keeps its table as it is —
// the first Apply finds every rule in place and sends nothing — with or
// without IPv6 in the model.
func TestIPv4TagsUnchangedByIPv6(t *testing.T) {
	before := map[string][]string{
		ChainNAT:     {"weft:keep-local-remote:28a9234fc4ab", "weft:keep-remote-local:1f793f03d090", "weft:host-snat:409b719bfb70", "weft:host-snat:3fdb8d3ad159"},
		ChainMSS:     {"weft:mss-local-remote:d258a081f300", "weft:mss-remote-local:7dc14d191b73"},
		ChainInput:   {"weft:accept-vxlan:6b2fe7b97125", "weft:accept-iif:e2c9a7800ebd", "weft:accept-iif:e8d8c8dff96e"},
		ChainForward: {"weft:accept-iif:e2c9a7800ebd", "weft:accept-iif:e8d8c8dff96e", "weft:accept-oif:a3d0d64666fd", "weft:accept-oif:1f628cfaddef"},
	}
	v4 := baseModel()
	v4.CNIIP = netip.MustParseAddr("10.1.2.1")
	for name, m := range map[string]packetfilter.Model{"IPv4-only": v4, "dual stack": dualModel()} {
		// The health-check responder's accept (issue 13) is a rule the
		// upgrade adds on purpose; what IPv6 must not change is the rest.
		m.HealthCheckPort = 0
		d := mustRender(t, m)
		for chain, want := range before {
			if got := tags(d, chain); !slices.Equal(got, want) {
				t.Errorf("%s model: ip weft chain %s tags %q, want the pre-IPv6 %q", name, chain, got, want)
			}
		}
	}
}
