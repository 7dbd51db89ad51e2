package config

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// twoRemotes is valid.yaml (local c1: 10.1.0.0/16, 10.101.0.0/16; remote
// c2: 10.2.0.0/16, 10.102.0.0/16) plus a remote c3 (10.3.0.0/16,
// 10.103.0.0/16), so that overlaps have partners of every kind.
func twoRemotes(t *testing.T) map[string]any {
	t.Helper()
	doc := loadDoc(t, "valid.yaml")
	set(t, doc, "remotes", append(doc["remotes"].([]any), map[string]any{
		"id": "c3", "podCIDRs": []any{"10.3.0.0/16"}, "serviceCIDRs": []any{"10.103.0.0/16"}, "gatewayIP": "192.168.30.11",
	}))
	return doc
}

// mutation sets a value at a path of a test document (see set).
type mutation struct {
	path  string
	value any
}

func mutate(t *testing.T, doc map[string]any, muts []mutation) {
	t.Helper()
	for _, m := range muts {
		set(t, doc, m.path, m.value)
	}
}

// refused parses doc after muts and asserts it is refused with exactly the
// field paths want; it returns the error.
func refused(t *testing.T, doc map[string]any, muts []mutation, want []string) *ValidationError {
	t.Helper()
	mutate(t, doc, muts)
	cfg, err := ParseWith(render(t, doc), testEnv("", ""))
	if cfg != nil {
		t.Errorf("returned a config along with the error")
	}
	assertPaths(t, err, want)
	var ve *ValidationError
	errors.As(err, &ve)
	return ve
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// Nested and duplicate CIDRs of one owner (a remote, or the local
// cluster) are merged into the entry that covers them, with a warning
// naming both; adjacent CIDRs do not overlap and are left as written.
func TestMergeWithinOneOwner(t *testing.T) {
	type warning struct{ path, text string }
	tests := []struct {
		name     string
		muts     []mutation
		local    [2][]netip.Prefix // pod, service
		remote0  [2][]netip.Prefix // c2's pod, service
		warnings []warning
	}{
		{
			name:     "nested in one remote's pod CIDRs",
			muts:     []mutation{{"remotes[0].podCIDRs", []any{"10.2.0.0/16", "10.2.5.0/24"}}},
			remote0:  [2][]netip.Prefix{prefixes("10.2.0.0/16"), prefixes("10.102.0.0/16")},
			warnings: []warning{{"remotes[0].podCIDRs[1]", `"10.2.5.0/24" is inside remotes[0].podCIDRs[0] "10.2.0.0/16" of the same remote "c2": merged into it`}},
		},
		{
			name:     "more specific listed first",
			muts:     []mutation{{"remotes[0].podCIDRs", []any{"10.2.5.0/24", "10.2.0.0/16"}}},
			remote0:  [2][]netip.Prefix{prefixes("10.2.0.0/16"), prefixes("10.102.0.0/16")},
			warnings: []warning{{"remotes[0].podCIDRs[0]", `inside remotes[0].podCIDRs[1] "10.2.0.0/16"`}},
		},
		{
			name:     "duplicate",
			muts:     []mutation{{"remotes[0].podCIDRs", []any{"10.2.0.0/16", "10.2.0.0/16"}}},
			remote0:  [2][]netip.Prefix{prefixes("10.2.0.0/16"), prefixes("10.102.0.0/16")},
			warnings: []warning{{"remotes[0].podCIDRs[1]", `"10.2.0.0/16" repeats remotes[0].podCIDRs[0]: merged`}},
		},
		{
			name:    "two concatenated lists",
			muts:    []mutation{{"remotes[0].podCIDRs", []any{"10.2.0.0/16", "10.12.0.0/16", "10.2.0.0/16", "10.12.0.0/16"}}},
			remote0: [2][]netip.Prefix{prefixes("10.2.0.0/16", "10.12.0.0/16"), prefixes("10.102.0.0/16")},
			warnings: []warning{
				{"remotes[0].podCIDRs[2]", "repeats remotes[0].podCIDRs[0]"},
				{"remotes[0].podCIDRs[3]", "repeats remotes[0].podCIDRs[1]"},
			},
		},
		{
			name:     "across one remote's pod and service lists",
			muts:     []mutation{{"remotes[0].serviceCIDRs", []any{"10.102.0.0/16", "10.2.128.0/17"}}},
			remote0:  [2][]netip.Prefix{prefixes("10.2.0.0/16"), prefixes("10.102.0.0/16")},
			warnings: []warning{{"remotes[0].serviceCIDRs[1]", `inside remotes[0].podCIDRs[0] "10.2.0.0/16"`}},
		},
		{
			name:    "a chain names what stays in force",
			muts:    []mutation{{"remotes[0].podCIDRs", []any{"10.2.0.0/16", "10.2.5.0/24", "10.2.5.128/25"}}},
			remote0: [2][]netip.Prefix{prefixes("10.2.0.0/16"), prefixes("10.102.0.0/16")},
			warnings: []warning{
				{"remotes[0].podCIDRs[1]", "inside remotes[0].podCIDRs[0]"},
				{"remotes[0].podCIDRs[2]", "inside remotes[0].podCIDRs[0]"},
			},
		},
		{
			name:     "local service CIDR inside the local pod CIDR",
			muts:     []mutation{{"cluster.serviceCIDRs", []any{"10.1.0.0/24"}}},
			local:    [2][]netip.Prefix{prefixes("10.1.0.0/16"), nil},
			warnings: []warning{{"cluster.serviceCIDRs[0]", `"10.1.0.0/24" is inside cluster.podCIDRs[0] "10.1.0.0/16" of the same local cluster: merged into it`}},
		},
		{
			name:     "local duplicate",
			muts:     []mutation{{"cluster.podCIDRs", []any{"10.1.0.0/16", "10.1.0.0/16"}}},
			local:    [2][]netip.Prefix{prefixes("10.1.0.0/16"), prefixes("10.101.0.0/16")},
			warnings: []warning{{"cluster.podCIDRs[1]", "repeats cluster.podCIDRs[0]"}},
		},
		{
			name:    "adjacent: not an overlap, kept as written",
			muts:    []mutation{{"remotes[0].podCIDRs", []any{"10.2.0.0/17", "10.2.128.0/17"}}},
			remote0: [2][]netip.Prefix{prefixes("10.2.0.0/17", "10.2.128.0/17"), prefixes("10.102.0.0/16")},
		},
		{
			name:  "adjacent local lists",
			muts:  []mutation{{"cluster.serviceCIDRs", []any{"10.0.0.0/16"}}},
			local: [2][]netip.Prefix{prefixes("10.1.0.0/16"), prefixes("10.0.0.0/16")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := twoRemotes(t)
			mutate(t, doc, tc.muts)
			cfg, err := ParseWith(render(t, doc), testEnv("", ""))
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			p := cfg.Parsed
			if tc.local[0] == nil {
				tc.local = [2][]netip.Prefix{prefixes("10.1.0.0/16"), prefixes("10.101.0.0/16")}
			}
			if tc.remote0[0] == nil {
				tc.remote0 = [2][]netip.Prefix{prefixes("10.2.0.0/16"), prefixes("10.102.0.0/16")}
			}
			if got := [2][]netip.Prefix{p.PodCIDRs, p.ServiceCIDRs}; !reflect.DeepEqual(got, tc.local) {
				t.Errorf("local CIDRs = %v, want %v", got, tc.local)
			}
			if got := [2][]netip.Prefix{p.Remotes[0].PodCIDRs, p.Remotes[0].ServiceCIDRs}; !reflect.DeepEqual(got, tc.remote0) {
				t.Errorf("remote c2 CIDRs = %v, want %v", got, tc.remote0)
			}
			if len(p.Warnings) != len(tc.warnings) {
				t.Fatalf("warnings = %v, want %d", p.Warnings, len(tc.warnings))
			}
			for i, w := range tc.warnings {
				if p.Warnings[i].Path != w.path || !strings.Contains(p.Warnings[i].Reason, w.text) {
					t.Errorf("warning %d = %q, want %s: …%s…", i, p.Warnings[i], w.path, w.text)
				}
			}
			if len(tc.warnings) > 0 && !strings.Contains(cfg.WarningSummary(), tc.warnings[0].path) {
				t.Errorf("WarningSummary() = %q lacks %s", cfg.WarningSummary(), tc.warnings[0].path)
			}
		})
	}
}

// Between two remotes, or a remote and the local cluster, an overlap stays
// an error: it names both entries and why (the route would be ambiguous).
func TestOverlapBetweenOwnersRefused(t *testing.T) {
	tests := []struct {
		name  string
		muts  []mutation
		paths []string
		text  string // the whole reason of the first error
	}{
		{
			name:  "remote inside another remote",
			muts:  []mutation{{"remotes[1].podCIDRs", []any{"10.2.5.0/24"}}},
			paths: []string{"remotes[1].podCIDRs[0]"},
			text:  `"10.2.5.0/24" overlaps remotes[0].podCIDRs[0] "10.2.0.0/16" (10.2.5.0/24 would be routed to both remote "c2" and remote "c3": the route would be ambiguous)`,
		},
		{
			name:  "the same CIDR in two remotes",
			muts:  []mutation{{"remotes[1].serviceCIDRs", []any{"10.102.0.0/16"}}},
			paths: []string{"remotes[1].serviceCIDRs[0]"},
			text:  `"10.102.0.0/16" overlaps remotes[0].serviceCIDRs[0] "10.102.0.0/16" (10.102.0.0/16 would be routed to both remote "c2" and remote "c3": the route would be ambiguous)`,
		},
		{
			name:  "later remote contains an earlier one",
			muts:  []mutation{{"remotes[1].podCIDRs", []any{"10.2.0.0/15"}}},
			paths: []string{"remotes[1].podCIDRs[0]"},
			text:  `"10.2.0.0/15" overlaps remotes[0].podCIDRs[0] "10.2.0.0/16" (10.2.0.0/16 would be routed to both remote "c2" and remote "c3": the route would be ambiguous)`,
		},
		{
			name:  "remote inside the local pod CIDR",
			muts:  []mutation{{"remotes[0].podCIDRs", []any{"10.1.128.0/17"}}},
			paths: []string{"remotes[0].podCIDRs[0]"},
			text:  `"10.1.128.0/17" overlaps cluster.podCIDRs[0] "10.1.0.0/16" (10.1.128.0/17 would be both local and routed to remote "c2": the route would be ambiguous)`,
		},
		{
			name:  "one remote covering the local cluster and another remote: one error for the field",
			muts:  []mutation{{"remotes[1].podCIDRs", []any{"10.0.0.0/8"}}},
			paths: []string{"remotes[1].podCIDRs[0]"},
			text:  `"10.0.0.0/8" overlaps cluster.podCIDRs[0] "10.1.0.0/16" (10.1.0.0/16 would be both local and routed to remote "c3": the route would be ambiguous)`,
		},
		{
			name: "merged inside its own remote, still overlapping another",
			muts: []mutation{
				{"remotes[0].podCIDRs", []any{"10.2.0.0/16", "10.2.5.0/24"}},
				{"remotes[1].podCIDRs", []any{"10.2.5.0/24"}},
			},
			paths: []string{"remotes[1].podCIDRs[0]"},
			text:  `"10.2.5.0/24" overlaps remotes[0].podCIDRs[1] "10.2.5.0/24"`,
		},
		{
			name:  "remotes without ids are still two owners",
			muts:  []mutation{{"remotes[1].podCIDRs", []any{"10.2.0.0/16"}}, {"remotes[1].id", ""}},
			paths: []string{"remotes[1].id", "remotes[1].podCIDRs[0]"},
			text:  "required",
		},
		{
			name:  "VTEP range over a pod CIDR",
			muts:  []mutation{{"vxlan.vtepCIDR", "10.0.0.0/8"}},
			paths: []string{"vxlan.vtepCIDR"},
			text:  `"10.0.0.0/8" overlaps cluster.podCIDRs[0] "10.1.0.0/16" (a VTEP range must not overlap pod, service or other VTEP CIDRs)`,
		},
		{
			name: "several at once, in file order",
			muts: []mutation{
				{"remotes[0].serviceCIDRs", []any{"10.101.0.0/24"}},
				{"remotes[1].podCIDRs", []any{"10.2.0.0/24", "10.3.0.0/16"}},
			},
			paths: []string{"remotes[0].serviceCIDRs[0]", "remotes[1].podCIDRs[0]"},
			text:  `overlaps cluster.serviceCIDRs[0] "10.101.0.0/16"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ve := refused(t, twoRemotes(t), tc.muts, tc.paths)
			if r := ve.Errors[0].Reason; !strings.Contains(r, tc.text) {
				t.Errorf("reason\n%s\nwant it to contain\n%s", r, tc.text)
			}
		})
	}
}

func TestWarningSummaryBounded(t *testing.T) {
	doc := twoRemotes(t)
	var list []any
	for i := 0; i < 1000; i++ {
		list = append(list, "10.2.0.0/16")
	}
	set(t, doc, "remotes[0].podCIDRs", list)
	cfg, err := ParseWith(render(t, doc), testEnv("", ""))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cfg.Parsed.Warnings); n != 999 {
		t.Fatalf("%d warnings, want 999", n)
	}
	s := cfg.WarningSummary()
	if len(s) > 1000 || !strings.HasPrefix(s, "999 CIDRs merged") || !strings.Contains(s, "remotes[0].podCIDRs[1]:") || !strings.Contains(s, "and 994 more") {
		t.Errorf("summary (%d bytes) = %q", len(s), s)
	}
}

// scaleDoc is a configuration with n non-adjacent /24s in one remote.
func scaleDoc(n int) []byte {
	var b strings.Builder
	b.WriteString("nodeName: c1-n1\ncluster:\n  id: c1\n  podCIDRs: [10.1.0.0/16]\n  serviceCIDRs: [10.101.0.0/16]\n  gateway: c1-n1\n" +
		"  nodes:\n    - {name: c1-n1, ip: 192.168.10.11}\nremotes:\n  - id: c2\n    gatewayIP: 192.168.20.11\n    podCIDRs:\n")
	for i := 0; i < n; i++ {
		v := uint32(20)<<24 + uint32(2*i)<<8
		fmt.Fprintf(&b, "      - %d.%d.%d.0/24\n", byte(v>>24), byte(v>>16), byte(v>>8))
	}
	return []byte(b.String())
}

// The overlap sweep is O(n log n): its step count at 20,000 entries is
// within a small factor of 10× its count at 2,000 (the old pairwise check
// made 100×), counted rather than timed.
func TestOverlapSweepSteps(t *testing.T) {
	steps := func(n int) int {
		var l cidrList
		var errs errorList
		var dst []netip.Prefix
		in := make([]string, n)
		for i := range in {
			// Shuffled order, so the sort has work to do.
			j := (i * 7919) % n
			v := uint32(20)<<24 + uint32(2*j)<<8
			in[i] = fmt.Sprintf("%d.%d.%d.0/24", byte(v>>24), byte(v>>16), byte(v>>8))
		}
		l.parse(&errs, ownerLocal, "x", in, &dst)
		l.sweep(&errs)
		if len(errs) != 0 {
			t.Fatal(errs)
		}
		return l.steps
	}
	small, large := steps(2000), steps(20000)
	ratio := float64(large) / float64(small)
	t.Logf("steps: 2,000 -> %d, 20,000 -> %d (ratio %.1f; n log n predicts ~13, n² 100)", small, large, ratio)
	if ratio > 20 || large > 20000*40 {
		t.Errorf("sweep steps grow faster than n log n: %d -> %d (×%.1f)", small, large, ratio)
	}
}

// Validation grows like n log n too, timed with a generous bound (best of
// seven after a GC each, so a preemption or a collection on a loaded
// machine does not decide): the pairwise
// check it replaced took ×46 from 2,000 to 20,000 CIDRs (112 ms to 5.2 s).
// The YAML parse around it is linear and not timed here
// (BenchmarkParse20000 shows it).
func TestValidateScales(t *testing.T) {
	if testing.Short() {
		t.Skip("timing")
	}
	best := func(n int) time.Duration {
		base, err := decode(scaleDoc(n))
		if err != nil {
			t.Fatal(err)
		}
		base.SetDefaults(testEnv("", ""))
		b := time.Duration(1 << 62)
		for range 7 {
			c := *base
			runtime.GC() // a collection inside one run is not validation's cost
			t0 := time.Now()
			err := c.Validate()
			d := time.Since(t0)
			if err != nil || len(c.Parsed.Remotes[0].PodCIDRs) != n {
				t.Fatalf("validate %d: %v", n, err)
			}
			b = min(b, d)
		}
		return b
	}
	small, large := best(2000), best(20000)
	ratio := float64(large) / float64(small)
	t.Logf("validate: 2,000 CIDRs %v, 20,000 CIDRs %v (×%.1f)", small, large, ratio)
	if ratio > 30 {
		t.Errorf("validation time grows ×%.1f for ×10 CIDRs: not n log n", ratio)
	}
}

func BenchmarkParse20000(b *testing.B) {
	doc := scaleDoc(20000)
	for b.Loop() {
		if _, err := ParseWith(doc, testEnv("", "")); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidate20000(b *testing.B) {
	base, err := decode(scaleDoc(20000))
	if err != nil {
		b.Fatal(err)
	}
	base.SetDefaults(testEnv("", ""))
	for b.Loop() {
		c := *base
		if err := c.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}
