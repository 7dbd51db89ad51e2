package nftbackend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/pkg/netnstest"
	"github.com/weft-net/weft/pkg/packetfilter"
)

func newBackend(t *testing.T, n *netnstest.NS) *Backend {
	t.Helper()
	b, err := New(WithNetNSFd(int(n.Fd())), WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func baseModel() packetfilter.Model {
	return packetfilter.Model{
		LocalCIDRs:  prefixes("10.1.0.0/16", "10.101.0.0/16"),
		RemoteCIDRs: prefixes("10.2.0.0/16", "10.102.0.0/16"),
		Devices:     []string{"vx-weft", "vx-weft-cable"},
		VXLANPorts:  []uint16{4800, 4801},
		// weftd's health-check responder (issue 13).
		HealthCheckPort: 4803,
		MSS:             packetfilter.MSS{Mode: packetfilter.MSSPMTU},
	}
}

func apply(t *testing.T, b *Backend, m packetfilter.Model) ApplyStats {
	t.Helper()
	if err := b.Apply(context.Background(), m); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return b.LastApplyStats()
}

func listWeft(t *testing.T, n *netnstest.NS) string {
	t.Helper()
	return n.MustExec(t, "nft", "list", "table", "ip", TableName)
}

// chainBlock returns the text of one chain from `nft list table`.
func chainBlock(t *testing.T, table, chain string) string {
	t.Helper()
	re := regexp.MustCompile(`(?s)chain ` + regexp.QuoteMeta(chain) + ` \{\n(.*?)\n\t\}`)
	m := re.FindStringSubmatch(table)
	if m == nil {
		t.Fatalf("chain %s not in:\n%s", chain, table)
	}
	return m[1]
}

func setElements(t *testing.T, table, set string) string {
	t.Helper()
	re := regexp.MustCompile(`(?s)set ` + regexp.QuoteMeta(set) + ` \{.*?elements = \{ (.*?) \}`)
	m := re.FindStringSubmatch(table)
	if m == nil {
		return ""
	}
	return strings.Join(strings.Fields(m[1]), " ")
}

func TestProbe(t *testing.T) {
	n := netnstest.New(t)
	b := newBackend(t, n)
	if err := b.Probe(context.Background()); err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if out := n.MustExec(t, "nft", "list", "ruleset"); strings.TrimSpace(out) != "" {
		t.Fatalf("probe left objects behind:\n%s", out)
	}
}

func TestApplyFullRendersTable(t *testing.T) {
	n := netnstest.New(t)
	b := newBackend(t, n)
	m := baseModel()
	// Overlapping, contained and sibling CIDRs: the kernel would refuse
	// them unmerged.
	m.LocalCIDRs = append(m.LocalCIDRs, prefixes("10.1.2.0/24", "10.1.0.0/17")...)
	m.RemoteCIDRs = append(m.RemoteCIDRs, prefixes("10.4.0.0/17", "10.4.128.0/17", "10.4.5.0/24")...)
	st := apply(t, b, m)
	if !st.Full || st.Messages == 0 {
		t.Fatalf("first apply stats = %+v, want a full build", st)
	}
	out := listWeft(t, n)
	t.Logf("rendered:\n%s", out)
	if strings.Contains(out, "type route") {
		t.Fatalf("route chain rendered:\n%s", out)
	}
	checks := []struct{ chain, want string }{
		{ChainNAT, "type nat hook postrouting priority srcnat - 10; policy accept;"},
		{ChainNAT, "ip saddr @local ip daddr @remote snat to ip saddr"},
		{ChainNAT, "ip saddr @remote ip daddr @local snat to ip saddr"},
		{ChainMSS, "type filter hook postrouting priority mangle; policy accept;"},
		{ChainMSS, "tcp flags syn / syn,rst ip saddr @local ip daddr @remote tcp option maxseg size set rt mtu"},
		{ChainMSS, "tcp flags syn / syn,rst ip saddr @remote ip daddr @local tcp option maxseg size set rt mtu"},
		{ChainInput, "type filter hook input priority filter; policy accept;"},
		{ChainInput, "udp dport { 4800, 4801 } accept"},
		{ChainInput, "udp dport 4803 accept"},
		{ChainInput, `iifname "vx-weft" accept`},
		{ChainInput, `iifname "vx-weft-cable" accept`},
		{ChainForward, "type filter hook forward priority filter; policy accept;"},
		{ChainForward, `iifname "vx-weft-cable" accept`},
		{ChainForward, `oifname "vx-weft" accept`},
	}
	for _, c := range checks {
		if block := chainBlock(t, out, c.chain); !strings.Contains(block, c.want) {
			t.Errorf("chain %s lacks %q:\n%s", c.chain, c.want, block)
		}
	}
	if got, want := setElements(t, out, SetLocal), "10.1.0.0/16, 10.101.0.0/16"; got != want {
		t.Errorf("set local = %q, want %q", got, want)
	}
	if got, want := setElements(t, out, SetRemote), "10.2.0.0/16, 10.4.0.0/16, 10.102.0.0/16"; got != want {
		t.Errorf("set remote = %q, want %q", got, want)
	}
	if strings.Contains(chainBlock(t, out, ChainNAT), "snat to 10.") {
		t.Errorf("host SNAT rendered without a CNI IP:\n%s", out)
	}
	// No other table appeared.
	if tables := n.MustExec(t, "nft", "list", "tables"); strings.TrimSpace(tables) != "table ip weft" {
		t.Errorf("tables = %q", tables)
	}
}

func TestApplyFixedMSS(t *testing.T) {
	n := netnstest.New(t)
	b := newBackend(t, n)
	m := baseModel()
	m.MSS = packetfilter.MSS{Mode: packetfilter.MSSFixed, Value: 1360}
	apply(t, b, m)
	block := chainBlock(t, listWeft(t, n), ChainMSS)
	if strings.Count(block, "tcp option maxseg size set 1360") != 2 || strings.Contains(block, "rt mtu") {
		t.Fatalf("fixed MSS not rendered:\n%s", block)
	}
	m.MSS.Value = 0
	if err := b.Apply(context.Background(), m); err == nil {
		t.Fatal("fixed MSS without a value accepted")
	}
}

func TestHostSNATFollowsCNIIP(t *testing.T) {
	n := netnstest.New(t)
	b := newBackend(t, n)
	m := baseModel()
	apply(t, b, m)
	if block := chainBlock(t, listWeft(t, n), ChainNAT); strings.Contains(block, "snat to 10.") {
		t.Fatalf("host SNAT without CNI IP:\n%s", block)
	}
	want := func(ip string) string {
		return `oifname "vx-weft-cable" ip saddr != @local ip daddr @remote snat to ` + ip
	}
	m.CNIIP = netip.MustParseAddr("10.1.2.1")
	apply(t, b, m)
	if block := chainBlock(t, listWeft(t, n), ChainNAT); !strings.Contains(block, want("10.1.2.1")) {
		t.Fatalf("host SNAT missing:\n%s", block)
	}
	m.CNIIP = netip.MustParseAddr("10.1.9.1")
	st := apply(t, b, m)
	block := chainBlock(t, listWeft(t, n), ChainNAT)
	if !strings.Contains(block, want("10.1.9.1")) || strings.Contains(block, "10.1.2.1") {
		t.Fatalf("host SNAT not moved to the new CNI IP:\n%s", block)
	}
	if !st.Full {
		t.Errorf("rule change applied without rebuilding: %+v", st)
	}
	m.CNIIP = netip.Addr{}
	apply(t, b, m)
	if block := chainBlock(t, listWeft(t, n), ChainNAT); strings.Contains(block, "snat to 10.") {
		t.Fatalf("host SNAT kept after the CNI IP went away:\n%s", block)
	}
}

// spread returns n /24s that do not merge (every other one).
func spread(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range out {
		k := 2 * i
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(16 + k/256), byte(k % 256), 0}), 24)
	}
	return out
}

