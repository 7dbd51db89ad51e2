package iptbackend

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/weft-net/weft/pkg/netnstest"
	"github.com/weft-net/weft/pkg/packetfilter"
)

func dualModel() packetfilter.Model {
	m := testModel()
	m.LocalCIDRs = append(m.LocalCIDRs, netip.MustParsePrefix("fd01::/48"), netip.MustParsePrefix("fd01:101::/108"))
	m.RemoteCIDRs = append(m.RemoteCIDRs, netip.MustParsePrefix("fd02::/48"), netip.MustParsePrefix("fd02:102::/108"))
	m.CNIIP6 = netip.MustParseAddr("fd01:0:0:2::1")
	return m
}

// wantRestore6 is wantRestore in ip6tables terms: the same rules with the
// IPv6 sets, NETMAP's IPv6 identity and the CNI IPv6 address.
var wantRestore6 = strings.NewReplacer("weft-local ", "weft-local6 ", "weft-remote ", "weft-remote6 ",
	"0.0.0.0/0", "::/0", "10.1.2.1", "fd01:0:0:2::1").Replace(wantRestore)

// save6Text is saveText for ip6tables.
func save6Text(t *testing.T, n *netnstest.NS, mode string) string {
	t.Helper()
	return saveFamilyText(t, n, ipv6, mode)
}

func TestApplyDualStack(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		n, v4ns := newNS(t, mode), newNS(t, mode)
		mustApply(t, v4ns, newBackend(t, mode), testModel())
		b := newBackend(t, mode)
		m := dualModel()
		st := mustApply(t, n, b, m)
		if st.Restores != 2 || st.Execs != 4 {
			t.Errorf("first Apply: %+v, want a save and a restore per family", st)
		}
		if got, want := saveText(t, n, mode), saveText(t, v4ns, mode); got != want {
			t.Errorf("iptables-save with IPv6 in the model differs from the IPv4-only one:\n%s\n--- IPv4-only\n%s", got, want)
		}
		if out := save6Text(t, v4ns, mode); strings.Contains(out, "WEFT") {
			t.Errorf("IPv4-only model wrote ip6tables:\n%s", out)
		}
		if sets := v4ns.MustExec(t, "ipset", "list", "-n"); strings.Contains(sets, "6") {
			t.Errorf("IPv4-only model made IPv6 sets: %s", sets)
		}
		checkRendered(t, n, mode, wantRules(t, wantRestore))
		checkRenderedFamily(t, n, ipv6, mode, wantRules(t, wantRestore6))
		for set, want := range map[string][]string{
			SetLocal6:  {"fd01:101::/108", "fd01::/48"},
			SetRemote6: {"fd02:102::/108", "fd02::/48"},
			SetLocal:   {"10.1.0.0/16", "10.101.0.0/16"},
		} {
			if got := ipsetMembers(t, n, set); !slices.Equal(got, want) {
				t.Errorf("%s = %v, want %v", set, got, want)
			}
		}
		if out := n.MustExec(t, "ipset", "list", SetRemote6); !strings.Contains(out, "Type: hash:net") || !strings.Contains(out, "family inet6") {
			t.Errorf("%s is not hash:net family inet6:\n%s", SetRemote6, out)
		}
		if b.Mode6() != mode {
			t.Errorf("ip6tables mode %q, want %q", b.Mode6(), mode)
		}

		v := m
		v.Verify = true
		st = mustApply(t, n, b, v)
		if st.Restores != 0 || st.Execs != 2 || st.IPSetWrites != 0 || st.IPSetReads != 4 {
			t.Errorf("verifying Apply: %+v, want one save per family, four sets listed, nothing written", st)
		}
		if st = mustApply(t, n, b, m); st != (Stats{}) {
			t.Errorf("trusting Apply: %+v, want nothing", st)
		}
		// One IPv6 CIDR more: one ipset write, nothing else.
		m.RemoteCIDRs = append(m.RemoteCIDRs, netip.MustParsePrefix("fd09::/48"))
		if st = mustApply(t, n, b, m); st != (Stats{IPSetWrites: 1}) {
			t.Errorf("one IPv6 CIDR added: %+v, want one ipset add", st)
		}
		n.MustExec(t, "ipset", "test", SetRemote6, "fd09::7")
	})
}

func TestDriftRepairedIPv6(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		n := newNS(t, mode)
		b := newBackend(t, mode)
		m := dualModel()
		mustApply(t, n, b, m)
		base4, base6 := saveText(t, n, mode), save6Text(t, n, mode)
		ipt := "ip6tables-" + mode
		m.Verify = true
		for _, d := range []struct {
			name string
			args []string
			sets bool
		}{
			{"chain flushed", []string{ipt, "-t", "mangle", "-F", ChainMSS}, false},
			{"jump deleted", []string{ipt, "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "weft", "-j", ChainPostrouting}, false},
			{"jump duplicated", []string{ipt, "-A", "FORWARD", "-m", "comment", "--comment", "weft", "-j", ChainForward}, false},
			{"set member deleted", []string{"ipset", "del", SetRemote6, "fd02::/48"}, true},
		} {
			n.MustExec(t, d.args[0], d.args[1:]...)
			st := mustApply(t, n, b, m)
			if got := save6Text(t, n, mode); got != base6 {
				t.Errorf("%s: ip6tables not repaired:\n%s\n--- want\n%s", d.name, got, base6)
			}
			if got := saveText(t, n, mode); got != base4 {
				t.Errorf("%s: iptables changed by an ip6tables repair", d.name)
			}
			if d.sets {
				if st.IPSetWrites != 1 || st.Restores != 0 || !slices.Contains(ipsetMembers(t, n, SetRemote6), "fd02::/48") {
					t.Errorf("%s: %+v, want the member re-added and no restore", d.name, st)
				}
			} else if st.Restores != 1 {
				t.Errorf("%s: %+v, want one restore (ip6tables only)", d.name, st)
			}
		}
	})
}

