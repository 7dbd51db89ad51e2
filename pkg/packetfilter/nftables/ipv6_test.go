package nftbackend

import (
	"context"
	"errors"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/weft-net/weft/pkg/netnstest"
)

func listWeft6(t *testing.T, n *netnstest.NS) string {
	t.Helper()
	return n.MustExec(t, "nft", "list", "table", "ip6", TableName)
}

// The dual-stack model renders ip6 weft with the same rules in IPv6 terms,
// and leaves ip weft exactly as the IPv4-only model renders it.
func TestApplyDualStackRendersBothTables(t *testing.T) {
	v4ns, dual := netnstest.New(t), netnstest.New(t)
	v4 := baseModel()
	v4.CNIIP = netip.MustParseAddr("10.1.2.1")
	apply(t, newBackend(t, v4ns), v4)
	b := newBackend(t, dual)
	m := dualModel()
	// Overlapping and sibling IPv6 CIDRs: the kernel would refuse them
	// unmerged.
	m.RemoteCIDRs = append(m.RemoteCIDRs, prefixes("fd02::/49", "fd03::/49", "fd03:0:0:8000::/49")...)
	st := apply(t, b, m)
	if !st.Full {
		t.Fatalf("first apply %+v, want a full build", st)
	}
	if a, b := listWeft(t, v4ns), listWeft(t, dual); a != b {
		t.Fatalf("ip weft with IPv6 in the model differs from the IPv4-only one:\n%s\n--- IPv4-only\n%s", b, a)
	}
	if tables := v4ns.MustExec(t, "nft", "list", "tables"); strings.TrimSpace(tables) != "table ip weft" {
		t.Errorf("IPv4-only model: tables %q, want only ip weft", tables)
	}
	out := listWeft6(t, dual)
	t.Logf("rendered:\n%s", out)
	checks := []struct{ chain, want string }{
		{ChainNAT, "type nat hook postrouting priority srcnat - 10; policy accept;"},
		{ChainNAT, "ip6 saddr @local ip6 daddr @remote snat ip6 to ip6 saddr"},
		{ChainNAT, "ip6 saddr @remote ip6 daddr @local snat ip6 to ip6 saddr"},
		{ChainNAT, `oifname "vx-weft" ip6 saddr != @local ip6 daddr @remote snat ip6 to fd01:0:0:2::1`},
		{ChainNAT, `oifname "vx-weft-cable" ip6 saddr != @local ip6 daddr @remote snat ip6 to fd01:0:0:2::1`},
		{ChainMSS, "type filter hook postrouting priority mangle; policy accept;"},
		{ChainMSS, "tcp flags syn / syn,rst ip6 saddr @local ip6 daddr @remote tcp option maxseg size set rt mtu"},
		{ChainMSS, "tcp flags syn / syn,rst ip6 saddr @remote ip6 daddr @local tcp option maxseg size set rt mtu"},
		{ChainInput, "udp dport { 4800, 4801 } accept"},
		{ChainInput, `iifname "vx-weft" accept`},
		{ChainForward, `oifname "vx-weft-cable" accept`},
	}
	for _, c := range checks {
		block := chainBlock(t, out, c.chain)
		// nft 1.0.6 prints "snat ip6 to", newer ones "snat to" in an
		// ip6 table; both are the same rule.
		if !strings.Contains(block, c.want) && !strings.Contains(block, strings.ReplaceAll(c.want, "snat ip6 to", "snat to")) {
			t.Errorf("chain %s lacks %q:\n%s", c.chain, c.want, block)
		}
	}
	if !strings.Contains(out, "type ipv6_addr") || !strings.Contains(out, "flags interval") {
		t.Errorf("ip6 sets are not ipv6_addr interval sets:\n%s", out)
	}
	if got, want := setElements(t, out, SetLocal), "fd01::/48, fd01:101::/108"; got != want {
		t.Errorf("ip6 set local = %q, want %q", got, want)
	}
	if got, want := setElements(t, out, SetRemote), "fd02::/48, fd02:102::/108, fd03::/48"; got != want {
		t.Errorf("ip6 set remote = %q, want %q", got, want)
	}
	got, err := b.SetPrefixes(context.Background(), "ip6", SetRemote)
	if err != nil || len(got) != 3 || got[2] != netip.MustParsePrefix("fd03::/48") {
		t.Errorf("SetPrefixes(ip6, remote) = %v, %v", got, err)
	}
	if st := apply(t, b, m); st.Messages != 0 {
		t.Errorf("second apply of the dual-stack model sent %+v", st)
	}
	if st := apply(t, newBackend(t, dual), m); st.Messages != 0 || !st.Read {
		t.Errorf("apply by a new backend (a restart): %+v, want a read and nothing sent", st)
	}
}