func TestIncrementalSetChange(t *testing.T) {
	n := netnstest.New(t)
	b := newBackend(t, n)
	m := baseModel()
	m.RemoteCIDRs = spread(1000)
	if st := apply(t, b, m); !st.Full || st.ElementsAdded != 1000+2 {
		t.Fatalf("first apply = %+v", st)
	}

	m.RemoteCIDRs = append(m.RemoteCIDRs, netip.MustParsePrefix("192.168.77.0/24"))
	st := apply(t, b, m)
	if st.Full || st.Messages > 2 || st.ElementsAdded != 1 || st.ElementsDeleted != 0 {
		t.Fatalf("adding one CIDR: stats %+v, want incremental, 1 element, ≤2 messages", st)
	}
	if out := n.MustExec(t, "nft", "list", "set", "ip", TableName, SetRemote); !strings.Contains(out, "192.168.77.0/24") {
		t.Fatalf("added CIDR not in set:\n%s", out)
	}

	m.RemoteCIDRs = m.RemoteCIDRs[1:] // drop 172.16.0.0/24
	st = apply(t, b, m)
	if st.Full || st.Messages > 2 || st.ElementsAdded != 0 || st.ElementsDeleted != 1 {
		t.Fatalf("removing one CIDR: stats %+v, want incremental, 1 element, ≤2 messages", st)
	}
	out := n.MustExec(t, "nft", "list", "set", "ip", TableName, SetRemote)
	if strings.Contains(out, "172.16.0.0/24") || !strings.Contains(out, "172.16.2.0/24") {
		t.Fatalf("removed CIDR still in set (or neighbour gone):\n%s", out)
	}

	// A CIDR that grows over an existing one: delete and add in one
	// transaction, overlapping intervals.
	m.RemoteCIDRs = append(m.RemoteCIDRs, netip.MustParsePrefix("172.16.2.0/23"))
	st = apply(t, b, m)
	if st.Full || st.ElementsAdded != 1 || st.ElementsDeleted != 1 {
		t.Fatalf("growing one CIDR: stats %+v", st)
	}
	ivs, err := b.SetIntervals(context.Background(), SetRemote)
	if err != nil {
		t.Fatal(err)
	}
	if len(ivs) != 1000 {
		t.Fatalf("set has %d intervals, want 1000", len(ivs))
	}
}