// IPv6 leaving the model removes weft's ip6tables chains and IPv6 sets, in
// the same process or after a restart; foreign ip6tables rules stay.
func TestIPv6Retired(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		for _, restart := range []bool{false, true} {
			n := newNS(t, mode)
			n.MustExec(t, "ip6tables-"+mode, "-t", "nat", "-A", "POSTROUTING", "-s", "fd01::/48", "-j", "MASQUERADE")
			b := newBackend(t, mode)
			mustApply(t, n, b, dualModel())
			if restart {
				b = newBackend(t, mode)
			}
			v4 := testModel()
			st := mustApply(t, n, b, v4)
			out := save6Text(t, n, mode)
			if strings.Contains(out, "WEFT") || !strings.Contains(out, "-A POSTROUTING -s fd01::/48 -j MASQUERADE") {
				t.Errorf("restart=%t: ip6tables after IPv6 left the model:\n%s", restart, out)
			}
			if sets := n.MustExec(t, "ipset", "list", "-n"); strings.Contains(sets, SetLocal6) || strings.Contains(sets, SetRemote6) {
				t.Errorf("restart=%t: IPv6 sets left: %s", restart, sets)
			}
			if st.IPSetWrites != 2 {
				t.Errorf("restart=%t: %+v, want the two IPv6 sets destroyed", restart, st)
			}
			checkRendered(t, n, mode, wantRules(t, wantRestore))
			// Checked once: the next Applies do not look again.
			if st := mustApply(t, n, b, v4); st != (Stats{}) {
				t.Errorf("restart=%t: next Apply %+v, want nothing", restart, st)
			}
		}
	})
}

func TestCleanupIPv6(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		n := newNS(t, mode)
		for _, c := range [][]string{
			{"iptables-" + mode, "-t", "nat", "-A", "POSTROUTING", "-s", "10.1.0.0/16", "-j", "MASQUERADE"},
			{"ip6tables-" + mode, "-t", "nat", "-A", "POSTROUTING", "-s", "fd01::/48", "-j", "MASQUERADE"},
			{"ip6tables-" + mode, "-A", "FORWARD", "-i", "eth9", "-j", "ACCEPT"},
		} {
			n.MustExec(t, c[0], c[1:]...)
		}
		foreign4, foreign6 := saveText(t, n, mode), save6Text(t, n, mode)
		b := newBackend(t, mode)
		mustApply(t, n, b, dualModel())
		// A jump someone else added must not keep the chain alive.
		n.MustExec(t, "ip6tables-"+mode, "-A", "FORWARD", "-j", ChainForward)
		for i := range 2 {
			if err := inNS(t, n, func() error { return b.Cleanup(context.Background()) }); err != nil {
				t.Fatalf("Cleanup %d: %v", i, err)
			}
		}
		// Tables weft's restore instantiated stay (empty built-in chains):
		// compare rules and user chains.
		if got := rulesOf(save6Text(t, n, mode)); !slices.Equal(got, rulesOf(foreign6)) {
			t.Errorf("ip6tables after Cleanup: %q, want as before weft: %q", got, rulesOf(foreign6))
		}
		if got := rulesOf(saveText(t, n, mode)); !slices.Equal(got, rulesOf(foreign4)) {
			t.Errorf("iptables after Cleanup: %q, want as before weft: %q", got, rulesOf(foreign4))
		}
		if sets := n.MustExec(t, "ipset", "list", "-n"); strings.Contains(sets, "weft-") {
			t.Errorf("ipsets left: %s", sets)
		}
	})
}

