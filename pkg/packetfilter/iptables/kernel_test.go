package iptbackend

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/pkg/netnstest"
	"github.com/weft-net/weft/pkg/packetfilter"
)

// newNS creates a throwaway namespace in which mode's iptables works, or
// skips the test saying why not.
func newNS(t *testing.T, mode string) *netnstest.NS {
	t.Helper()
	n := netnstest.New(t)
	// Listing nat makes the kernel instantiate the table: this is exactly
	// what fails when ip_tables / nf_tables support is missing.
	if out, err := n.Exec("iptables-"+mode, "-t", "nat", "-L", "-n"); err != nil {
		t.Skipf("iptables-%s does not work in a network namespace on this kernel: %v: %s", mode, err, out)
	}
	return n
}

func forModes(t *testing.T, f func(t *testing.T, mode string)) {
	for _, mode := range []string{ModeNFT, ModeLegacy} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			f(t, mode)
		})
	}
}

func inNS(t *testing.T, n *netnstest.NS, f func() error) error {
	t.Helper()
	var err error
	if derr := n.Do(func(ns.NetNS) error { err = f(); return nil }); derr != nil {
		t.Fatalf("enter netns: %v", derr)
	}
	return err
}

func apply(t *testing.T, n *netnstest.NS, b *Backend, m packetfilter.Model) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return inNS(t, n, func() error { return b.Apply(ctx, m) })
}

func mustApply(t *testing.T, n *netnstest.NS, b *Backend, m packetfilter.Model) Stats {
	t.Helper()
	if err := apply(t, n, b, m); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return b.LastApplyStats()
}

