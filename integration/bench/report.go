// Package bench measures weft against its anchors, side by side in one run
// on one machine: every figure has its reference measured in the same run,
// interleaved where the two can be, and is reported as a median with its
// min/max (and p99 where tails matter) over repeated runs. Goals are
// reported as met or not met; nothing here asserts them.
//
// `make bench` drives it through cmd/weftbench, which prints one table and
// writes the same rows as JSON to bench-results.json.
package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Summary describes repeated measurements of one quantity.
type Summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	P99    float64 `json:"p99"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// Summarize computes the summary of xs (unsorted; not modified).
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return Summary{N: len(s), Median: Quantile(s, 0.5), P99: Quantile(s, 0.99), Min: s[0], Max: s[len(s)-1]}
}

// Quantile returns the q-quantile of sorted xs, interpolating linearly
// between the closest ranks (the "R-7" definition most tools use).
func Quantile(sorted []float64, q float64) float64 {
	switch len(sorted) {
	case 0:
		return math.NaN()
	case 1:
		return sorted[0]
	}
	h := q * float64(len(sorted)-1)
	lo := int(math.Floor(h))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	return sorted[lo] + (h-float64(lo))*(sorted[lo+1]-sorted[lo])
}

// Ms converts durations to milliseconds for Summarize.
func Ms(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}

// Goal is a target a figure is reported against.
type Goal struct {
	// Text is the goal as the issue states it.
	Text string `json:"text"`
	// Max is the absolute upper bound on the weft median (0 = none); Min
	// the lower bound (0 = none).
	Max float64 `json:"max,omitempty"`
	Min float64 `json:"min,omitempty"`
	// MaxRatio bounds weft/reference (0 = none); MinRatio is its floor.
	MaxRatio float64 `json:"maxRatio,omitempty"`
	MinRatio float64 `json:"minRatio,omitempty"`
	// UseP99 checks Max against the p99 instead of the median.
	UseP99 bool `json:"useP99,omitempty"`
}

// Row is one figure of the table.
type Row struct {
	ID     string `json:"id"` // "1a", "3-nft-full-1000", …
	Figure string `json:"figure"`
	Unit   string `json:"unit"`
	// Weft is what weft measured; Ref its reference in the same run (nil
	// when the figure has no reference).
	Weft    Summary  `json:"weft"`
	RefName string   `json:"refName,omitempty"`
	Ref     *Summary `json:"ref,omitempty"`
	// Ratio is Weft.Median / Ref.Median (0 without a reference).
	Ratio float64 `json:"ratio,omitempty"`
	Goal  *Goal   `json:"goal,omitempty"`
	// Met is nil when the row has no goal.
	Met *bool `json:"met,omitempty"`
	// Cond is a non-numeric part of the goal (e.g. "only the changed
	// elements were sent"); false makes Met false.
	Cond *bool `json:"cond,omitempty"`
	// Note carries caveats (extrapolated, resolution, what dominates).
	Note string `json:"note,omitempty"`
	// Extra holds supporting numbers (netlink messages, phase timings).
	Extra map[string]any `json:"extra,omitempty"`
}

// Finish computes Ratio and Met.
func (r *Row) Finish() {
	if r.Ref != nil && r.Ref.Median != 0 {
		r.Ratio = r.Weft.Median / r.Ref.Median
	}
	if r.Goal == nil || r.Weft.N == 0 {
		return
	}
	g, v := r.Goal, r.Weft.Median
	if g.UseP99 {
		v = r.Weft.P99
	}
	met := true
	if g.Max != 0 && v > g.Max {
		met = false
	}
	if g.Min != 0 && r.Weft.Median < g.Min {
		met = false
	}
	if g.MaxRatio != 0 && (r.Ref == nil || r.Ratio > g.MaxRatio) {
		met = false
	}
	if g.MinRatio != 0 && (r.Ref == nil || r.Ratio < g.MinRatio) {
		met = false
	}
	if r.Cond != nil && !*r.Cond {
		met = false
	}
	r.Met = &met
}

// Machine describes where and under which load the run happened.
type Machine struct {
	NProc       int       `json:"nproc"`
	Kernel      string    `json:"kernel"`
	GoVersion   string    `json:"goVersion"`
	LoadStart   string    `json:"loadavgStart"`
	LoadEnd     string    `json:"loadavgEnd"`
	Started     time.Time `json:"started"`
	DurationSec float64   `json:"durationSec"`
}

// Results is the JSON document written to bench-results.json.
type Results struct {
	Command string   `json:"command"`
	Quick   bool     `json:"quick"`
	Machine Machine  `json:"machine"`
	Rows    []Row    `json:"rows"`
	Errors  []string `json:"errors,omitempty"`
}

// StartMachine records the machine and its load at the start of a run.
func StartMachine() Machine {
	k, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return Machine{
		NProc:     runtime.NumCPU(),
		Kernel:    strings.TrimSpace(string(k)),
		GoVersion: runtime.Version(),
		LoadStart: LoadAvg(),
		Started:   time.Now().UTC(),
	}
}

// LoadAvg is the first three fields of /proc/loadavg.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}

// WriteJSON writes res to path (indented).
func WriteJSON(path string, res Results) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// fmtNum prints a number with 3 significant digits or so.
func fmtNum(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// Cell renders a summary as "median [min–max]" (plus p99 when asked).
func Cell(s Summary, unit string, p99 bool) string {
	if s.N == 0 {
		if s.Median != 0 {
			return "~" + fmtNum(s.Median) + " " + unit + " (extrapolated)"
		}
		return "-"
	}
	c := fmtNum(s.Median) + " " + unit
	if s.N > 1 {
		c += " [" + fmtNum(s.Min) + "–" + fmtNum(s.Max) + "]"
		if p99 {
			c += " p99 " + fmtNum(s.P99)
		}
	}
	return c
}

// WriteTable prints the rows as the table `make bench` shows.
func WriteTable(w io.Writer, res Results) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "id\tfigure\tweft (median [min–max])\treference\tratio\tgoal\tmet")
	for _, r := range res.Rows {
		ref := "-"
		if r.Ref != nil {
			ref = r.RefName + ": " + Cell(*r.Ref, r.Unit, false)
		} else if r.RefName != "" {
			ref = r.RefName
		}
		ratio := "-"
		if r.Ratio != 0 {
			ratio = fmtNum(r.Ratio) + "×"
		}
		goal, met := "-", "-"
		if r.Goal != nil {
			goal = r.Goal.Text
		}
		if r.Met != nil {
			met = map[bool]string{true: "met", false: "NOT MET"}[*r.Met]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Figure, Cell(r.Weft, r.Unit, false), ref, ratio, goal, met)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notes []string
	for _, r := range res.Rows {
		if r.Note != "" {
			notes = append(notes, fmt.Sprintf("  %s: %s", r.ID, r.Note))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "notes:")
		fmt.Fprintln(w, strings.Join(notes, "\n"))
	}
	for _, e := range res.Errors {
		fmt.Fprintln(w, "ERROR:", e)
	}
	m := res.Machine
	fmt.Fprintf(w, "machine: %d CPUs, kernel %s, %s; loadavg start %s, end %s; %.0f s\n",
		m.NProc, m.Kernel, m.GoVersion, m.LoadStart, m.LoadEnd, m.DurationSec)
	return nil
}