// ip6tables' mode is detected on its own: kubelet's hint in
// ip6tables-legacy makes the IPv6 rules legacy while IPv4 stays nft.
func TestDetectModePerFamily(t *testing.T) {
	n := newNS(t, ModeNFT)
	if _, err := n.Exec("ip6tables-legacy", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"); err != nil {
		t.Skipf("ip6tables-legacy does not work here: %v", err)
	}
	n.MustExec(t, "iptables-nft", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT")
	b := newBackend(t, "")
	mustApply(t, n, b, dualModel())
	if b.Mode() != ModeNFT || b.Mode6() != ModeLegacy {
		t.Fatalf("modes %q / %q, want nft for iptables and legacy for ip6tables", b.Mode(), b.Mode6())
	}
	checkRenderedFamily(t, n, ipv6, ModeLegacy, wantRules(t, wantRestore6))
	if out := save6Text(t, n, ModeNFT); strings.Contains(out, "WEFT") {
		t.Errorf("IPv6 rules written with ip6tables-nft too:\n%s", out)
	}
}

func TestFamilyMembers(t *testing.T) {
	got, err := familyMembers(ipv6, []netip.Prefix{netip.MustParsePrefix("fd02::1/48"), netip.MustParsePrefix("::/0"), netip.MustParsePrefix("fd02::/48")})
	want := []netip.Prefix{netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1"), netip.MustParsePrefix("fd02::/48")}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("IPv6 members = %v, %v; want %v", got, err, want)
	}
	if _, err := familyMembers(ipv6, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}); err == nil {
		t.Error("IPv6 set accepted an IPv4 CIDR")
	}
	if got, err := familyMembers(ipv4, []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}); err != nil || !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}) {
		t.Errorf("IPv4-mapped CIDR: %v, %v", got, err)
	}
}

func TestRenderFamilyRejects(t *testing.T) {
	for name, edit := range map[string]func(*packetfilter.Model){
		"IPv4 in CNIIP6": func(m *packetfilter.Model) { m.CNIIP6 = netip.MustParseAddr("10.1.2.1") },
		"short mapped CIDR": func(m *packetfilter.Model) {
			m.LocalCIDRs = append(m.LocalCIDRs, netip.MustParsePrefix("::ffff:0:0/80"))
		},
		"IPv6 CNI IP in CNIIP": func(m *packetfilter.Model) { m.CNIIP = netip.MustParseAddr("fd00::1") },
	} {
		m := dualModel()
		edit(&m)
		if _, err := plans(m); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// rulesOf is the rules and user-chain declarations of a save, sorted, each
// prefixed with its table.
func rulesOf(save string) []string {
	var out []string
	table := ""
	for _, l := range strings.Split(save, "\n") {
		switch {
		case strings.HasPrefix(l, "*"):
			table = l[1:]
		case strings.HasPrefix(l, "-A "), strings.HasPrefix(l, ":") && strings.Contains(l, " - "):
			out = append(out, table+" "+l)
		}
	}
	slices.Sort(out)
	return out
}

// With IPv6, each family gets one restore through its own binary, the IPv6
// one naming the IPv6 sets; the IPv4 restore input is the IPv4-only one.
func TestApplyRecordsOneRestorePerFamily(t *testing.T) {
	rec := &recorder{save: map[string]string{"iptables-nft-save": emptySave, "ip6tables-nft-save": strings.ReplaceAll(emptySave, "10.1.0.0/16", "fd01::/48")}}
	sets := &memSets{sets: map[string][]netip.Prefix{}}
	b, err := New(WithMode(ModeNFT), WithRunner(rec), WithIPSets(sets))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(context.Background(), dualModel()); err != nil {
		t.Fatal(err)
	}
	rs := rec.restores()
	if len(rs) != 2 || rs[0].argv != "iptables-nft-restore -w 5 --noflush" || rs[1].argv != "ip6tables-nft-restore -w 5 --noflush" {
		t.Fatalf("restores %+v, want one per family", rs)
	}
	if rs[0].stdin != wantRestore {
		t.Errorf("iptables restore input:\n%s\nwant:\n%s", rs[0].stdin, wantRestore)
	}
	if rs[1].stdin != wantRestore6 {
		t.Errorf("ip6tables restore input:\n%s\nwant:\n%s", rs[1].stdin, wantRestore6)
	}
	for set, want := range map[string]string{SetLocal6: "[fd01::/48 fd01:101::/108]", SetRemote6: "[fd02::/48 fd02:102::/108]", SetRemote: "[10.2.0.0/16 10.102.0.0/16]"} {
		got := slices.Clone(sets.sets[set])
		slices.SortFunc(got, netip.Prefix.Compare)
		if s := fmt.Sprint(got); s != want {
			t.Errorf("%s = %s, want %s", set, s, want)
		}
	}
}

// A DROP policy on ip6tables FORWARD is a finding once weft carries IPv6,
// and not before (an IPv4-only weft never runs ip6tables).
func TestFindingsForwardDropIPv6(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		n := newNS(t, mode)
		n.MustExec(t, "ip6tables-"+mode, "-P", "FORWARD", "DROP")
		b := newBackend(t, mode)
		drop6 := func() bool {
			var fs []packetfilter.Finding
			_ = inNS(t, n, func() error { fs = b.Findings(context.Background()); return nil })
			return slices.ContainsFunc(fs, func(f packetfilter.Finding) bool {
				return f.Type == FindingForwardDrop && strings.Contains(f.Message, "ip6tables-"+mode) && strings.Contains(f.Fix, SetLocal6)
			})
		}
		mustApply(t, n, b, testModel())
		if drop6() {
			t.Error("IPv4-only weft reports the ip6tables FORWARD policy")
		}
		mustApply(t, n, b, dualModel())
		if !drop6() {
			t.Error("dual-stack weft does not report the ip6tables FORWARD DROP policy")
		}
	})
}
