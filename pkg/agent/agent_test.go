package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/dataplane"
	"github.com/weft-net/weft/pkg/discovery"
	"github.com/weft-net/weft/pkg/packetfilter"
	"github.com/weft-net/weft/pkg/spool"
	"github.com/weft-net/weft/pkg/state"
)

const testConfig = `
nodeName: c1-n2
cluster:
  id: c1
  podCIDRs: [10.1.0.0/16]
  serviceCIDRs: [10.101.0.0/16]
  gateway: c1-n1
  nodes:
    - {name: c1-n1, ip: 192.168.10.11}
    - {name: c1-n2, ip: 192.168.10.12}
remotes:
  - id: c2
    podCIDRs: [10.2.0.0/16]
    serviceCIDRs: [10.102.0.0/16]
    gatewayIP: 192.168.20.11
`

type fakeKernel struct {
	mu       sync.Mutex
	ifaces   []discovery.Iface
	ipv6     []bool         // Interfaces' argument, per call
	underlay []underlayCall // Underlay's arguments, per call
}

func (k *fakeKernel) set(ifs ...discovery.Iface) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ifaces = ifs
}

func (k *fakeKernel) Interfaces(ipv6 bool) ([]discovery.Iface, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ipv6 = append(k.ipv6, ipv6)
	out := make([]discovery.Iface, 0, len(k.ifaces))
	for _, i := range k.ifaces {
		if !ipv6 { // as the kernel: no IPv6 dump unless asked for
			i.Addrs = slices.DeleteFunc(slices.Clone(i.Addrs), netip.Addr.Is6)
		}
		out = append(out, i)
	}
	return out, nil
}

func (k *fakeKernel) Underlay(nodeIP netip.Addr, ipv6 bool) (string, netip.Addr, int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.underlay = append(k.underlay, underlayCall{nodeIP, ipv6})
	if ipv6 {
		return "eth0", netip.MustParseAddr("fd00:10::12"), 1500, nil
	}
	return "eth0", netip.MustParseAddr("192.168.10.12"), 1500, nil
}

type underlayCall struct {
	nodeIP netip.Addr
	ipv6   bool
}

// recorder stands in for the kernel managers: it keeps what it was asked to
// apply, and fails when told to.
type recorder struct {
	mu    sync.Mutex
	dp    dataplane.State
	pf    packetfilter.Model
	fail  error
	calls int
	// verify is State.Verify of every Apply, findings the Findings calls.
	verify    []bool
	findings  int
	pfApplies int
	pfVerify  []bool // Model.Verify of every packet-filter Apply
	reread    []bool // State.RereadRoutes of every Apply
}

func (r *recorder) Apply(_ context.Context, s dataplane.State) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.dp = s
	r.verify = append(r.verify, s.Verify)
	r.reread = append(r.reread, s.RereadRoutes)
	return r.fail
}
func (r *recorder) Cleanup(context.Context, []string, int, int) error { return nil }

type pfRecorder struct{ r *recorder }

func (p pfRecorder) Name() string { return "recorder" }
func (p pfRecorder) Apply(_ context.Context, m packetfilter.Model) error {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	p.r.pf = m
	p.r.pfApplies++
	p.r.pfVerify = append(p.r.pfVerify, m.Verify)
	return nil
}
func (p pfRecorder) Cleanup(context.Context) error { return nil }
func (p pfRecorder) Findings(context.Context) []packetfilter.Finding {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	p.r.findings++
	return nil
}

func newTestAgent(t testing.TB) (*Agent, *fakeKernel, *recorder, *state.Store) {
	t.Helper()
	return newTestAgentWith(t, testConfig, nil)
}

// newTestAgentWith is newTestAgent with another configuration and deps
// adjusted by with (nil: none).
func newTestAgentWith(t testing.TB, cfgYAML string, with func(*Deps)) (*Agent, *fakeKernel, *recorder, *state.Store) {
	t.Helper()
	cfg, err := config.Parse([]byte(cfgYAML))
	if err != nil {
		t.Fatal(err)
	}
	return newTestAgentCfg(t, cfg, with)
}