func newBackend(t *testing.T, mode string) *Backend {
	t.Helper()
	b, err := New(WithMode(mode), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// saveText is iptables-save of mode in n without comment lines (they carry
// timestamps), so two saves can be compared as text.
func saveText(t *testing.T, n *netnstest.NS, mode string) string {
	t.Helper()
	return saveFamilyText(t, n, ipv4, mode)
}

// saveFamilyText is saveText for family f (iptables-save or ip6tables-save).
func saveFamilyText(t *testing.T, n *netnstest.NS, f *family, mode string) string {
	t.Helper()
	out := n.MustExec(t, binariesFor(f, mode).save)
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// wantRules is the spec: the -A lines of wantRestore per chain.
func wantRules(t *testing.T, restore string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, l := range strings.Split(restore, "\n") {
		if rest, ok := strings.CutPrefix(l, "-A "); ok {
			ch, spec, _ := strings.Cut(rest, " ")
			out[ch] = append(out[ch], spec)
		}
	}
	return out
}

func checkRendered(t *testing.T, n *netnstest.NS, mode string, want map[string][]string) {
	t.Helper()
	checkRenderedFamily(t, n, ipv4, mode, want)
}

// checkRenderedFamily is checkRendered for family f.
func checkRenderedFamily(t *testing.T, n *netnstest.NS, f *family, mode string, want map[string][]string) {
	t.Helper()
	d := parseSave(saveFamilyText(t, n, f, mode))
	for _, h := range hooks {
		tb := d.tables[h.table]
		if tb == nil {
			t.Fatalf("table %s missing from %s-%s-save", h.table, f.name, mode)
		}
		if got := tb.rules[h.chain]; !slices.Equal(got, want[h.chain]) {
			t.Errorf("%s %s:\n got %q\nwant %q", h.table, h.chain, got, want[h.chain])
		}
		var refs int
		for _, r := range tb.rules[h.builtin] {
			if target(r) == h.chain {
				refs++
			}
		}
		if b := tb.rules[h.builtin]; len(b) == 0 || b[0] != jumpSpec(h.chain) || refs != 1 {
			t.Errorf("%s %s: want one jump to %s at position 1, got %q", h.table, h.builtin, h.chain, b)
		}
	}
}

func ipsetMembers(t *testing.T, n *netnstest.NS, set string) []string {
	t.Helper()
	out := n.MustExec(t, "ipset", "list", set)
	_, members, _ := strings.Cut(out, "Members:\n")
	var ms []string
	for _, l := range strings.Fields(members) {
		ms = append(ms, l)
	}
	slices.Sort(ms)
	return ms
}

func TestApplyRendersAndIsIdempotent(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		n := newNS(t, mode)
		b := newBackend(t, mode)
		m := testModel()

		st := mustApply(t, n, b, m)
		if st.Restores != 1 || st.Execs != 2 {
			t.Errorf("first Apply: %+v, want 1 save + 1 restore", st)
		}
		checkRendered(t, n, mode, wantRules(t, wantRestore))
		if got := ipsetMembers(t, n, SetLocal); !slices.Equal(got, []string{"10.1.0.0/16", "10.101.0.0/16"}) {
			t.Errorf("weft-local = %v", got)
		}
		if got := ipsetMembers(t, n, SetRemote); !slices.Equal(got, []string{"10.102.0.0/16", "10.2.0.0/16"}) {
			t.Errorf("weft-remote = %v", got)
		}
		before := saveText(t, n, mode)

		v := m
		v.Verify = true
		st = mustApply(t, n, b, v)
		if st.Restores != 0 || st.Execs != 1 || st.IPSetWrites != 0 || st.IPSetReads != 2 {
			t.Errorf("second Apply (verifying): %+v, want only the save exec, both sets listed and no ipset writes", st)
		}
		st = mustApply(t, n, b, m)
		if st != (Stats{}) {
			t.Errorf("third Apply (trusting the last one): %+v, want no exec, no listing and no write", st)
		}
		if after := saveText(t, n, mode); after != before {
			t.Errorf("second Apply changed the rules:\n%s\n---\n%s", before, after)
		}
	})
}

func TestIPSetDiff(t *testing.T) {
	n := newNS(t, ModeNFT)
	b := newBackend(t, ModeNFT)
	m := testModel()
	mustApply(t, n, b, m)

	m.RemoteCIDRs = []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16"), netip.MustParsePrefix("10.3.0.0/16")}
	st := mustApply(t, n, b, m)
	if st.IPSetWrites != 2 || st.Restores != 0 {
		t.Errorf("one CIDR changed: %+v, want 2 ipset writes (1 add, 1 del) and no restore", st)
	}
	if got := ipsetMembers(t, n, SetRemote); !slices.Equal(got, []string{"10.2.0.0/16", "10.3.0.0/16"}) {
		t.Errorf("weft-remote = %v", got)
	}
	if got := ipsetMembers(t, n, SetLocal); !slices.Equal(got, []string{"10.1.0.0/16", "10.101.0.0/16"}) {
		t.Errorf("weft-local = %v", got)
	}
}

func TestHostSNATFollowsCNIIP(t *testing.T) {
	n := newNS(t, ModeNFT)
	b := newBackend(t, ModeNFT)
	snat := regexp.MustCompile(`-A WEFT-POSTROUTING -o (\S+) .*-j SNAT --to-source (\S+)`)
	steps := []struct {
		cni  string // "" = unknown
		want []string
	}{
		{"", nil},
		{"10.1.2.1", []string{"vx-weft 10.1.2.1", "vx-weft-cable 10.1.2.1"}},
		{"10.1.7.9", []string{"vx-weft 10.1.7.9", "vx-weft-cable 10.1.7.9"}},
		{"", nil},
	}
	for _, s := range steps {
		m := testModel()
		m.CNIIP = netip.Addr{}
		if s.cni != "" {
			m.CNIIP = netip.MustParseAddr(s.cni)
		}
		mustApply(t, n, b, m)
		var got []string
		for _, mm := range snat.FindAllStringSubmatch(saveText(t, n, ModeNFT), -1) {
			got = append(got, mm[1]+" "+mm[2])
		}
		if !slices.Equal(got, s.want) {
			t.Errorf("CNI IP %q: SNAT rules %q, want %q", s.cni, got, s.want)
		}
	}
}

func TestDriftRepaired(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		n := newNS(t, mode)
		b := newBackend(t, mode)
		m := testModel()
		mustApply(t, n, b, m)
		baseline := saveText(t, n, mode)
		ipt := "iptables-" + mode
		m.Verify = true // the resync pass: re-read everything
		drifts := []struct {
			name string
			args [][]string
			sets bool // repaired through ipset, not restore
			keep string
		}{
			{name: "chain flushed", args: [][]string{{ipt, "-t", "mangle", "-F", ChainMSS}}},
			{name: "jump deleted", args: [][]string{{ipt, "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "weft", "-j", ChainPostrouting}}},
			{name: "jump duplicated", args: [][]string{{ipt, "-A", "INPUT", "-m", "comment", "--comment", "weft", "-j", ChainInput}}},
			{name: "jump moved", args: [][]string{{ipt, "-I", "FORWARD", "1", "-s", "192.0.2.1", "-j", "ACCEPT"}}, keep: "-A FORWARD -s 192.0.2.1/32 -j ACCEPT"},
			{name: "chain rule edited", args: [][]string{{ipt, "-R", ChainForward, "1", "-i", "eth9", "-j", "ACCEPT"}}},
			{name: "set member deleted", args: [][]string{{"ipset", "del", SetRemote, "10.2.0.0/16"}}, sets: true},
		}
		for _, d := range drifts {
			for _, a := range d.args {
				n.MustExec(t, a[0], a[1:]...)
			}
			st := mustApply(t, n, b, m)
			got := saveText(t, n, mode)
			if d.keep != "" {
				if !strings.Contains(got, d.keep) {
					t.Errorf("%s: foreign rule %q gone", d.name, d.keep)
				}
				got = strings.Replace(got, d.keep+"\n", "", 1)
				n.MustExec(t, ipt, "-D", "FORWARD", "-s", "192.0.2.1", "-j", "ACCEPT")
			}
			if got != baseline {
				t.Errorf("%s: not repaired:\n%s\n---want\n%s", d.name, got, baseline)
			}
			if d.sets {
				if st.IPSetWrites != 1 || st.Restores != 0 {
					t.Errorf("%s: %+v, want one ipset add and no restore", d.name, st)
				}
				if !slices.Contains(ipsetMembers(t, n, SetRemote), "10.2.0.0/16") {
					t.Errorf("%s: member not re-added", d.name)
				}
			} else if st.Restores != 1 {
				t.Errorf("%s: %+v, want one restore", d.name, st)
			}
		}
		checkRendered(t, n, mode, wantRules(t, wantRestore))
	})
}

// TestSetMatchCounts proves the ipset matches really match packets in both
// modes (with iptables-nft they go through the xt compat layer): a TCP SYN
// from a "local" to a "remote" address must hit the first MSS and NAT rules.
func TestSetMatchCounts(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		n := newNS(t, mode)
		b := newBackend(t, mode)
		m := testModel()
		m.LocalCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		m.RemoteCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
		mustApply(t, n, b, m)
		_ = inNS(t, n, func() error {
			d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
			c, err := d.Dial("tcp", "127.0.0.2:9") // refused is fine: the SYN went out
			if err == nil {
				c.Close()
			}
			return nil
		})
		out := n.MustExec(t, "iptables-"+mode+"-save", "-c")
		for chain, match := range map[string]string{
			ChainMSS:         `-.*--match-set weft-local src -m set --match-set weft-remote dst`,
			ChainPostrouting: `-m set --match-set weft-local src -m set --match-set weft-remote dst -j NETMAP`,
		} {
			re := regexp.MustCompile(`(?m)^\[(\d+):\d+\] -A ` + chain + ` ` + match)
			mm := re.FindStringSubmatch(out)
			if mm == nil || mm[1] == "0" {
				t.Errorf("%s local→remote rule did not match the SYN: %v\n%s", chain, mm, out)
			}
		}
	})
}