func TestApplyIdempotent(t *testing.T) {
	n := netnstest.New(t)
	b := newBackend(t, n)
	m := baseModel()
	m.CNIIP = netip.MustParseAddr("10.1.2.1")
	apply(t, b, m)
	before := listWeft(t, n)
	st := apply(t, b, m)
	if st.Messages != 0 || st.Full {
		t.Fatalf("second apply of the same model sent %+v", st)
	}
	if st.Read {
		t.Errorf("second apply re-read the table although nothing committed since: %+v", st)
	}
	if after := listWeft(t, n); after != before {
		t.Fatalf("ruleset changed:\n%s\n---\n%s", before, after)
	}
	// A fresh backend (a daemon restart) reads the state and also sends
	// nothing.
	st = apply(t, newBackend(t, n), m)
	if st.Messages != 0 || !st.Read {
		t.Fatalf("apply by a new backend: %+v", st)
	}
}

func TestApplyRepairsDrift(t *testing.T) {
	m := baseModel()
	m.CNIIP = netip.MustParseAddr("10.1.2.1")
	tests := []struct {
		name  string
		drift func(t *testing.T, n *netnstest.NS)
		full  bool
	}{
		{"delete table", func(t *testing.T, n *netnstest.NS) {
			n.MustExec(t, "nft", "delete", "table", "ip", TableName)
		}, true},
		{"flush ruleset", func(t *testing.T, n *netnstest.NS) {
			n.MustExec(t, "nft", "flush", "ruleset")
		}, true},
		{"delete one rule", func(t *testing.T, n *netnstest.NS) {
			out := n.MustExec(t, "nft", "-a", "list", "chain", "ip", TableName, ChainNAT)
			h := regexp.MustCompile(`snat to 10\.1\.2\.1 .*# handle (\d+)`).FindStringSubmatch(out)
			if h == nil {
				t.Fatalf("no handle in:\n%s", out)
			}
			n.MustExec(t, "nft", "delete", "rule", "ip", TableName, ChainNAT, "handle", h[1])
		}, true},
		{"flush chain", func(t *testing.T, n *netnstest.NS) {
			n.MustExec(t, "nft", "flush", "chain", "ip", TableName, ChainMSS)
		}, true},
		{"foreign rule added to our chain", func(t *testing.T, n *netnstest.NS) {
			n.MustExec(t, "nft", "add", "rule", "ip", TableName, ChainForward, "drop")
		}, true},
		{"delete set element", func(t *testing.T, n *netnstest.NS) {
			n.MustExec(t, "nft", "delete", "element", "ip", TableName, SetRemote, "{ 10.2.0.0/16 }")
		}, false},
		{"add set element", func(t *testing.T, n *netnstest.NS) {
			n.MustExec(t, "nft", "add", "element", "ip", TableName, SetLocal, "{ 192.0.2.0/24 }")
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := netnstest.New(t)
			b := newBackend(t, n)
			apply(t, b, m)
			want := listWeft(t, n)
			tt.drift(t, n)
			if out, _ := n.Exec("nft", "list", "table", "ip", TableName); out == want {
				t.Fatal("drift did not change anything")
			}
			st := apply(t, b, m)
			if !st.Read || st.Full != tt.full {
				t.Errorf("repair stats %+v, want read and full=%t", st, tt.full)
			}
			if got := listWeft(t, n); got != want {
				t.Fatalf("not restored:\n%s\n--- want\n%s", got, want)
			}
		})
	}
}