// newTestAgentCfg is newTestAgentWith with a parsed configuration.
func newTestAgentCfg(t testing.TB, cfg *config.Config, with func(*Deps)) (*Agent, *fakeKernel, *recorder, *state.Store) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := state.Open(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKernel{}
	k.set(discovery.Iface{Name: "eth0", Index: 2, Kind: "veth", Addrs: []netip.Addr{netip.MustParseAddr("192.168.10.12")}})
	rec := &recorder{}
	d := Deps{Log: log, Store: st, Kernel: k, Dataplane: rec, PacketFilter: pfRecorder{rec}}
	if with != nil {
		with(&d)
	}
	return New(cfg, d), k, rec, st
}

func cond(st api.Status, typ string) api.Condition {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return api.Condition{Type: typ, Reason: "absent"}
}

// The CNI interface may appear at any time after start; each reconcile
// re-evaluates it, and routes and SNAT follow its IP.
func TestLevelTriggeredDiscovery(t *testing.T) {
	ctx := context.Background()
	a, k, rec, store := newTestAgent(t)

	_ = a.Reconcile(ctx)
	st := a.Status()
	if st.Ready || st.CNIInterface != nil || cond(st, CondCNIInterfaceReady).Status {
		t.Fatalf("ready before the CNI interface exists: %+v", st)
	}
	for _, r := range rec.dp.Routes {
		if r.Src.IsValid() {
			t.Fatalf("route %v has a src before the CNI IP is known", r)
		}
	}
	if rec.pf.CNIIP.IsValid() {
		t.Fatal("packet-filter model has a CNI IP before discovery")
	}

	cni0 := discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}}
	k.set(append(k.ifaces, cni0)...)
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	st = a.Status()
	if !st.Ready || st.CNIInterface == nil || st.CNIInterface.Name != "cni0" || st.CNIInterface.IP != "10.1.2.1" || st.CNIInterface.Source != discovery.SourceWellKnown {
		t.Fatalf("after cni0 appeared: ready=%v cni=%+v", st.Ready, st.CNIInterface)
	}
	if rec.pf.CNIIP != netip.MustParseAddr("10.1.2.1") {
		t.Fatalf("packet filter CNI IP = %v", rec.pf.CNIIP)
	}
	if len(rec.dp.Routes) == 0 {
		t.Fatal("no routes desired for the remote cluster")
	}
	for _, r := range rec.dp.Routes {
		if r.Src != netip.MustParseAddr("10.1.2.1") {
			t.Fatalf("route %v: src = %v, want the CNI IP", r.Dst, r.Src)
		}
	}
	if got := store.CNI(); got == nil || got.IP != "10.1.2.1" {
		t.Fatalf("CNI interface not recorded durably: %+v", got)
	}

	// IP change: followed on the next pass.
	cni0.Addrs = []netip.Addr{netip.MustParseAddr("10.1.7.1")}
	k.set(k.ifaces[0], cni0)
	_ = a.Reconcile(ctx)
	if st := a.Status(); st.CNIInterface.IP != "10.1.7.1" || rec.pf.CNIIP != netip.MustParseAddr("10.1.7.1") {
		t.Fatalf("IP change not followed: %+v model %v", st.CNIInterface, rec.pf.CNIIP)
	}

	// Interface gone: not ready, record cleared.
	k.set(k.ifaces[0])
	_ = a.Reconcile(ctx)
	if st := a.Status(); st.Ready || st.CNIInterface != nil {
		t.Fatalf("still ready after the CNI interface disappeared: %+v", st)
	}
}

func TestPluginGatewayHintWins(t *testing.T) {
	ctx := context.Background()
	a, k, _, _ := newTestAgent(t)
	k.set(
		discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}},
		discovery.Iface{Name: "br-pods", Index: 9, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.3.1")}},
	)
	if err := a.Add(ctx, api.Event{Verb: api.VerbAdd, ContainerID: "c1", IfName: "eth0", IPs: []api.PodIP{{Address: "10.1.3.5/24", Gateway: "10.1.3.1"}}}); err != nil {
		t.Fatal(err)
	}
	_ = a.Reconcile(ctx)
	if c := a.Status().CNIInterface; c == nil || c.Name != "br-pods" || c.Source != discovery.SourcePlugin {
		t.Fatalf("cni = %+v, want br-pods from the plugin's gateway", c)
	}
}