// One Apply is one transaction for both tables: the ruleset generation
// moves by exactly one.
func TestApplyBothTablesOneTransaction(t *testing.T) {
	n := netnstest.New(t)
	b := newBackend(t, n)
	gen := func() uint32 {
		cc, err := b.conn()
		if err != nil {
			t.Fatal(err)
		}
		g, err := cc.GetGen()
		if err != nil {
			t.Fatal(err)
		}
		return g.ID
	}
	m := dualModel()
	before := gen()
	apply(t, b, m)
	if after := gen(); after != nextGen(before) {
		t.Fatalf("generation %d → %d building both tables, want one commit", before, after)
	}
	// A change in both families (an IPv4 and an IPv6 remote CIDR, and the
	// CNI IPv6 address: ip diffed, ip6 rebuilt) is still one commit.
	m.RemoteCIDRs = append(m.RemoteCIDRs, prefixes("10.9.0.0/16", "fd09::/48")...)
	m.CNIIP6 = netip.MustParseAddr("fd01:0:0:7::1")
	before = gen()
	st := apply(t, b, m)
	if after := gen(); after != nextGen(before) {
		t.Fatalf("generation %d → %d for a change in both tables, want one commit", before, after)
	}
	if !st.Full || !strings.HasPrefix(st.Reason, "ip6: ") || st.ElementsAdded < 1 {
		t.Errorf("stats %+v, want ip6 rebuilt (its host SNAT changed) and ip diffed", st)
	}
	if block := chainBlock(t, listWeft6(t, n), ChainNAT); !strings.Contains(block, "fd01:0:0:7::1") || strings.Contains(block, "fd01:0:0:2::1") {
		t.Errorf("host SNAT not moved to the new CNI IPv6 address:\n%s", block)
	}
	if !strings.Contains(n.MustExec(t, "nft", "list", "set", "ip", TableName, SetRemote), "10.9.0.0/16") {
		t.Error("IPv4 CIDR of the same change not added")
	}
}

// One IPv6 CIDR added or removed is one element in one message, and the
// IPv4 table is not touched.
func TestIncrementalSetChangeIPv6(t *testing.T) {
	n := netnstest.New(t)
	b := newBackend(t, n)
	m := dualModel()
	for i := range 500 {
		m.RemoteCIDRs = append(m.RemoteCIDRs, netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x10, byte(i >> 7), byte(i << 1)}), 32))
	}
	apply(t, b, m)
	ip4 := listWeft(t, n)
	added := netip.MustParsePrefix("fd77:1:2::/48")
	m.RemoteCIDRs = append(m.RemoteCIDRs, added)
	st := apply(t, b, m)
	if st.Full || st.Messages != 1 || st.ElementsAdded != 1 || st.ElementsDeleted != 0 {
		t.Fatalf("adding one IPv6 CIDR: %+v, want incremental, 1 element, 1 message", st)
	}
	if !strings.Contains(n.MustExec(t, "nft", "list", "set", "ip6", TableName, SetRemote), "fd77:1:2::/48") {
		t.Fatal("added IPv6 CIDR not in the ip6 set")
	}
	m.RemoteCIDRs = m.RemoteCIDRs[:len(m.RemoteCIDRs)-1]
	if st = apply(t, b, m); st.Full || st.Messages != 1 || st.ElementsAdded != 0 || st.ElementsDeleted != 1 {
		t.Fatalf("removing it: %+v, want incremental, 1 element, 1 message", st)
	}
	if strings.Contains(n.MustExec(t, "nft", "list", "set", "ip6", TableName, SetRemote), "fd77:1:2::/48") {
		t.Fatal("removed IPv6 CIDR still in the ip6 set")
	}
	if got := listWeft(t, n); got != ip4 {
		t.Errorf("ip weft changed by IPv6 set changes:\n%s\n--- before\n%s", got, ip4)
	}
}

