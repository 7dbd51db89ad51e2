package cidrset

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
)

func pfx(t testing.TB, ss ...string) []netip.Prefix {
	t.Helper()
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			t.Fatalf("parse %q: %v", s, err)
		}
		out = append(out, p)
	}
	return out
}

func TestMerge(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"empty", nil, []string{}},
		{"single", []string{"10.1.0.0/16"}, []string{"10.1.0.0/16"}},
		{"host bits masked", []string{"10.1.2.3/16"}, []string{"10.1.0.0/16"}},
		{"duplicate", []string{"10.1.0.0/16", "10.1.0.0/16"}, []string{"10.1.0.0/16"}},
		{"contained dropped", []string{"10.1.2.0/24", "10.1.0.0/16", "10.1.200.7/32"}, []string{"10.1.0.0/16"}},
		{"siblings merged", []string{"10.0.1.0/24", "10.0.0.0/24"}, []string{"10.0.0.0/23"}},
		{"sibling chain merged", []string{"10.0.0.0/25", "10.0.0.128/26", "10.0.0.192/26", "10.0.1.0/24"}, []string{"10.0.0.0/23"}},
		{"adjacent non-siblings stay", []string{"10.0.1.0/24", "10.0.2.0/24"}, []string{"10.0.1.0/24", "10.0.2.0/24"}},
		{"sorted", []string{"192.168.0.0/16", "10.2.0.0/16", "10.1.0.0/16"}, []string{"10.1.0.0/16", "10.2.0.0/16", "192.168.0.0/16"}},
		{"default route", []string{"0.0.0.0/0", "10.0.0.0/8"}, []string{"0.0.0.0/0"}},
		{"halves make everything", []string{"128.0.0.0/1", "0.0.0.0/1"}, []string{"0.0.0.0/0"}},
		{"top of space", []string{"255.255.255.255/32", "255.255.255.254/32"}, []string{"255.255.255.254/31"}},
		{"ipv6 ignored", []string{"fd00::/64", "10.0.0.0/8"}, []string{"10.0.0.0/8"}},
		{"mapped ipv4", []string{"::ffff:10.0.0.0/104"}, []string{"10.0.0.0/8"}},
		{"overlap partial", []string{"10.0.0.0/23", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"}, []string{"10.0.0.0/22"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Merge(pfx(t, tt.in...))
			want := pfx(t, tt.want...)
			if !slices.Equal(got, want) {
				t.Fatalf("Merge(%v) = %v, want %v", tt.in, got, want)
			}
		})
	}
}

func TestMergeOrderIndependent(t *testing.T) {
	in := pfx(t, "10.0.3.0/24", "10.0.0.0/24", "10.9.0.0/16", "10.0.1.0/24", "10.0.2.0/25")
	want := Merge(in)
	rev := slices.Clone(in)
	slices.Reverse(rev)
	if got := Merge(rev); !slices.Equal(got, want) {
		t.Fatalf("reversed input: got %v, want %v", got, want)
	}
}

func TestIntervals(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want [][2]string // start, end ("" = open to the end of the space)
	}{
		{"one", []string{"10.1.0.0/16"}, [][2]string{{"10.1.0.0", "10.2.0.0"}}},
		{"touching kept apart", []string{"10.0.1.0/24", "10.0.2.0/24"}, [][2]string{{"10.0.1.0", "10.0.2.0"}, {"10.0.2.0", "10.0.3.0"}}},
		{"overlap merged", []string{"10.0.0.0/24", "10.0.0.0/16"}, [][2]string{{"10.0.0.0", "10.1.0.0"}}},
		{"open end", []string{"255.0.0.0/8"}, [][2]string{{"255.0.0.0", ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Intervals(pfx(t, tt.in...))
			if len(got) != len(tt.want) {
				t.Fatalf("Intervals(%v) = %v, want %v", tt.in, got, tt.want)
			}
			for i, iv := range got {
				if s := iv.StartAddr().String(); s != tt.want[i][0] {
					t.Errorf("interval %d start = %s, want %s", i, s, tt.want[i][0])
				}
				e, ok := iv.EndAddr()
				es := ""
				if ok {
					es = e.String()
				}
				if es != tt.want[i][1] {
					t.Errorf("interval %d end = %q, want %q", i, es, tt.want[i][1])
				}
			}
		})
	}
}

// decodePrefixes turns fuzz bytes into prefixes: 5 bytes each, 4 address
// bytes and a length byte (mod 33).
func decodePrefixes(data []byte) []netip.Prefix {
	var out []netip.Prefix
	for len(data) >= 5 {
		a := netip.AddrFrom4([4]byte(data[:4]))
		out = append(out, netip.PrefixFrom(a, int(data[4])%33))
		data = data[5:]
	}
	return out
}