func TestKernelRefusalIsAConditionNotACrash(t *testing.T) {
	ctx := context.Background()
	a, k, rec, _ := newTestAgent(t)
	k.set(discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})
	rec.fail = errors.New("operation not permitted")
	if err := a.Reconcile(ctx); err == nil {
		t.Fatal("reconcile hid the kernel's refusal")
	}
	st := a.Status()
	if st.Ready || st.LastReconcile == nil || st.LastReconcile.Error == "" || cond(st, CondDataplaneReady).Status {
		t.Fatalf("refusal not reported: %+v", st)
	}
	rec.fail = nil
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if st := a.Status(); !st.Ready || st.LastReconcile.Error != "" {
		t.Fatalf("did not recover: %+v", st)
	}
}

// The loop retries a failed pass with backoff without any new trigger.
func TestRunRetriesWithBackoff(t *testing.T) {
	a, k, rec, _ := newTestAgent(t)
	k.set(discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})
	rec.mu.Lock()
	rec.fail = errors.New("transient")
	rec.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx)
	time.Sleep(250 * time.Millisecond)
	rec.mu.Lock()
	rec.fail = nil
	rec.mu.Unlock()
	deadline := time.Now().Add(3 * time.Second)
	for !a.Status().Ready {
		if time.Now().After(deadline) {
			t.Fatal("never recovered from a transient failure")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConfigReloadAndRejection(t *testing.T) {
	ctx := context.Background()
	a, k, rec, _ := newTestAgent(t)
	k.set(discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})
	_ = a.Reconcile(ctx)
	if a.Status().Role != "non-gateway" {
		t.Fatal("role")
	}
	cfg, err := config.Parse([]byte(testConfig + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Cluster.Gateway = "c1-n2"
	a.SetConfig(cfg)
	_ = a.Reconcile(ctx)
	if a.Status().Role != "gateway" {
		t.Fatal("role did not follow the gateway change")
	}
	if len(rec.dp.Devices) < 2 {
		t.Fatalf("gateway with cable vxlan should want the cable device: %+v", rec.dp.Devices)
	}
	a.ConfigRejected(errors.New(`remotes[0].podCIDRs[1]: "10.2.0.0/33" is not a CIDR`))
	st := a.Status()
	if c := cond(st, CondConfigValid); c.Status || c.Message == "" {
		t.Fatalf("rejected config not reported: %+v", c)
	}
	if st.Role != "gateway" {
		t.Fatal("last good config not kept")
	}
}

func TestSpoolReplayInOrderAndLateAddAfterDel(t *testing.T) {
	ctx := context.Background()
	a, _, _, store := newTestAgent(t)
	dir := t.TempDir()
	t0 := time.Now()
	ev := func(verb, id string, dt time.Duration) api.Event {
		return api.Event{Verb: verb, ContainerID: id, IfName: "eth0", Time: t0.Add(dt)}
	}
	for _, e := range []api.Event{ev("ADD", "a", 0), ev("ADD", "b", 1), ev("DEL", "a", 2), ev("ADD", "c", 3)} {
		if _, err := spool.Write(context.Background(), dir, 100, e); err != nil {
			t.Fatal(err)
		}
	}
	// A DEL for d arrives live, after which its older ADD is replayed.
	if err := a.Del(ctx, ev("DEL", "d", 10)); err != nil {
		t.Fatal(err)
	}
	if _, err := spool.Write(context.Background(), dir, 100, ev("ADD", "d", 5)); err != nil {
		t.Fatal(err)
	}
	if err := a.DrainSpool(ctx, dir); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, at := range store.List() {
		ids = append(ids, at.ContainerID)
	}
	if len(ids) != 2 || ids[0] != "b" || ids[1] != "c" {
		t.Fatalf("attachments after replay = %v, want [b c]", ids)
	}
	if st := a.Status(); st.Spool.Replayed != 5 {
		t.Fatalf("replayed = %d, want 5", st.Spool.Replayed)
	}
	if entries, _, _ := spool.List(dir); len(entries) != 0 {
		t.Fatalf("spool not emptied: %d left", len(entries))
	}
}

type degradedPF struct{ pfRecorder }

func (d degradedPF) Apply(ctx context.Context, m packetfilter.Model) error {
	_ = d.pfRecorder.Apply(ctx, m)
	return fmt.Errorf("filter table unparsable: %w", packetfilter.ErrDegraded)
}

// A degraded packet filter (traffic rules in place, informative rules
// missing) is a condition, not a readiness failure.
func TestDegradedPacketFilterKeepsReadiness(t *testing.T) {
	ctx := context.Background()
	a, k, rec, _ := newTestAgent(t)
	a.pf = degradedPF{pfRecorder{rec}}
	k.set(discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})
	if err := a.Reconcile(ctx); err != nil {
		t.Fatalf("degraded filter reported as a failed reconcile: %v", err)
	}
	st := a.Status()
	if c := cond(st, CondPacketFilterReady); !st.Ready || c.Status || c.Reason != "Degraded" {
		t.Fatalf("ready=%v condition=%+v, want ready with PacketFilterReady=false/Degraded", st.Ready, c)
	}
}

// A live DEL removes the spooled ADD it supersedes from disk, so a weftd
// that dies before draining it cannot have a successor replay the ADD
// after the DEL (the in-memory tombstone dies with the process).
func TestLiveDelRemovesSupersededSpooledAdd(t *testing.T) {
	ctx := context.Background()
	a, _, _, store := newTestAgent(t)
	dir := t.TempDir()
	a.d.Startup.SpoolDir = dir // the spool the process drains is fixed at start
	t0 := time.Now()
	for _, e := range []api.Event{
		{Verb: "ADD", ContainerID: "gone", IfName: "eth0", Time: t0},
		{Verb: "ADD", ContainerID: "kept", IfName: "eth0", Time: t0.Add(time.Millisecond)},
	} {
		if _, err := spool.Write(context.Background(), dir, 100, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Del(ctx, api.Event{Verb: "DEL", ContainerID: "gone", IfName: "eth0", Time: t0.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	// A successor: fresh agent (no tombstones) on the same store and spool.
	b := New(a.Config(), a.d)
	if err := b.DrainSpool(ctx, dir); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, at := range store.List() {
		ids = append(ids, at.ContainerID)
	}
	if len(ids) != 1 || ids[0] != "kept" {
		t.Fatalf("attachments after the successor's replay = %v, want [kept]", ids)
	}
}

// Event-driven passes trust the last verified state; the first pass, every
// resync and the pass after a failure re-read the kernel (Verify) and are
// the only ones that inspect foreign packet-filter tables.
func TestRunVerifiesOnStartRetryAndResync(t *testing.T) {
	a, k, rec, _ := newTestAgent(t)
	a.d.MinSyncPeriod = 10 * time.Millisecond // five passes within the 1 s resync
	k.set(discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})
	cfg := *a.Config()
	cfg.ResyncInterval.Duration = time.Second
	a.mu.Lock()
	a.cfg = &cfg
	a.mu.Unlock()
	snapshot := func() ([]bool, int) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return append([]bool(nil), rec.verify...), rec.findings
	}
	waitPasses := func(n int) []bool {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for {
			v, _ := snapshot()
			if len(v) >= n {
				return v
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d passes after 3 s, want %d: %v", len(v), n, v)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx)

	start := time.Now()
	waitPasses(1)
	a.Trigger()
	waitPasses(2)
	rec.mu.Lock()
	rec.fail = errors.New("transient")
	rec.mu.Unlock()
	a.Trigger()
	waitPasses(3) // fails; the retry 100 ms later verifies
	rec.mu.Lock()
	rec.fail = nil
	rec.mu.Unlock()
	waitPasses(4)
	a.Trigger()
	got := waitPasses(5)
	if time.Since(start) > 900*time.Millisecond {
		t.Skipf("machine too slow to see the passes before the 1 s resync: %v", got)
	}
	got = waitPasses(6) // the resync
	want := []bool{true, false, false, true, false, true}
	for i, w := range want {
		if got[i] != w {
			t.Fatalf("Verify of passes = %v, want %v (start, trigger, trigger failing, retry, trigger, resync)", got[:len(want)], want)
		}
	}
	if _, f := snapshot(); f < 3 {
		t.Errorf("Findings called %d times, want one per verifying pass (>= 3)", f)
	}
	_, f := snapshot()
	if v, _ := snapshot(); f > countTrue(v) {
		t.Errorf("Findings called %d times for %d verifying passes: %v", f, countTrue(v), v)
	}
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// Event-driven passes skip the packet-filter backend when the rule model
// is the one last applied; verifying passes and changed models apply.
func TestUnchangedFilterModelSkippedOnEventPasses(t *testing.T) {
	ctx := context.Background()
	a, k, rec, _ := newTestAgent(t)
	cni0 := discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}}
	k.set(cni0)
	applies := func() int { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.pfApplies }
	steps := []struct {
		name   string
		verify bool
		change func()
		want   int
	}{
		{"first, verifying", true, nil, 1},
		{"event, unchanged", false, nil, 1},
		{"event, CNI IP changed", false, func() { cni0.Addrs = []netip.Addr{netip.MustParseAddr("10.1.3.1")}; k.set(cni0) }, 2},
		{"event, unchanged again", false, nil, 2},
		{"resync, verifying", true, nil, 3},
	}
	for _, s := range steps {
		if s.change != nil {
			s.change()
		}
		if err := a.reconcile(ctx, s.verify); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := applies(); got != s.want {
			t.Fatalf("%s: %d packet-filter applies, want %d", s.name, got, s.want)
		}
	}
	if !a.Status().Ready {
		t.Fatal("not ready")
	}
	// The backend is told which applies verify: the iptables backend
	// trusts its cache on the others.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if want := []bool{true, false, true}; !slices.Equal(rec.pfVerify, want) {
		t.Errorf("Model.Verify of the applies = %v, want %v", rec.pfVerify, want)
	}
}

// Nested or duplicate CIDRs of one remote are merged by validation; status
// shows the warning (ConfigValid stays true) at start and after a reload,
// and the routes use what covers them.
func TestConfigWarningsInStatus(t *testing.T) {
	ctx := context.Background()
	a, k, rec, _ := newTestAgent(t)
	k.set(discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})
	if c := cond(a.Status(), CondConfigValid); !c.Status || c.Reason != "Loaded" || c.Message != "" {
		t.Fatalf("clean config: %+v", c)
	}
	nested := strings.Replace(testConfig, "podCIDRs: [10.2.0.0/16]", "podCIDRs: [10.2.0.0/16, 10.2.5.0/24, 10.2.0.0/16]", 1)
	cfg, err := config.Parse([]byte(nested))
	if err != nil {
		t.Fatal(err)
	}
	a.SetConfig(cfg)
	_ = a.Reconcile(ctx)
	c := cond(a.Status(), CondConfigValid)
	if !c.Status || c.Reason != "ReloadedWithWarnings" ||
		!strings.Contains(c.Message, `remotes[0].podCIDRs[1]: "10.2.5.0/24" is inside remotes[0].podCIDRs[0]`) ||
		!strings.Contains(c.Message, `remotes[0].podCIDRs[2]: "10.2.0.0/16" repeats remotes[0].podCIDRs[0]`) || c.Fix == "" {
		t.Fatalf("warning not shown: %+v", c)
	}
	if cs := a.Status().Config; cs == nil || !cs.Valid || len(cs.Warnings) != 2 || cs.Warnings[0].Field != "remotes[0].podCIDRs[1]" || cs.Warnings[1].Field != "remotes[0].podCIDRs[2]" {
		t.Fatalf("config.warnings = %+v", cs)
	}
	var dsts []string
	for _, r := range rec.dp.Routes {
		dsts = append(dsts, r.Dst.String())
	}
	if strings.Join(dsts, " ") != "10.2.0.0/16 10.102.0.0/16" {
		t.Errorf("routes %v, want one per merged CIDR", dsts)
	}

	b := New(cfg, Deps{Log: a.d.Log, Store: a.d.Store, Kernel: k, Dataplane: rec, PacketFilter: pfRecorder{rec}})
	if c := cond(b.Status(), CondConfigValid); c.Reason != "LoadedWithWarnings" || !strings.Contains(c.Message, "2 CIDRs merged") {
		t.Fatalf("warning at start not shown: %+v", c)
	}
}

// A pass after a relevant netlink event (a route deleted, a weft device or
// the CNI interface changed) re-reads the route table (the kernel drops
// routes silently); passes after a pod's veth, a config change or a plugin
// event trust the last Apply's routes.
func TestNetlinkEventRereadsRoutes(t *testing.T) {
	ctx := context.Background()
	a, k, rec, _ := newTestAgent(t)
	k.set(discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})
	_ = a.reconcile(ctx, true)
	a.Trigger()
	_ = a.reconcile(ctx, false)
	a.NetlinkEvent(discovery.Event{Kind: "route-deleted"})
	_ = a.reconcile(ctx, false)
	a.NetlinkEvent(discovery.Event{Kind: "link", Link: "veth9", LinkKind: "veth", Index: 99})
	_ = a.reconcile(ctx, false)
	a.NetlinkEvent(discovery.Event{Kind: "link", Link: "cni0", LinkKind: "bridge", Index: 5, Deleted: true})
	_ = a.reconcile(ctx, false)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if want := []bool{false, false, true, false, true}; !slices.Equal(rec.reread, want) {
		t.Errorf("RereadRoutes of the passes = %v, want %v (verify, trigger, route deleted, pod veth, CNI interface gone)", rec.reread, want)
	}
}

// Without a valid configuration the agent records and answers plugin
// events, computes nothing and touches no kernel object; status names the
// field, the value and the fix. The first valid configuration makes it
// ready without a new agent (no restart).
func TestNoValidConfigThenFixed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := dir + "/weft.yaml"
	bad := strings.Replace(testConfig, "10.2.0.0/16", "10.2.0.0/33", 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	env := config.Env{Getenv: func(string) string { return "" }, Hostname: func() (string, error) { return "h", nil },
		Socket: dir + "/weft.sock", SpoolDir: dir + "/spool", StateDir: dir}
	cfg, boot, loadErr := config.LoadStartup(path, env)
	if cfg != nil || loadErr == nil {
		t.Fatalf("LoadStartup of an invalid file = %v, %v", cfg, loadErr)
	}
	if boot.NodeName != "c1-n2" || boot.ClusterID != "c1" || boot.Socket != dir+"/weft.sock" {
		t.Fatalf("startup = %+v, want the node and cluster from the file, the socket from env", boot)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := state.Open(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKernel{}
	k.set(discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})
	rec := &recorder{}
	chosen := 0
	a := New(nil, Deps{Log: log, Store: store, Kernel: k, Dataplane: rec, Startup: boot, ConfigPath: path,
		NewPacketFilter: func(context.Context, *config.Config) (packetfilter.Backend, error) {
			chosen++
			return pfRecorder{rec}, nil
		}})
	a.ConfigRejected(loadErr)

	if err := a.Add(ctx, api.Event{Verb: api.VerbAdd, ContainerID: "c1", IfName: "eth0"}); err != nil {
		t.Fatalf("ADD without a valid config: %v", err)
	}
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if rec.calls != 0 || rec.pfApplies != 0 || chosen != 0 {
		t.Fatalf("kernel touched without a valid config: %d data-plane applies, %d filter applies, backend chosen %d times", rec.calls, rec.pfApplies, chosen)
	}
	st := a.Status()
	c := cond(st, CondConfigValid)
	if st.Ready || c.Status || c.Reason != "InvalidConfig" || st.Attachments != 1 || st.Node != "c1-n2" || st.Role != RoleUnknown {
		t.Fatalf("status without a valid config: %+v", st)
	}
	if !strings.Contains(c.Message, `remotes[0].podCIDRs[0] = "10.2.0.0/33"`) || !strings.Contains(c.Fix, "set remotes[0].podCIDRs[0] in "+path) {
		t.Fatalf("ConfigValid = %+v, want field, value and fix", c)
	}
	if st.Config == nil || st.Config.Valid || len(st.Config.Problems) != 1 || st.Config.Problems[0].Value != `"10.2.0.0/33"` {
		t.Fatalf("config status = %+v", st.Config)
	}
	if ready, why := a.Ready(); ready || !strings.Contains(why, "remotes[0].podCIDRs[0]") {
		t.Fatalf("Ready() = %v %q", ready, why)
	}
	if r := a.Check(ctx, api.CheckRequest{ContainerID: "c1", IfName: "eth0"}); !r.Known || r.Ready {
		t.Fatalf("CHECK = %+v, want known and not ready", r)
	}

	good, err := config.Parse([]byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	good.Socket, good.SpoolDir, good.StateDir = boot.Socket, boot.SpoolDir, boot.StateDir
	m := config.DefaultMetricsAddress
	good.MetricsAddress = &m
	a.SetConfig(good)
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	st = a.Status()
	if !st.Ready || rec.calls != 1 || chosen != 1 || !cond(st, CondConfigValid).Status || st.Role != "non-gateway" || st.PacketFilter != "recorder" {
		t.Fatalf("after the fix: ready=%v applies=%d chosen=%d status=%+v", st.Ready, rec.calls, chosen, st)
	}
	if c := cond(st, CondRestartRequired); c.Reason != "absent" {
		t.Fatalf("RestartRequired = %+v with the same paths", c)
	}
}

// A reload applies what it can (the route table and rule priority reach the
// data plane) and reports the keys it cannot apply live as RestartRequired,
// never as plainly "Reloaded"; setting them back clears the condition.
func TestReloadRestartRequired(t *testing.T) {
	ctx := context.Background()
	a, k, rec, _ := newTestAgent(t)
	k.set(discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	orig := *a.Config()

	next := orig
	next.RouteTable, next.RulePriority = 250, 251
	next.Socket = "/run/other/weft.sock"
	next.PacketFilter = config.PacketFilterIptables
	a.SetConfig(&next)
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if rec.dp.Table != 250 || rec.dp.RulePriority != 251 {
		t.Fatalf("data plane table/priority = %d/%d, want 250/251", rec.dp.Table, rec.dp.RulePriority)
	}
	st := a.Status()
	rr := cond(st, CondRestartRequired)
	if rr.Status || rr.Reason == "absent" || !strings.Contains(rr.Message, "socket") || !strings.Contains(rr.Message, "packetFilter") ||
		strings.Contains(rr.Message, "routeTable") || strings.Contains(rr.Message, "rulePriority") {
		t.Fatalf("RestartRequired = %+v, want socket and packetFilter only", rr)
	}
	if cv := cond(st, CondConfigValid); cv.Reason == "Reloaded" || !cv.Status {
		t.Fatalf("ConfigValid = %+v: must not say plainly Reloaded while keys wait for a restart", cv)
	}
	if got := st.Config.RestartRequired; len(got) != 2 || got[0] != "socket" || got[1] != "packetFilter" {
		t.Fatalf("config.restartRequired = %v", got)
	}

	back := orig
	back.RouteTable = 250
	a.SetConfig(&back)
	st = a.Status()
	if c := cond(st, CondRestartRequired); c.Reason != "absent" {
		t.Fatalf("RestartRequired still there after the keys were set back: %+v", c)
	}
	if cv := cond(st, CondConfigValid); cv.Reason != "Reloaded" {
		t.Fatalf("ConfigValid = %+v, want Reloaded", cv)
	}
}