func TestApplyRepairsDriftIPv6(t *testing.T) {
	m := dualModel()
	tests := []struct {
		name  string
		drift []string // nft arguments
		full  bool
	}{
		{"delete ip6 table", []string{"delete", "table", "ip6", TableName}, true},
		{"flush ip6 mss chain", []string{"flush", "chain", "ip6", TableName, ChainMSS}, true},
		{"foreign rule in an ip6 chain", []string{"add", "rule", "ip6", TableName, ChainForward, "drop"}, true},
		{"delete ip6 set element", []string{"delete", "element", "ip6", TableName, SetRemote, "{ fd02::/48 }"}, false},
		{"add ip6 set element", []string{"add", "element", "ip6", TableName, SetLocal, "{ 2001:db8::/32 }"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := netnstest.New(t)
			b := newBackend(t, n)
			apply(t, b, m)
			want4, want6 := listWeft(t, n), listWeft6(t, n)
			handles4 := n.MustExec(t, "nft", "-a", "list", "table", "ip", TableName)
			n.MustExec(t, "nft", tt.drift...)
			if out, _ := n.Exec("nft", "list", "table", "ip6", TableName); out == want6 {
				t.Fatal("drift did not change anything")
			}
			st := apply(t, b, m)
			if !st.Read || st.Full != tt.full {
				t.Errorf("repair stats %+v, want read and full=%t", st, tt.full)
			}
			if tt.full && !strings.HasPrefix(st.Reason, "ip6: ") {
				t.Errorf("reason %q, want only ip6 rebuilt", st.Reason)
			}
			if got := listWeft6(t, n); got != want6 {
				t.Fatalf("ip6 weft not restored:\n%s\n--- want\n%s", got, want6)
			}
			// Same handles: ip weft was not rebuilt for an ip6 drift.
			if got := n.MustExec(t, "nft", "-a", "list", "table", "ip", TableName); got != handles4 || listWeft(t, n) != want4 {
				t.Errorf("ip weft touched by an ip6 repair:\n%s\n--- before\n%s", got, handles4)
			}
		})
	}
}

// IPv6 leaving the model removes ip6 weft in the next transaction; coming
// back re-creates it.
func TestIPv6LeavesAndReturns(t *testing.T) {
	n := netnstest.New(t)
	b := newBackend(t, n)
	apply(t, b, dualModel())
	v4 := baseModel()
	v4.CNIIP = netip.MustParseAddr("10.1.2.1")
	st := apply(t, b, v4)
	if !st.Full || !strings.Contains(st.Reason, "ip6: table no longer rendered") {
		t.Errorf("stats %+v, want ip6 weft deleted", st)
	}
	if tables := n.MustExec(t, "nft", "list", "tables"); strings.TrimSpace(tables) != "table ip weft" {
		t.Fatalf("tables after IPv6 left the model: %q", tables)
	}
	// A restarted daemon with an IPv4-only model removes a left-over ip6
	// weft too.
	n.MustExec(t, "nft", "add", "table", "ip6", TableName)
	if st := apply(t, newBackend(t, n), v4); !st.Full {
		t.Errorf("left-over ip6 weft: %+v", st)
	}
	if tables := n.MustExec(t, "nft", "list", "tables"); strings.TrimSpace(tables) != "table ip weft" {
		t.Fatalf("tables after a restart with IPv4 only: %q", tables)
	}
	apply(t, b, dualModel())
	if !strings.Contains(listWeft6(t, n), "chain "+ChainMSS) {
		t.Fatal("ip6 weft not re-created")
	}
}

// foreignRuleset6 is foreignRuleset in ip6 tables.
var foreignRuleset6 = strings.NewReplacer("table ip ", "table ip6 ",
	"ip saddr 10.1.0.0/16 ip daddr != 10.1.0.0/16", "ip6 saddr fd01::/48 ip6 daddr != fd01::/48").Replace(foreignRuleset)

// An ip6 drop policy elsewhere is a finding once weft carries IPv6 (and,
// as TestFindings shows, not before).
func TestFindingsIPv6(t *testing.T) {
	n := netnstest.New(t)
	n.MustExec(t, "nft", "add table ip6 fw; add chain ip6 fw fwd_chain { type filter hook forward priority filter; policy drop; }")
	b := newBackend(t, n)
	apply(t, b, baseModel())
	if f := b.Findings(context.Background()); len(f) != 0 {
		t.Fatalf("IPv4-only weft: findings %+v", f)
	}
	apply(t, b, dualModel())
	f := b.Findings(context.Background())
	if len(f) != 1 || f[0].Reason != "ForwardPolicyDrop" || !strings.Contains(f[0].Message, "table ip6 fw chain fwd_chain") || f[0].Fix == "" {
		t.Fatalf("dual-stack weft: findings %+v, want the ip6 forward drop", f)
	}
}

func TestProbeErrorPerFamily(t *testing.T) {
	e := &ProbeError{Missing: []string{"a", "b"}, Families: []string{"ip6", "ip6"}, Errs: []error{errors.New("x"), errors.New("y")}}
	if !e.Only("ip6") || e.Only("ip") {
		t.Errorf("Only: ip6 %t, ip %t", e.Only("ip6"), e.Only("ip"))
	}
	if msg := e.Error(); !regexp.MustCompile(`missing ip6: a \(x\); ip6: b \(y\)$`).MatchString(msg) {
		t.Errorf("message %q does not name the family of each", msg)
	}
	e.Families[1] = "ip"
	if e.Only("ip6") {
		t.Error("Only(ip6) with an ip feature missing")
	}
	if (&ProbeError{}).Only("ip6") {
		t.Error("Only on an empty error")
	}
}