const foreignRuleset = `table ip filter {
	chain FORWARD {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		iifname "wt0" accept
	}
}
table ip kube-proxy {
	chain POSTROUTING {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.1.0.0/16 ip daddr != 10.1.0.0/16 masquerade
	}
}
`

func TestCoexistence(t *testing.T) {
	v4 := baseModel()
	v4.CNIIP = netip.MustParseAddr("10.1.2.1")
	tests := []struct {
		name    string
		ruleset string
		foreign []string // "family name" of each foreign table
		model   packetfilter.Model
		added   string
	}{
		{"ipv4", foreignRuleset, []string{"ip filter", "ip kube-proxy"}, v4, "10.3.0.0/16"},
		{"dual stack", foreignRuleset + foreignRuleset6, []string{"ip filter", "ip kube-proxy", "ip6 filter", "ip6 kube-proxy"}, dualModel(), "fd09::/48"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := netnstest.New(t)
			if out, err := n.Exec("sh", "-c", "nft -f - <<'EOF'\n"+tt.ruleset+"EOF\n"); err != nil {
				t.Fatalf("load foreign ruleset: %v %s", err, out)
			}
			list := func() string {
				var s string
				for _, tb := range tt.foreign {
					s += n.MustExec(t, "nft", append([]string{"-a", "list", "table"}, strings.Fields(tb)...)...)
				}
				return s
			}
			before := list()
			b := newBackend(t, n)
			m := tt.model
			apply(t, b, m)
			m.RemoteCIDRs = append(m.RemoteCIDRs, netip.MustParsePrefix(tt.added))
			apply(t, b, m)
			if after := list(); after != before {
				t.Fatalf("foreign tables changed by Apply:\n%s\n--- before\n%s", after, before)
			}
			if f := b.Findings(context.Background()); len(f) != 0 {
				t.Errorf("findings with accept policies: %+v", f)
			}
			ctx := context.Background()
			if err := b.Cleanup(ctx); err != nil {
				t.Fatal(err)
			}
			if err := b.Cleanup(ctx); err != nil {
				t.Fatalf("second Cleanup: %v", err)
			}
			if after := list(); after != before {
				t.Fatalf("foreign tables changed by Cleanup:\n%s\n--- before\n%s", after, before)
			}
			for _, fam := range []string{"ip", "ip6"} {
				if out, err := n.Exec("nft", "list", "table", fam, TableName); err == nil {
					t.Fatalf("table %s %s still there after Cleanup:\n%s", fam, TableName, out)
				}
			}
			// After Cleanup the next Apply rebuilds from nothing.
			if st := apply(t, b, m); !st.Full {
				t.Fatalf("apply after cleanup: %+v", st)
			}
		})
	}
}