func contains(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

func FuzzMerge(f *testing.F) {
	seed := func(ps ...string) []byte {
		var b []byte
		for _, p := range pfx(f, ps...) {
			a := p.Addr().As4()
			b = append(b, a[:]...)
			b = append(b, byte(p.Bits()))
		}
		return b
	}
	f.Add(seed("10.0.0.0/24", "10.0.1.0/24"))
	f.Add(seed("0.0.0.0/0", "10.0.0.0/8"))
	f.Add(seed("255.255.255.255/32", "255.255.255.254/32", "1.2.3.4/7"))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := decodePrefixes(data)
		out := Merge(in)
		for i, o := range out {
			if o != o.Masked() || !o.Addr().Is4() {
				t.Fatalf("output %v is not a masked IPv4 prefix", o)
			}
			if i > 0 {
				prev := out[i-1]
				if prev.Addr().Compare(o.Addr()) >= 0 {
					t.Fatalf("output not sorted: %v before %v", prev, o)
				}
				if prev.Overlaps(o) {
					t.Fatalf("outputs overlap: %v and %v", prev, o)
				}
			}
		}
		// Every input address is in the output: each input prefix lies
		// inside exactly one output prefix (aligned blocks nest).
		for _, p := range in {
			p = p.Masked()
			n := 0
			for _, o := range out {
				if contains(o, p) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("input %v inside %d output prefixes %v", p, n, out)
			}
		}
		// Every output address is in the input: the inputs inside each output
		// prefix cover it without a gap.
		for _, o := range out {
			var inside []netip.Prefix
			for _, p := range in {
				if p = p.Masked(); contains(o, p) {
					inside = append(inside, p)
				}
			}
			slices.SortFunc(inside, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
			next := uint64(binary.BigEndian.Uint32(o.Addr().AsSlice()))
			end := next + uint64(1)<<(32-o.Bits())
			for _, p := range inside {
				s := uint64(binary.BigEndian.Uint32(p.Addr().AsSlice()))
				if s > next {
					break
				}
				next = max(next, s+uint64(1)<<(32-p.Bits()))
			}
			if next < end {
				t.Fatalf("output %v not covered by input %v", o, in)
			}
		}
		if again := Merge(out); !slices.Equal(again, out) {
			t.Fatalf("not idempotent: Merge(%v) = %v", out, again)
		}
		// Minimality: no two outputs are siblings (they would merge).
		for i := 1; i < len(out); i++ {
			a, b := out[i-1], out[i]
			if a.Bits() == b.Bits() && a.Bits() > 0 {
				pa, _ := a.Addr().Prefix(a.Bits() - 1)
				pb, _ := b.Addr().Prefix(b.Bits() - 1)
				if pa == pb {
					t.Fatalf("siblings %v and %v not merged", a, b)
				}
			}
		}
	})
}

func TestMerge6(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"empty", nil, []string{}},
		{"host bits masked", []string{"fd01::1/48"}, []string{"fd01::/48"}},
		{"contained dropped", []string{"fd01:0:0:5::/64", "fd01::/48", "fd01::1/128"}, []string{"fd01::/48"}},
		{"siblings merged", []string{"fd01:0:1::/48", "fd01::/48"}, []string{"fd01::/47"}},
		{"sibling chain merged", []string{"fd00::/9", "fd80::/10", "fdc0::/10", "fc00::/8"}, []string{"fc00::/7"}},
		{"adjacent non-siblings stay", []string{"fd01:0:1::/48", "fd01:0:2::/48"}, []string{"fd01:0:1::/48", "fd01:0:2::/48"}},
		{"sorted", []string{"fd04::/16", "2001:db8::/32", "fd02::/16"}, []string{"2001:db8::/32", "fd02::/16", "fd04::/16"}},
		{"everything", []string{"8000::/1", "::/1", "fd00::/8"}, []string{"::/0"}},
		{"top of space", []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/128"}, []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"}},
		{"ipv4 and mapped ignored", []string{"10.0.0.0/8", "::ffff:10.0.0.0/104", "fd00::/8"}, []string{"fd00::/8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Merge6(pfx(t, tt.in...))
			if want := pfx(t, tt.want...); !slices.Equal(got, want) {
				t.Fatalf("Merge6(%v) = %v, want %v", tt.in, got, want)
			}
		})
	}
}

// Merge6 and Merge agree: IPv4 prefixes embedded in an IPv6 /96 merge to
// the embedding of Merge's result, on random inputs.
func TestMerge6AgreesWithMerge(t *testing.T) {
	embed := func(p netip.Prefix) netip.Prefix {
		b := netip.MustParseAddr("2001:db8::").As16()
		v := p.Addr().As4()
		copy(b[12:], v[:])
		return netip.PrefixFrom(netip.AddrFrom16(b), 96+p.Bits())
	}
	seed := uint64(1)
	next := func() uint64 { seed = seed*6364136223846793005 + 1442695040888963407; return seed >> 33 }
	for round := range 200 {
		var in, in6 []netip.Prefix
		for range 1 + round%40 {
			var a [4]byte
			binary.BigEndian.PutUint32(a[:], uint32(next())&0x0fff_ff00)
			p := netip.PrefixFrom(netip.AddrFrom4(a), 14+int(next()%14)).Masked()
			in, in6 = append(in, p), append(in6, embed(p))
		}
		var want []netip.Prefix
		for _, p := range Merge(in) {
			want = append(want, embed(p))
		}
		if got := Merge6(in6); !slices.Equal(got, want) {
			t.Fatalf("round %d: Merge6 = %v, want %v (from %v)", round, got, want, in)
		}
	}
}
