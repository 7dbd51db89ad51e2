package bench

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/cidrset"
)

func TestSummarize(t *testing.T) {
	cases := []struct {
		in                  []float64
		median, p99, lo, hi float64
	}{
		{[]float64{3, 1, 2}, 2, 2.98, 1, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 3.97, 1, 4},
		{[]float64{7}, 7, 7, 7, 7},
	}
	for _, c := range cases {
		s := Summarize(c.in)
		if s.N != len(c.in) || s.Median != c.median || math.Abs(s.P99-c.p99) > 1e-9 || s.Min != c.lo || s.Max != c.hi {
			t.Errorf("Summarize(%v) = %+v", c.in, s)
		}
	}
	if s := Summarize(nil); s.N != 0 {
		t.Errorf("empty: %+v", s)
	}
}

func TestFinishGoals(t *testing.T) {
	f, tr := false, true
	cases := []struct {
		name string
		row  Row
		want bool
	}{
		{"max met", Row{Weft: Summary{N: 3, Median: 2}, Goal: &Goal{Max: 3}}, true},
		{"max missed", Row{Weft: Summary{N: 3, Median: 4}, Goal: &Goal{Max: 3}}, false},
		{"ratio met", Row{Weft: Summary{N: 3, Median: 1.1}, Ref: &Summary{N: 3, Median: 1}, Goal: &Goal{MaxRatio: 1.2}}, true},
		{"ratio missed", Row{Weft: Summary{N: 3, Median: 1.3}, Ref: &Summary{N: 3, Median: 1}, Goal: &Goal{MaxRatio: 1.2}}, false},
		{"min ratio missed", Row{Weft: Summary{N: 3, Median: 0.5}, Ref: &Summary{N: 3, Median: 1}, Goal: &Goal{MinRatio: 0.7}}, false},
		{"ratio without reference", Row{Weft: Summary{N: 3, Median: 1}, Goal: &Goal{MaxRatio: 1.2}}, false},
		{"cond false", Row{Weft: Summary{N: 3, Median: 1}, Goal: &Goal{Max: 3}, Cond: &f}, false},
		{"cond true", Row{Weft: Summary{N: 3, Median: 1}, Goal: &Goal{Max: 3}, Cond: &tr}, true},
		{"p99", Row{Weft: Summary{N: 3, Median: 1, P99: 9}, Goal: &Goal{Max: 3, UseP99: true}}, false},
	}
	for _, c := range cases {
		c.row.Finish()
		if c.row.Met == nil || *c.row.Met != c.want {
			t.Errorf("%s: met = %v, want %v", c.name, c.row.Met, c.want)
		}
	}
}

// The remote CIDRs must stay distinct intervals after weft merges them,
// or the "N CIDRs" of figure 3 would be fewer set elements.
func TestRemoteCIDRsDoNotMerge(t *testing.T) {
	for _, n := range []int{1, 10, 10001} {
		ps := RemoteCIDRs(n)
		seen := map[netip.Prefix]bool{}
		for _, p := range ps {
			if p.Bits() != 24 || seen[p] {
				t.Fatalf("n=%d: bad or repeated %s", n, p)
			}
			seen[p] = true
		}
		if got := len(cidrset.Merge(ps)); got != n {
			t.Fatalf("n=%d: merged into %d", n, got)
		}
	}
}

func ms(v float64) []time.Duration {
	return []time.Duration{time.Duration(v * float64(time.Millisecond))}
}
