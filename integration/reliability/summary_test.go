package reliability

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	cases := []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(5, 1, 4, 2, 3), 50, 3 * time.Millisecond},
		{ms(5, 1, 4, 2, 3), 100, 5 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
	}
	for _, c := range cases {
		if got := Percentile(c.in, c.p); got != c.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", c.in, c.p, got, c.want)
		}
	}
}

func TestSummaryTable(t *testing.T) {
	s := NewSummary()
	s.Case(PLoad, true)
	s.Case(PLoad, false)
	s.Figure(PLoad, "%d verbs/s", 42)
	s.Case("extra", true)
	var b bytes.Buffer
	s.Fprint(&b, Size{})
	out := b.String()
	for _, want := range []string{"short form", "1 load", "42 verbs/s", "<-- FAILED", "9 security", "extra"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if tried, passed := s.Counts(PLoad); tried != 2 || passed != 1 {
		t.Errorf("counts = %d/%d, want 2/1", tried, passed)
	}
}