func TestFindings(t *testing.T) {
	tests := []struct {
		name    string
		ruleset string
		want    []string // reasons
	}{
		{"none", foreignRuleset, nil},
		{"netdev ingress drop ignored", "table netdev edge {\n chain ing {\n type filter hook ingress device lo priority 0; policy drop;\n }\n}", nil},
		{"forward drop", "table ip filter {\n chain FORWARD {\n type filter hook forward priority filter; policy drop;\n ct state established,related accept\n }\n}", []string{"ForwardPolicyDrop"}},
		{"inet input drop", "table inet fw {\n chain in_chain {\n type filter hook input priority filter; policy drop;\n }\n}", []string{"InputPolicyDrop"}},
		{"ip6 drop ignored", "table ip6 fw {\n chain fwd_chain {\n type filter hook forward priority filter; policy drop;\n }\n}", nil},
		{"output drop ignored", "table ip fw {\n chain out_chain {\n type filter hook output priority filter; policy drop;\n }\n}", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := netnstest.New(t)
			if out, err := n.Exec("sh", "-c", "nft -f - <<'EOF'\n"+tt.ruleset+"\nEOF\n"); err != nil {
				t.Fatalf("load ruleset: %v %s", err, out)
			}
			b := newBackend(t, n)
			apply(t, b, baseModel()) // weft's own accept chains are not findings
			got := b.Findings(context.Background())
			var reasons []string
			for _, f := range got {
				if f.Type != FindingForeignDropPolicy || f.Message == "" || f.Fix == "" {
					t.Errorf("incomplete finding %+v", f)
				}
				reasons = append(reasons, f.Reason)
			}
			if fmt.Sprint(reasons) != fmt.Sprint(tt.want) {
				t.Fatalf("findings %+v, want reasons %v", got, tt.want)
			}
		})
	}
}

func TestApplyHonoursContext(t *testing.T) {
	n := netnstest.New(t)
	b := newBackend(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Apply(ctx, baseModel()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply with cancelled context = %v", err)
	}
}

// Without WithNetNSFd the backend works in the calling thread's namespace.
func TestApplyInCallingThreadNetNS(t *testing.T) {
	n := netnstest.New(t)
	b, err := New(WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Do(func(ns.NetNS) error { return b.Apply(context.Background(), baseModel()) }); err != nil {
		t.Fatalf("Apply inside n.Do: %v", err)
	}
	if out := listWeft(t, n); !strings.Contains(out, "chain "+ChainMSS) {
		t.Fatalf("table not in the test namespace:\n%s", out)
	}
	if err := n.Do(func(ns.NetNS) error { return b.Cleanup(context.Background()) }); err != nil {
		t.Fatal(err)
	}
}

// Apply's retry relies on a stale generation surfacing as ERESTART.
func TestStaleGenerationIsERESTART(t *testing.T) {
	n := netnstest.New(t)
	b := newBackend(t, n)
	cc, err := b.conn()
	if err != nil {
		t.Fatal(err)
	}
	gen, err := cc.GetGen()
	if err != nil {
		t.Fatal(err)
	}
	n.MustExec(t, "nft", "add", "table", "ip", "other")
	cc.AddTable(weftTable())
	if err := cc.FlushWithGenID(gen.ID); !errors.Is(err, unix.ERESTART) {
		t.Fatalf("flush with a stale generation = %v, want ERESTART", err)
	}
	if after, err := cc.GetGen(); err != nil || after.ID != nextGen(gen.ID) {
		t.Fatalf("generation after one foreign commit = %v (err %v), want %d", after, err, nextGen(gen.ID))
	}
}

// The socket Apply keeps open between calls belongs to one namespace: a
// backend without WithNetNSFd that is called from another namespace must
// open a new one there, and never write to the namespace it was in before.
func TestReusedSocketFollowsCallingThreadNetNS(t *testing.T) {
	n1, n2 := netnstest.New(t), netnstest.New(t)
	b, err := New(WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	in := func(n *netnstest.NS, m packetfilter.Model) {
		t.Helper()
		if err := n.Do(func(ns.NetNS) error { return b.Apply(context.Background(), m) }); err != nil {
			t.Fatalf("Apply in %s: %v", n.Name, err)
		}
	}
	m1, m2 := baseModel(), baseModel()
	m2.RemoteCIDRs = prefixes("10.3.0.0/16")
	in(n1, m1)
	in(n2, m2)
	in(n1, m1) // back again: still n1's table, and nothing to send
	if st := b.LastApplyStats(); st.Messages != 0 {
		t.Errorf("re-applying n1's model in n1 sent %d messages, want 0 (stats %+v)", st.Messages, st)
	}
	if got := setElements(t, listWeft(t, n1), SetRemote); got != "10.2.0.0/16, 10.102.0.0/16" {
		t.Errorf("n1 remote set = %q, want n1's model", got)
	}
	if got := setElements(t, listWeft(t, n2), SetRemote); got != "10.3.0.0/16" {
		t.Errorf("n2 remote set = %q, want n2's model", got)
	}
}