func TestDetectModeKernel(t *testing.T) {
	tests := []struct {
		name  string
		setup [][]string
		mode  string // the mode the setup needs to work
		want  string
	}{
		{"empty host", nil, ModeNFT, ModeNFT},
		{"kubelet hint in nft", [][]string{{"iptables-nft", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"}}, ModeNFT, ModeNFT},
		{"kubelet hint in legacy", [][]string{{"iptables-legacy", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"}}, ModeLegacy, ModeLegacy},
		{"legacy canary beats nft rules", [][]string{
			{"iptables-legacy", "-t", "mangle", "-N", "KUBE-KUBELET-CANARY"},
			{"iptables-nft", "-A", "INPUT", "-j", "ACCEPT"},
		}, ModeLegacy, ModeLegacy},
		{"more legacy rules", [][]string{
			{"iptables-legacy", "-A", "INPUT", "-j", "ACCEPT"},
			{"iptables-legacy", "-A", "FORWARD", "-j", "ACCEPT"},
			{"iptables-nft", "-A", "INPUT", "-j", "ACCEPT"},
		}, ModeLegacy, ModeLegacy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := newNS(t, tc.mode)
			for _, a := range tc.setup {
				n.MustExec(t, a[0], a[1:]...)
			}
			// The backend with no mode detects it on first use, in the
			// namespace of the call.
			b := newBackend(t, "")
			mustApply(t, n, b, testModel())
			if b.Mode() != tc.want {
				t.Fatalf("mode = %q, want %q", b.Mode(), tc.want)
			}
			if !strings.Contains(saveText(t, n, tc.want), ":"+ChainPostrouting) {
				t.Errorf("rules not written with iptables-%s", tc.want)
			}
		})
	}
}

// nativeForward writes native nftables rules into ip filter FORWARD the way
// Netbird does. iptables-nft 1.8.9 parses `iifname "wt0" accept` (it maps
// to -i wt0) but not a native `ct state` expression: with it the whole
// table becomes "incompatible".
var nativeForward = [][]string{
	{"nft", "add", "table", "ip", "filter"},
	{"nft", "add", "chain", "ip", "filter", "FORWARD", "{ type filter hook forward priority 0; }"},
	{"nft", "add", "rule", "ip", "filter", "FORWARD", "iifname", "wt0", "counter", "accept"},
	{"nft", "add", "rule", "ip", "filter", "FORWARD", "ct", "state", "established,related", "accept"},
}

// TestForeignNativeRules: with nativeForward in the family's filter table
// (ip, or ip6 for ip6tables), that filter table is left alone and reported
// (degraded), nat and mangle are programmed, the foreign table is never
// touched, and with IPv6 iptables is fully programmed.
func TestForeignNativeRules(t *testing.T) {
	for _, tc := range []struct {
		f       *family
		nftFam  string
		model   packetfilter.Model
		restore string
	}{
		{ipv4, "ip", testModel(), wantRestore},
		{ipv6, "ip6", dualModel(), wantRestore6},
	} {
		t.Run(tc.f.name, func(t *testing.T) {
			n := newNS(t, ModeNFT)
			for _, a := range nativeForward {
				a = slices.Clone(a)
				a[3] = tc.nftFam // nft add table|chain|rule <family> filter ...
				n.MustExec(t, a[0], a[1:]...)
			}
			bins := binariesFor(tc.f, ModeNFT)
			if out := n.MustExec(t, bins.save); !strings.Contains(out, "Table `filter' is incompatible") {
				t.Fatalf("native ct rule did not make filter incompatible:\n%s", out)
			}
			foreign := n.MustExec(t, "nft", "-a", "list", "table", tc.nftFam, "filter")
			b := newBackend(t, ModeNFT)

			// What the real binary does when asked to touch that chain (exit
			// 3, "Parsing nftables rule failed") is classified as
			// incompatible.
			rerr := inNS(t, n, func() error {
				_, err := OSRunner{}.Run(context.Background(), []byte("*filter\n-D FORWARD -j ACCEPT\nCOMMIT\n"), bins.restore, "--noflush")
				return err
			})
			var ee *ExecError
			if !errors.As(rerr, &ee) || ee.ExitCode != 3 || !errors.Is(rerr, ErrIncompatibleTable) || errors.Is(rerr, ErrUnavailable) {
				t.Errorf("%s -D over a native rule: %v, want exit 3 classified ErrIncompatibleTable", bins.restore, rerr)
			}

			for i := range 2 {
				err := apply(t, n, b, tc.model)
				var ite *IncompatibleTableError
				if !errors.Is(err, ErrIncompatibleTable) || !errors.As(err, &ite) || !slices.Equal(ite.Tables, []string{"filter"}) || ite.IPv6 != tc.f.ipv6 || !errors.Is(err, packetfilter.ErrDegraded) {
					t.Fatalf("Apply %d: err = %v, want a degraded IncompatibleTableError for %s filter", i, err, tc.f.name)
				}
				if !strings.Contains(err.Error(), tc.f.name+"-nft cannot parse") {
					t.Errorf("error %q does not name %s", err, tc.f.name)
				}
				if st := b.LastApplyStats(); i == 1 && st.Restores != 0 {
					t.Errorf("second Apply restored again: %+v", st)
				}
			}
			d := parseSave(n.MustExec(t, bins.save))
			want := wantRules(t, tc.restore)
			for _, ch := range []struct{ table, chain string }{{"nat", ChainPostrouting}, {"mangle", ChainMSS}} {
				if got := d.tables[ch.table].rules[ch.chain]; !slices.Equal(got, want[ch.chain]) {
					t.Errorf("%s still must be programmed: got %q", ch.chain, got)
				}
			}
			if tc.f.ipv6 {
				checkRendered(t, n, ModeNFT, wantRules(t, wantRestore))
			}
			if after := n.MustExec(t, "nft", "-a", "list", "table", tc.nftFam, "filter"); after != foreign {
				t.Errorf("foreign table changed:\n%s\n---\n%s", foreign, after)
			}

			var fs []packetfilter.Finding
			_ = inNS(t, n, func() error { fs = b.Findings(context.Background()); return nil })
			if !slices.ContainsFunc(fs, func(f packetfilter.Finding) bool {
				return f.Type == FindingUnparsable && f.Reason == ReasonIncompatible && strings.Contains(f.Message, tc.f.name+"-nft cannot parse table filter") &&
					strings.Contains(f.Fix, "nft list table "+tc.nftFam+" filter")
			}) {
				t.Errorf("findings %+v lack the incompatible filter table", fs)
			}

			// Cleanup removes what it can see and says what it could not
			// check.
			err := inNS(t, n, func() error { return b.Cleanup(context.Background()) })
			if !errors.Is(err, ErrIncompatibleTable) {
				t.Errorf("Cleanup: %v, want ErrIncompatibleTable", err)
			}
			if out := n.MustExec(t, bins.save); strings.Contains(out, "WEFT") {
				t.Errorf("WEFT chains left in parseable tables:\n%s", out)
			}
			if after := n.MustExec(t, "nft", "-a", "list", "table", tc.nftFam, "filter"); after != foreign {
				t.Errorf("Cleanup changed the foreign table:\n%s", after)
			}
		})
	}
}

func TestFindingsForwardDrop(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		n := newNS(t, mode)
		b := newBackend(t, mode)
		find := func() []packetfilter.Finding {
			var fs []packetfilter.Finding
			_ = inNS(t, n, func() error { fs = b.Findings(context.Background()); return nil })
			return fs
		}
		if fs := find(); len(fs) != 0 {
			t.Errorf("clean namespace: findings %+v", fs)
		}
		n.MustExec(t, "iptables-"+mode, "-P", "FORWARD", "DROP")
		fs := find()
		if !slices.ContainsFunc(fs, func(f packetfilter.Finding) bool {
			return f.Type == FindingForwardDrop && strings.Contains(f.Message, "iptables-"+mode) && f.Fix != ""
		}) {
			t.Errorf("findings %+v lack the FORWARD DROP policy", fs)
		}
	})
}

func TestCleanup(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		n := newNS(t, mode)
		ipt := "iptables-" + mode
		n.MustExec(t, ipt, "-t", "nat", "-A", "POSTROUTING", "-s", "10.1.0.0/16", "-j", "MASQUERADE")
		b := newBackend(t, mode)
		mustApply(t, n, b, testModel())
		// A jump someone else added must not keep the chain alive.
		n.MustExec(t, ipt, "-A", "FORWARD", "-j", ChainForward)

		cleanup := func() error {
			return inNS(t, n, func() error { return b.Cleanup(context.Background()) })
		}
		if err := cleanup(); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		after := saveText(t, n, mode)
		if strings.Contains(after, "WEFT") {
			t.Errorf("WEFT left after Cleanup:\n%s", after)
		}
		if !strings.Contains(after, "-A POSTROUTING -s 10.1.0.0/16 -j MASQUERADE") {
			t.Errorf("Cleanup removed a foreign rule:\n%s", after)
		}
		if sets := n.MustExec(t, "ipset", "list", "-n"); strings.Contains(sets, "weft-") {
			t.Errorf("ipsets left: %s", sets)
		}
		if err := cleanup(); err != nil {
			t.Errorf("second Cleanup: %v", err)
		}
		if again := saveText(t, n, mode); again != after {
			t.Errorf("second Cleanup changed rules:\n%s", again)
		}
	})
}

// BenchmarkApplySteadyState measures the cost of a resync that finds
// nothing to do: two ipset reads and one iptables-save.
func BenchmarkApplySteadyState(b *testing.B) {
	n := netnstest.New(b)
	be, err := New(WithMode(ModeNFT), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	m := testModel()
	ctx := context.Background()
	err = n.Do(func(ns.NetNS) error {
		if err := be.Apply(ctx, m); err != nil {
			return err
		}
		b.ResetTimer()
		for range b.N {
			if err := be.Apply(ctx, m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	st := be.LastApplyStats()
	b.ReportMetric(float64(st.Execs), "execs/op")
	b.ReportMetric(float64(st.IPSetReads+st.IPSetWrites), "ipset-ops/op")
}

// countingSets is the kernel's ipsets, counting the list calls that go
// through the narrow interface.
type countingSets struct {
	IPSets
	lists atomic.Int32
}

func (c *countingSets) List(name string) ([]netip.Prefix, string, bool, error) {
	c.lists.Add(1)
	return c.IPSets.List(name)
}

// The verified cache: with 2,000 remote CIDRs, adding one costs one ipset
// add and no listing or exec; drift behind weft's back (a member deleted,
// a chain flushed) is left to the verifying resync pass, which restores
// it; a call from another namespace trusts nothing.
func TestVerifiedCache(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		n := newNS(t, mode)
		sets := &countingSets{IPSets: NetlinkIPSets{}}
		b, err := New(WithMode(mode), WithLogger(slog.New(slog.DiscardHandler)), WithIPSets(sets))
		if err != nil {
			t.Fatal(err)
		}
		m := testModel()
		for i := 0; i < 2000; i++ {
			m.RemoteCIDRs = append(m.RemoteCIDRs, netip.PrefixFrom(netip.AddrFrom4([4]byte{20, byte(i >> 7), byte(i << 1), 0}), 24))
		}
		m.Verify = true
		// Both sets, and, the first time in a namespace, whether an IPv6
		// set is left over (none: two listings of missing sets).
		if st := mustApply(t, n, b, m); st.IPSetReads != 4 || sets.lists.Load() != 4 {
			t.Fatalf("first Apply: %+v, %d lists", st, sets.lists.Load())
		}
		checkRendered(t, n, mode, wantRules(t, wantRestore))

		added := netip.MustParsePrefix("30.0.0.0/24")
		m.Verify = false
		m.RemoteCIDRs = append(m.RemoteCIDRs, added)
		st := mustApply(t, n, b, m)
		if st != (Stats{IPSetWrites: 1}) || sets.lists.Load() != 4 {
			t.Errorf("one CIDR added: %+v, %d list calls in all: want one ipset add, no listing, no exec", st, sets.lists.Load())
		}
		n.MustExec(t, "ipset", "test", SetRemote, "30.0.0.7")

		// Drift nobody told weft about.
		n.MustExec(t, "ipset", "del", SetRemote, "10.2.0.0/16")
		n.MustExec(t, "iptables-"+mode, "-t", "mangle", "-F", ChainMSS)
		if st := mustApply(t, n, b, m); st != (Stats{}) {
			t.Errorf("event-driven Apply after drift: %+v, want nothing sent (it trusts the cache)", st)
		}
		m.Verify = true
		st = mustApply(t, n, b, m)
		if st.IPSetReads != 2 || st.IPSetWrites != 1 || st.Restores != 1 {
			t.Errorf("verifying Apply: %+v, want both sets listed, the member re-added and one restore", st)
		}
		n.MustExec(t, "ipset", "test", SetRemote, "10.2.0.1")
		checkRendered(t, n, mode, wantRules(t, wantRestore))

		// Another namespace: the cache says nothing about it.
		other := newNS(t, mode)
		m.Verify = false
		lists := sets.lists.Load()
		st = mustApply(t, other, b, m)
		if st.IPSetReads != 4 || sets.lists.Load() != lists+4 || st.Restores != 1 {
			t.Errorf("Apply in another namespace: %+v, want both sets listed, the IPv6 leftover check and the chains written", st)
		}
		checkRendered(t, other, mode, wantRules(t, wantRestore))
	})
}
