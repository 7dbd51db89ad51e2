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
	for _, want := range []string{"short form", "1 load", "42 verbs/s", "NOT MET (1 failed)", "9 security", "extra"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if tried, passed := s.Counts(PLoad); tried != 2 || passed != 1 {
		t.Errorf("counts = %d/%d, want 2/1", tried, passed)
	}
}

// skippedTB is a test that skipped (or failed) without running anything.
type skippedTB struct {
	testing.TB
	skipped, failed bool
}

func (s skippedTB) Skipped() bool { return s.skipped }
func (s skippedTB) Failed() bool  { return s.failed }

// A run where every case skipped is not a pass: every promise says NOT MET
// (not tried) with its skipped count, and Unmet lists them all. A promise
// with a skipped case next to a passing one is met (issue 9, point 11).
func TestSummaryAllSkippedIsNotMet(t *testing.T) {
	s := NewSummary()
	for _, p := range promises {
		s.Track(skippedTB{skipped: true}, p)()
		s.TrackSkip(skippedTB{skipped: true}, p)()
	}
	var b bytes.Buffer
	s.Fprint(&b, Size{})
	out := b.String()
	if got := s.Unmet(); len(got) != len(promises) {
		t.Errorf("Unmet = %v, want every promise", got)
	}
	for _, p := range promises {
		var line string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, p+" ") {
				line = l
			}
		}
		if !strings.Contains(line, "NOT MET (not tried)") || !strings.Contains(strings.Join(strings.Fields(line), " "), " 0 0 2 ") {
			t.Errorf("row of %q = %q, want 0 tried, 0 passed, 2 skipped, NOT MET (not tried)", p, line)
		}
	}
	if !strings.Contains(out, "9 of 9 promises NOT MET") {
		t.Errorf("table does not end with the verdict:\n%s", out)
	}

	s = NewSummary()
	for _, p := range promises {
		s.Track(skippedTB{}, p)()
	}
	s.Track(skippedTB{skipped: true}, PLoad)()
	s.TrackSkip(skippedTB{}, PLoad)() // ran: not counted
	if got := s.Unmet(); len(got) != 0 {
		t.Errorf("Unmet = %v with every promise passing once", got)
	}
	if tried, passed := s.Counts(PLoad); tried != 1 || passed != 1 {
		t.Errorf("PLoad counts %d/%d, want 1/1", tried, passed)
	}
	s.Track(skippedTB{failed: true}, PAway)()
	if got := s.Unmet(); len(got) != 1 || got[0] != PAway {
		t.Errorf("Unmet = %v, want [%s] after a failure", got, PAway)
	}
}
