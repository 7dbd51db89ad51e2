// Package reliability holds the figures helper of weft's reliability suite
// (the tests in this directory try to break weft under load, crashes,
// faults and hostile input): the run's size (short for `make test`, full for
// `make reliability`), latency percentiles, and the summary table printed at
// the end of the run.
package reliability

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The promises of the reliability issue, in the order the table prints them.
const (
	PLoad      = "1 load"
	PCrash     = "2 crash anywhere"
	PAway      = "3 daemon away"
	PFaults    = "4 faults from outside"
	PPlugin    = "5 bad input, plugin"
	PAPI       = "6 bad input, daemon API"
	PFuzz      = "7 fuzzing"
	PCoexist   = "8 coexistence"
	PSecurity  = "9 security"
	modeEnvVar = "WEFT_RELIABILITY"
)

var promises = []string{PLoad, PCrash, PAway, PFaults, PPlugin, PAPI, PFuzz, PCoexist, PSecurity}

// Size is how hard one run pushes. Both sizes assert the same invariants.
type Size struct {
	Full bool
	// Pods attached and detached in the load test, InFlight at a time.
	Pods, InFlight int
	// ChurnKills and ApplyKills: kill -9 moments during churn and during
	// the apply of RemoteCIDRs remote CIDRs.
	ChurnKills, ApplyKills, RemoteCIDRs int
	// AbandonedConns opened against the daemon API and left hanging.
	AbandonedConns int
}

// SizeFromEnv returns the full size when WEFT_RELIABILITY=full, else the
// short one that `make test` runs.
func SizeFromEnv(getenv func(string) string) Size {
	if getenv(modeEnvVar) == "full" {
		return Size{Full: true, Pods: 200, InFlight: 16, ChurnKills: 10, ApplyKills: 10, RemoteCIDRs: 1000, AbandonedConns: 1000}
	}
	return Size{Pods: 50, InFlight: 8, ChurnKills: 3, ApplyKills: 2, RemoteCIDRs: 1000, AbandonedConns: 1000}
}

func (s Size) String() string {
	if s.Full {
		return "full"
	}
	return "short"
}

// Summary collects, per promise, the cases tried and passed and the figures
// measured. It is safe for concurrent use.
type Summary struct {
	mu   sync.Mutex
	rows map[string]*row
}

type row struct {
	tried, passed, skipped int
	figures                []string
}

// met: a promise is met only when it was tried and every case passed. A
// promise whose cases all skipped (no root, a tool missing) is not met: a
// table of zeros must not read as a pass.
func (r *row) met() bool { return r.tried > 0 && r.passed == r.tried }

// NewSummary returns an empty summary.
func NewSummary() *Summary { return &Summary{rows: map[string]*row{}} }

func (s *Summary) row(p string) *row {
	r := s.rows[p]
	if r == nil {
		r = &row{}
		s.rows[p] = r
	}
	return r
}

// Track counts t as one case of promise p when the returned func runs
// (defer it): passed unless t failed, skipped if t skipped.
func (s *Summary) Track(t testing.TB, p string) func() {
	return func() {
		if t.Skipped() {
			s.Skip(p)
			return
		}
		s.Case(p, !t.Failed())
	}
}

// TrackSkip counts t as a skipped case of p if it skipped, and nothing
// otherwise: for a test whose cases are subtests that Track themselves but
// which may skip before reaching them (no root, a tool missing).
func (s *Summary) TrackSkip(t testing.TB, p string) func() {
	return func() {
		if t.Skipped() {
			s.Skip(p)
		}
	}
}

// Skip counts one skipped case of promise p.
func (s *Summary) Skip(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.row(p).skipped++
}

// Unmet lists the promises, in table order, that were not tried or had a
// failing case.
func (s *Summary) Unmet() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.names() {
		if !s.row(p).met() {
			out = append(out, p)
		}
	}
	return out
}

func (s *Summary) names() []string {
	names := append([]string(nil), promises...)
	for p := range s.rows {
		if !slices.Contains(names, p) {
			names = append(names, p)
		}
	}
	return names
}

// Case counts one case of promise p.
func (s *Summary) Case(p string, passed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.row(p)
	r.tried++
	if passed {
		r.passed++
	}
}

// Figure adds a measured figure to promise p.
func (s *Summary) Figure(p, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.row(p)
	r.figures = append(r.figures, fmt.Sprintf(format, args...))
}

// Counts returns the cases tried and passed for p.
func (s *Summary) Counts(p string) (tried, passed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.row(p)
	return r.tried, r.passed
}

// Fprint writes the table: promise, cases tried, passed and skipped,
// whether the promise is met, figures. Every promise has a row: one that
// was not tried says so and is not met.
func (s *Summary) Fprint(w io.Writer, size Size) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := s.names()
	width := len("promise")
	for _, p := range names {
		width = max(width, len(p))
	}
	line := strings.Repeat("-", width+2+6+2+6+2+7+2+24+2+30)
	fmt.Fprintf(w, "\nweft reliability summary (%s form)\n%s\n", size, line)
	fmt.Fprintf(w, "%-*s  %6s  %6s  %7s  %-24s  %s\n%s\n", width, "promise", "tried", "passed", "skipped", "verdict", "figures", line)
	unmet := 0
	for _, p := range names {
		r := s.row(p)
		fig := strings.Join(r.figures, "; ")
		if fig == "" {
			fig = "-"
		}
		verdict := "met"
		switch {
		case r.tried == 0:
			verdict = "NOT MET (not tried)"
		case r.passed != r.tried:
			verdict = fmt.Sprintf("NOT MET (%d failed)", r.tried-r.passed)
		}
		if !r.met() {
			unmet++
		}
		fmt.Fprintf(w, "%-*s  %6d  %6d  %7d  %-24s  %s\n", width, p, r.tried, r.passed, r.skipped, verdict, fig)
	}
	fmt.Fprintln(w, line)
	if unmet > 0 {
		fmt.Fprintf(w, "%d of %d promises NOT MET\n", unmet, len(names))
	} else {
		fmt.Fprintf(w, "all %d promises met\n", len(names))
	}
}

// Percentile returns the p-th percentile (0 < p <= 100) of ds by the
// nearest-rank method; 0 for no samples. ds is not modified.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(float64(len(s))*p/100+0.999999) - 1
	rank = min(max(rank, 0), len(s)-1)
	return s[rank]
}

// Ms formats a duration in milliseconds with one decimal.
func Ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
