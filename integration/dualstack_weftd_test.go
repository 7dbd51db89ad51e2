package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/dataplane"
	"github.com/weft-net/weft/pkg/topology"
)

// The real weftd on a dual-stack (or IPv6-only) node, for what the IPv4
// side shows in handoff_test.go, dataplane_test.go and twocluster_test.go:
// a CNI interface whose IPv6 address comes late, drift of every IPv6
// object weft owns, and `weftd cleanup` of them. One node of cluster c1
// (handoffNode), either its own gateway or a non-gateway whose gateway
// c1-n2 exists only in the file (its FDB, neighbour and routes are static,
// nothing needs it to answer), and remote cluster c2 in the file.

// The node's addresses beyond handoffNode's (the underlay is eth0
// 192.168.10.11, the pod subnet 10.1.1.0/24).
var (
	dsUL6      = netip.MustParseAddr("fd00:10::11")
	dsGW6      = netip.MustParseAddr("fd00:10::12") // c1-n2, the gateway of a non-gateway node
	dsCNI6     = netip.MustParseAddr("fd00:1:0:1::1")
	dsRemote6  = netip.MustParsePrefix("fd00:2::/56")
	dsRemoteGW = netip.MustParseAddr("192.168.20.11")
	dsRemote6G = netip.MustParseAddr("fd00:20::11") // c2's gateway on an IPv6 underlay
)

// dsSpec shapes dsWeftdNode.
type dsSpec struct {
	layout  harness.Layout
	backend string
	gateway bool // the node is its cluster's gateway; else c1-n2 is
	only6   bool // an IPv6-only cluster on an IPv6 underlay
	resync  time.Duration
}

// dsWeftdNode is handoffNode with the IPv6 half: the node's IPv6 underlay
// address and the file of a dual-stack (or IPv6-only) cluster c1 with a
// dual-stack (IPv6-only) remote c2. The CNI interface is left to the test.
func dsWeftdNode(t *testing.T, env *harness.Env, s dsSpec) (*harness.Node, harness.WeftdConfig) {
	t.Helper()
	if !env.HasBin("weftd") || !env.HasBin("weft") {
		t.Skipf("weft binaries not built in %s (make build)", env.BinDir)
	}
	n, cfg := handoffNode(t, env, harness.CNIOptions{Layout: s.layout})
	cl := cfg["cluster"].(map[string]any)
	pods, svcs := []string{"10.1.0.0/16", "fd00:1::/56"}, []string{"10.101.0.0/16", "fd00:101::/108"}
	rpods, rsvcs := []string{"10.2.0.0/16", dsRemote6.String()}, []string{"10.102.0.0/16", "fd00:102::/108"}
	remoteGW := dsRemoteGW
	nodes := []any{
		map[string]any{"name": "c1-n1", "ip": n.IP.String(), "ip6": dsUL6.String()},
		map[string]any{"name": "c1-n2", "ip": "192.168.10.12", "ip6": dsGW6.String()},
	}
	if s.only6 {
		pods, svcs, rpods, rsvcs = pods[1:], svcs[1:], rpods[1:], rsvcs[1:]
		remoteGW = dsRemote6G
		for _, nd := range nodes {
			delete(nd.(map[string]any), "ip")
		}
		delete(cfg, "nodeIP")
	}
	cl["podCIDRs"], cl["serviceCIDRs"], cl["nodes"] = pods, svcs, nodes
	cl["gateway"] = "c1-n1"
	if !s.gateway {
		cl["gateway"] = "c1-n2"
	}
	cfg["remotes"] = []any{map[string]any{"id": "c2", "podCIDRs": rpods, "serviceCIDRs": rsvcs, "gatewayIP": remoteGW.String()}}
	cfg["packetFilter"] = s.backend
	// The machine's iptables is iptables-nft (as in dpWorld.config).
	cfg["iptablesMode"] = "nft"
	if s.resync > 0 {
		cfg["resyncInterval"] = s.resync.String()
	}
	for _, c := range [][]string{
		{"ip", "-6", "addr", "add", dsUL6.String() + "/64", "dev", "eth0", "nodad"},
		// What the primary CNI of a cluster with IPv6 pods sets.
		{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
	} {
		if out, err := n.Exec(c[0], c[1:]...); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	return n, cfg
}

// dsStart is dsWeftdNode with the flannel layout, cni0 (made by a first
// pod) holding the CNI IPv6 address dsCNI6 (without DAD), and weftd
// started.
func dsStart(t *testing.T, ctx context.Context, s dsSpec) (*harness.Node, harness.WeftdConfig, *harness.Weftd) {
	t.Helper()
	s.layout = harness.LayoutFlannel
	n, cfg := dsWeftdNode(t, harness.NewTestEnv(t), s)
	dsRun(t, ctx, n, "first")
	dpExec(t, n, "ip", "-6", "addr", "add", dsCNI6.String()+"/64", "dev", "cni0", "nodad")
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	return n, cfg, w
}

// dsRun is a pod run through the real chain on n: with the flannel layout
// the first one makes cni0 (IPv4 only, as host-local here hands out IPv4).
func dsRun(t *testing.T, ctx context.Context, n *harness.Node, name string) {
	t.Helper()
	pod, err := n.NewPod("default", name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.AttachCNITool(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

// dsVTEP6 is the IPv6 VTEP of a node with underlay address ul on the
// device with default range cidr (config.DefaultVTEPCIDR6 or
// DefaultCableVTEPCIDR6).
func dsVTEP6(cidr string, ul netip.Addr) netip.Addr {
	return topology.VTEPIP(netip.MustParsePrefix(cidr), ul)
}

// dsTentative reports whether addr on n is still tentative (duplicate
// address detection running): the kernel does not use it as a source yet.
func dsTentative(n *harness.Node, addr netip.Addr) bool {
	out, _ := n.Exec("ip", "-6", "addr", "show", "to", addr.String()+"/128")
	return !strings.Contains(out, addr.String()) || strings.Contains(out, "tentative")
}

// dsConverged waits until n's IPv6 routes in weft's table carry src want,
// the host SNAT of IPv6 rewrites to want (invalid: neither has any) and
// status agrees (ready as readyToo says), and returns how long each took
// from start. A condition not met within 5 s fails t.
func dsConverged(t *testing.T, ctx context.Context, w *harness.Weftd, n *harness.Node, backend string, want netip.Addr, readyToo bool, start time.Time) map[string]time.Duration {
	t.Helper()
	var routes, snat []string
	var st api.Status
	lat := map[string]time.Duration{}
	// In sequence, so each latency is from start, not from the previous
	// check.
	for _, c := range []struct {
		what string
		cond func() bool
	}{
		{"IPv6 routes src", func() bool { ok, l := dpRoutesOfHaveSrc(n, true, want); routes = l; return ok }},
		{"IPv6 host SNAT", func() bool { ok, r := dpSNATOfTo(n, backend, true, want); snat = r; return ok }},
		{"status", func() bool {
			var err error
			st, err = w.Status(ctx)
			ip6 := ""
			if want.IsValid() {
				ip6 = want.String()
			}
			return err == nil && st.CNIInterface != nil && st.CNIInterface.IP6 == ip6 && st.Ready == readyToo
		}},
	} {
		if _, ok := dpWaitUntil(5*time.Second-time.Since(start), c.cond); !ok {
			t.Errorf("%s not converged to %v after %s (routes %q, snat %q, status ready %v cni %+v conditions %+v)\n%s",
				c.what, want, time.Since(start).Round(time.Millisecond), routes, snat, st.Ready, st.CNIInterface, st.Conditions, w.LogTail(2000))
			continue
		}
		lat[c.what] = time.Since(start).Round(time.Millisecond)
	}
	return lat
}

// cniCond is the status's CNIInterfaceReady condition.
func cniCond(st api.Status) api.Condition {
	for _, c := range st.Conditions {
		if c.Type == "CNIInterfaceReady" {
			return c
		}
	}
	return api.Condition{}
}

// TestDualStackLateCNIInterface starts weftd on a dual-stack node before
// its CNI interface has an IPv6 address, per backend: the flannel layout
// (gateway node; cni0 appears with the first pod, IPv4 only, its IPv6
// address later) and the Calico layout (non-gateway node; no CNI interface
// at all, then Calico's IPv6 device vxlan-v6.calico before its IPv4 one).
//
// While a family's CNI address is missing weftd serves, is not ready, and
// says which family it waits for in CNIInterfaceReady; the other family is
// programmed (its routes' src, its host SNAT), and the waiting family's
// routes are installed without src and its host SNAT is absent. When the
// IPv6 address appears — through duplicate address detection, as a CNI
// adds it — the IPv6 routes get it as src and the IPv6 host SNAT rewrites
// to it, within 1 s of the address becoming usable; a renumbering moves
// both.
func TestDualStackLateCNIInterface(t *testing.T) {
	for _, backend := range dpBackends {
		t.Run("flannel-gateway/"+backend, func(t *testing.T) { testLateCNIFlannel(t, backend) })
		t.Run("calico-non-gateway/"+backend, func(t *testing.T) { testLateCNICalico(t, backend) })
	}
}

func testLateCNIFlannel(t *testing.T, backend string) {
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	n, cfg := dsWeftdNode(t, env, dsSpec{layout: harness.LayoutFlannel, backend: backend, gateway: true})
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	pid := w.PID
	// No cni0 at all: serving, nothing known, not ready.
	st, err := w.WaitFor(ctx, func(s api.Status) bool { return s.LastReconcile != nil })
	if err != nil {
		t.Fatal(err)
	}
	if st.Ready || st.CNIInterface != nil || cniCond(st).Status {
		t.Fatalf("before any CNI interface: ready %v cni %+v condition %+v", st.Ready, st.CNIInterface, cniCond(st))
	}
	t.Logf("no CNI interface: %s", cniCond(st).Message)

	// The first pod makes cni0 with its IPv4 address only.
	dsRun(t, ctx, n, "first")
	cni4 := netip.MustParseAddr("10.1.1.1")
	if d, ok := dpWaitUntil(5*time.Second, func() bool {
		ok, _ := dpRoutesHaveSrc(n, cni4)
		ok6, _ := dpRoutesOfHaveSrc(n, true, netip.Addr{})
		return ok && ok6
	}); !ok {
		l4, _ := dpRoutes(n)
		l6, _ := dpRoutesOf(n, true)
		t.Fatalf("IPv4 routes with src %s and IPv6 routes without src not there after %s: %q %q\n%s", cni4, d, l4, l6, w.LogTail(2000))
	}
	st, _ = w.Status(ctx)
	c := cniCond(st)
	t.Logf("cni0 with IPv4 only: ready %v, %s %v %s: %s", st.Ready, c.Type, c.Status, c.Reason, c.Message)
	if st.Ready || c.Status || !strings.Contains(c.Message, "IPv6") || st.CNIInterface == nil || st.CNIInterface.IP != cni4.String() || st.CNIInterface.IP6 != "" {
		t.Errorf("IPv6 CNI address missing: want not ready and CNIInterfaceReady false naming IPv6; ready %v cni %+v condition %+v", st.Ready, st.CNIInterface, c)
	}
	if ok, r := dpSNATTo(n, backend, cni4); !ok {
		t.Errorf("IPv4 host SNAT to %s missing while IPv6 waits: %q", cni4, r)
	}
	if ok, r := dpSNATOfTo(n, backend, true, netip.Addr{}); !ok {
		t.Errorf("IPv6 host SNAT present before the CNI interface has an IPv6 address: %q", r)
	}
	if out := dpExec(t, n, "ip", "-6", "rule", "show"); !strings.Contains(out, "from all lookup 240 proto 247") {
		t.Errorf("no ip -6 rule while the IPv6 address is missing:\n%s", out)
	}
	human, _, _ := n.WeftdCommand(ctx, "status", "--socket", w.Socket)
	t.Logf("weftd status:\n%s", human)

	steps := []struct {
		name   string
		change [][]string
		want   netip.Addr
		gone   netip.Addr // the address that left (renumbering)
	}{
		{"IPv6 address appears", [][]string{{"ip", "-6", "addr", "add", dsCNI6.String() + "/64", "dev", "cni0"}}, dsCNI6, netip.Addr{}},
		{"IPv6 address renumbered", [][]string{
			{"ip", "-6", "addr", "add", "fd00:1:0:1::100/64", "dev", "cni0"},
			{"@usable", "fd00:1:0:1::100"},
			{"ip", "-6", "addr", "del", dsCNI6.String() + "/64", "dev", "cni0"},
		}, netip.MustParseAddr("fd00:1:0:1::100"), dsCNI6},
		// The CNI loses its IPv6 address (a restart): back to waiting,
		// the IPv6 routes without src, no IPv6 host SNAT.
		{"IPv6 address removed", [][]string{{"ip", "-6", "addr", "del", "fd00:1:0:1::100/64", "dev", "cni0"}},
			netip.Addr{}, netip.MustParseAddr("fd00:1:0:1::100")},
	}
	for i, s := range steps {
		logAt := len(w.Log())
		var start time.Time
		for _, c := range s.change {
			if c[0] == "@usable" {
				// The new address finishes its duplicate address detection
				// before the old one goes.
				if _, ok := dpWaitUntil(5*time.Second, func() bool { return !dsTentative(n, netip.MustParseAddr(c[1])) }); !ok {
					t.Fatalf("%s still tentative", c[1])
				}
				continue
			}
			start = time.Now()
			dpExec(t, n, c[0], c[1:]...)
		}
		// Duplicate address detection keeps a new address tentative (not a
		// source) for 1 to 2 s: the promise is from when it is usable.
		var waiting string // what status said while the address was tentative
		tent, ok := dpWaitUntil(5*time.Second, func() bool {
			if !s.want.IsValid() || !dsTentative(n, s.want) {
				return true
			}
			if st, err := w.Status(ctx); err == nil && strings.Contains(cniCond(st).Message, "not usable yet: "+s.want.String()) {
				waiting = cniCond(st).Message
			}
			return false
		})
		if !ok {
			t.Fatalf("%s: %s still tentative after %s", s.name, s.want, tent)
		}
		usable := start.Add(tent)
		if tent > 500*time.Millisecond {
			// Long enough to have been seen: status names the address.
			t.Logf("%s: while tentative: %s", s.name, waiting)
			if waiting == "" {
				t.Errorf("%s: while %s was tentative (%s) CNIInterfaceReady never said it waits for it", s.name, s.want, tent)
			}
		}
		lat := dsConverged(t, ctx, w, n, backend, s.want, s.want.IsValid(), start)
		if s.want.IsValid() {
			t.Logf("%s (%s): usable after %s; from the change: %v", s.name, s.want, tent.Round(time.Millisecond), lat)
		} else {
			t.Logf("%s (%s gone): from the change: %v", s.name, s.gone, lat)
		}
		for what, d := range lat {
			if after := start.Add(d).Sub(usable); after > time.Second {
				t.Errorf("%s: %s took %s after the address became usable, want within 1s", s.name, what, after)
			}
		}
		for _, cmd := range [][]string{{"ip", "-6", "route", "show", "table", "240"}, dpPFSave(backend, true)} {
			if out := dpExec(t, n, cmd[0], cmd[1:]...); s.gone.IsValid() && strings.Contains(out, s.gone.String()+" ") {
				t.Errorf("%s: %v still names %s:\n%s", s.name, cmd, s.gone, out)
			}
		}
		switch st, _ := w.Status(ctx); {
		case !s.want.IsValid() && (cniCond(st).Status || !strings.Contains(cniCond(st).Message, "IPv6")):
			t.Errorf("%s: CNIInterfaceReady %+v, want false naming IPv6", s.name, cniCond(st))
		case s.want.IsValid() && (!cniCond(st).Status || !strings.Contains(cniCond(st).Message, s.want.String())):
			t.Errorf("%s: CNIInterfaceReady %+v, want true naming %s", s.name, cniCond(st), s.want)
		}
		// A tentative address is waited for, not tried: a route refuses it
		// as its source (EINVAL), which was a failed pass and a retry.
		// (Only here: a renumbering may remove an address while a pass
		// that read it writes routes, which fails that pass by design.)
		if log := w.Log()[logAt:]; i == 0 && strings.Contains(log, "reconcile failed") {
			t.Errorf("%s: a reconcile pass failed:\n%s", s.name, log)
		}
	}
	if !w.Running() || w.PID != pid {
		t.Fatalf("weftd restarted or exited (pid %d → %d)", pid, w.PID)
	}
}

// dpPFSave is the command that lists the backend's rules of a family.
func dpPFSave(backend string, v6 bool) []string {
	switch {
	case backend == "nftables" && v6:
		return []string{"nft", "list", "table", "ip6", "weft"}
	case backend == "nftables":
		return []string{"nft", "list", "table", "ip", "weft"}
	case v6:
		return []string{"ip6tables-nft-save"}
	}
	return []string{"iptables-nft-save"}
}

// calicoV6Device is Calico's IPv6 VXLAN device (VNI 4098, its default) on
// the IPv6 underlay, holding addr/128.
func calicoV6Device(t *testing.T, n *harness.Node, addr netip.Addr) {
	t.Helper()
	for _, c := range [][]string{
		{"link", "add", "vxlan-v6.calico", "type", "vxlan", "id", "4098", "dstport", "4789", "local", dsUL6.String(), "dev", "eth0", "nolearning"},
		{"link", "set", "vxlan-v6.calico", "mtu", "1430"},
		{"-6", "addr", "add", addr.String() + "/128", "dev", "vxlan-v6.calico"},
		{"link", "set", "vxlan-v6.calico", "up"},
	} {
		dpExec(t, n, "ip", c...)
	}
}

func testLateCNICalico(t *testing.T, backend string) {
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	n, cfg := dsWeftdNode(t, env, dsSpec{layout: harness.LayoutCalico, backend: backend})
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitFor(ctx, func(s api.Status) bool {
		ok, _ := dpRoutesOfHaveSrc(n, true, netip.Addr{})
		return s.LastReconcile != nil && ok
	}); err != nil {
		t.Fatalf("IPv6 routes without src never installed: %v\n%s", err, w.LogTail(2000))
	}
	if st, _ := w.Status(ctx); st.Ready || st.CNIInterface != nil || st.Role != "non-gateway" {
		t.Fatalf("before any CNI interface: %+v", st)
	}

	// Calico's IPv6 device first: the IPv6 half is programmed, the node
	// waits for IPv4 and says so.
	start := time.Now()
	calicoV6Device(t, n, dsCNI6)
	tent, ok := dpWaitUntil(5*time.Second, func() bool { return !dsTentative(n, dsCNI6) })
	if !ok {
		t.Fatalf("%s still tentative", dsCNI6)
	}
	lat := dsConverged(t, ctx, w, n, backend, dsCNI6, false, start)
	t.Logf("vxlan-v6.calico before vxlan.calico: %s usable after %s; from the device: %v", dsCNI6, tent.Round(time.Millisecond), lat)
	for what, d := range lat {
		if d-tent > time.Second {
			t.Errorf("%s took %s after the address became usable, want within 1s", what, d-tent)
		}
	}
	st, _ := w.Status(ctx)
	c := cniCond(st)
	t.Logf("%s %v %s: %s", c.Type, c.Status, c.Reason, c.Message)
	if st.Ready || c.Status || !strings.Contains(c.Message, "IPv4") {
		t.Errorf("IPv4 CNI address missing: ready %v condition %+v, want not ready naming IPv4", st.Ready, c)
	}
	if ok, l := dpRoutesOfHaveSrc(n, false, netip.Addr{}); !ok {
		t.Errorf("IPv4 routes want no src while IPv4 waits: %q", l)
	}

	// Then the IPv4 device: ready, both families.
	start = time.Now()
	ip4, err := n.CreateCalicoDevice()
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := dpWaitUntil(5*time.Second, func() bool {
		ok, _ := dpRoutesHaveSrc(n, ip4)
		ok6, _ := dpRoutesOfHaveSrc(n, true, dsCNI6)
		snat, _ := dpSNATTo(n, backend, ip4)
		st, err := w.Status(ctx)
		return ok && ok6 && snat && err == nil && st.Ready
	}); !ok {
		st, _ := w.Status(ctx)
		t.Fatalf("not ready with both families %s after vxlan.calico: %+v\n%s", d, st, w.LogTail(2000))
	} else {
		t.Logf("vxlan.calico (%s): both families programmed and ready %s after the device", ip4, d.Round(time.Millisecond))
		if d > time.Second {
			t.Errorf("ready %s after vxlan.calico, want within 1s", d)
		}
	}
	st, _ = w.Status(ctx)
	if c := st.CNIInterface; c.Name != harness.CalicoDevice || c.Name6 != "vxlan-v6.calico" || c.IP6 != dsCNI6.String() {
		t.Errorf("cniInterface %+v, want vxlan.calico and vxlan-v6.calico", c)
	}
	// The non-gateway's IPv6 objects towards its gateway c1-n2.
	gwVTEP6 := dsVTEP6(config.DefaultVTEPCIDR6, netip.MustParseAddr("192.168.10.12"))
	if out := dpExec(t, n, "ip", "-6", "neigh", "show", "dev", dpVXLAN); !strings.Contains(out, gwVTEP6.String()+" lladdr") || !strings.Contains(out, "PERMANENT") {
		t.Errorf("no static IPv6 neighbour for the gateway's VTEP %s:\n%s", gwVTEP6, out)
	}
}

// dsResync is weftd's resyncInterval in TestDualStackDrift: what no event
// reports (neighbours, FDB, sysctls, the packet filter) is repaired by the
// next resync.
const dsResync = time.Second

// dsDrift is one IPv6 object broken behind weft's back, and how to tell
// it is back.
type dsDrift struct {
	name    string
	breakIt [][]string
	back    func() error
}

// TestDualStackDrift breaks every IPv6 object weftd owns, one at a time,
// with ip, bridge, nft, ip6tables and ipset, on a gateway and a non-
// gateway node of a dual-stack cluster and a non-gateway node of an
// IPv6-only cluster (its FDB points at IPv6 underlay addresses), per
// backend: weftd restores each within its resync interval (plus a
// margin), the time printed; foreign IPv6 rules, routes, nft tables,
// ip6tables rules and ipsets stay as they were. Then `weftd cleanup`
// removes every IPv6 object and, run again, changes nothing.
func TestDualStackDrift(t *testing.T) {
	for _, backend := range dpBackends {
		for _, role := range []struct {
			name           string
			gateway, only6 bool
		}{{"gateway", true, false}, {"non-gateway", false, false}, {"ipv6-only-non-gateway", false, true}} {
			t.Run(role.name+"/"+backend, func(t *testing.T) { testDualStackDrift(t, backend, role.gateway, role.only6) })
		}
	}
}

func testDualStackDrift(t *testing.T, backend string, gateway, only6 bool) {
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 90*time.Second)
	n, cfg := dsWeftdNode(t, env, dsSpec{layout: harness.LayoutFlannel, backend: backend, gateway: gateway, only6: only6, resync: dsResync})
	dsRun(t, ctx, n, "first")
	dpExec(t, n, "ip", "-6", "addr", "add", dsCNI6.String()+"/64", "dev", "cni0", "nodad")
	foreign := dsForeign(t, n, backend)
	before := foreign.snapshot(t)
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	st, err := w.WaitFor(wctx, func(s api.Status) bool {
		return s.Ready && s.CNIInterface != nil && s.CNIInterface.IP6 == dsCNI6.String()
	})
	cancel()
	if err != nil {
		t.Fatalf("not ready: %v\n%s", err, w.LogTail(3000))
	}
	t.Logf("%s, %s: cniInterface %+v", st.Role, st.PacketFilter, *st.CNIInterface)

	// What the node's IPv6 objects are. Dual stack: the VTEPs are derived
	// from the IPv4 underlay address, the FDB points at IPv4 ones.
	ul, gwUL, remoteUL := n.IP, netip.MustParseAddr("192.168.10.12"), dsRemoteGW
	if only6 {
		ul, gwUL, remoteUL = dsUL6, dsGW6, dsRemote6G
	}
	dev, peerVTEP6, peerUL := dpVXLAN, dsVTEP6(config.DefaultVTEPCIDR6, gwUL), gwUL
	ownVTEP6 := dsVTEP6(config.DefaultVTEPCIDR6, ul)
	if gateway {
		dev, peerVTEP6, peerUL = dpVXLAN+"-cable", dsVTEP6(config.DefaultCableVTEPCIDR6, remoteUL), remoteUL
		ownVTEP6 = dsVTEP6(config.DefaultCableVTEPCIDR6, ul)
	}
	peerMAC := dataplane.MACFor(peerVTEP6)
	if !only6 {
		// A dual-stack peer's MAC is its IPv4 VTEP's (one MAC per peer).
		v4 := config.DefaultVXLAN.VTEPCIDR
		if gateway {
			v4 = config.DefaultCableVXLAN.VTEPCIDR
		}
		peerMAC = dataplane.MACFor(topology.VTEPIP(netip.MustParsePrefix(v4), peerUL))
	}
	route6 := dsRemote6.String()
	has := func(cmd []string, want ...string) func() error {
		return func() error {
			out, err := n.Exec(cmd[0], cmd[1:]...)
			if err != nil {
				return fmt.Errorf("%v: %v %s", cmd, err, out)
			}
			for _, w := range want {
				if !strings.Contains(out, w) {
					return fmt.Errorf("%v lacks %q:\n%s", cmd, w, out)
				}
			}
			return nil
		}
	}
	routeOK := has([]string{"ip", "-6", "route", "show", "table", "240", route6},
		fmt.Sprintf("%s via %s dev %s proto 247 src %s", route6, peerVTEP6, dev, dsCNI6))
	neighOK := has([]string{"ip", "-6", "neigh", "show", "dev", dev, peerVTEP6.String()}, "lladdr "+peerMAC.String(), "PERMANENT")
	cases := []dsDrift{
		{"ip -6 route deleted", [][]string{{"ip", "-6", "route", "del", route6, "table", "240"}}, routeOK},
		{"ip -6 route loses its src", [][]string{{"ip", "-6", "route", "replace", route6, "via", peerVTEP6.String(), "dev", dev, "onlink", "proto", "247", "table", "240"}}, routeOK},
		{"ip -6 rule deleted", [][]string{{"ip", "-6", "rule", "del", "priority", "240"}}, has([]string{"ip", "-6", "rule", "show"}, "240:\tfrom all lookup 240 proto 247")},
		{"IPv6 VTEP address deleted", [][]string{{"ip", "-6", "addr", "del", ownVTEP6.String() + "/96", "dev", dev}},
			func() error {
				if err := has([]string{"ip", "-6", "addr", "show", "dev", dev}, ownVTEP6.String()+"/96")(); err != nil {
					return err
				}
				return routeOK() // the address took the routes through it along
			}},
		{"IPv6 forwarding off on weft's device", [][]string{{"sysctl", "-qw", "net.ipv6.conf." + dev + ".forwarding=0"}},
			has([]string{"sysctl", "-n", "net.ipv6.conf." + dev + ".forwarding"}, "1")},
		{"router advertisements accepted on weft's device", [][]string{{"sysctl", "-qw", "net.ipv6.conf." + dev + ".accept_ra=1"}},
			has([]string{"sysctl", "-n", "net.ipv6.conf." + dev + ".accept_ra"}, "0")},
		{"IPv6 disabled on weft's device", [][]string{{"sysctl", "-qw", "net.ipv6.conf." + dev + ".disable_ipv6=1"}},
			func() error {
				// Disabling IPv6 took the address, its neighbours and
				// routes along.
				for _, f := range []func() error{has([]string{"sysctl", "-n", "net.ipv6.conf." + dev + ".disable_ipv6"}, "0"),
					has([]string{"ip", "-6", "addr", "show", "dev", dev}, ownVTEP6.String()+"/96"), routeOK, neighOK} {
					if err := f(); err != nil {
						return err
					}
				}
				return nil
			}},
		{"static IPv6 neighbour deleted", [][]string{{"ip", "-6", "neigh", "del", peerVTEP6.String(), "dev", dev}}, neighOK},
		{"static IPv6 neighbour changed", [][]string{{"ip", "-6", "neigh", "replace", peerVTEP6.String(), "lladdr", "02:00:00:00:00:01", "nud", "permanent", "dev", dev}}, neighOK},
	}
	if only6 {
		fdbOK := has([]string{"bridge", "fdb", "show", "dev", dev}, peerMAC.String()+" dst "+peerUL.String()+" self permanent")
		cases = append(cases,
			dsDrift{"IPv6 FDB entry deleted", [][]string{{"bridge", "fdb", "del", peerMAC.String(), "dev", dev, "dst", peerUL.String()}}, fdbOK},
			dsDrift{"IPv6 FDB entry moved", [][]string{{"bridge", "fdb", "replace", peerMAC.String(), "dev", dev, "dst", "fd00:10::99", "self", "permanent"}}, fdbOK})
	}
	snat6 := "snat to " + dsCNI6.String()
	if backend == "nftables" {
		table := has([]string{"nft", "list", "table", "ip6", "weft"}, snat6, route6, "tcp option maxseg size set rt mtu")
		cases = append(cases,
			dsDrift{"nft table ip6 weft deleted", [][]string{{"nft", "delete", "table", "ip6", "weft"}}, table},
			dsDrift{"nft chain ip6 weft nat-postrouting flushed", [][]string{{"nft", "flush", "chain", "ip6", "weft", "nat-postrouting"}}, table},
			dsDrift{"nft set ip6 weft remote flushed", [][]string{{"nft", "flush", "set", "ip6", "weft", "remote"}}, table})
	} else {
		snat6 = "-j SNAT --to-source " + dsCNI6.String()
		nat := has([]string{"ip6tables-nft-save", "-t", "nat"}, "-A POSTROUTING -m comment --comment weft -j WEFT-POSTROUTING", snat6)
		mangle := has([]string{"ip6tables-nft-save", "-t", "mangle"}, "-A POSTROUTING -m comment --comment weft -j WEFT-MSS", "--clamp-mss-to-pmtu")
		set := func(name, member string) func() error {
			return has([]string{"ipset", "list", name}, "family inet6", member)
		}
		cases = append(cases,
			dsDrift{"ip6tables WEFT-POSTROUTING flushed", [][]string{{"ip6tables-nft", "-w", "-t", "nat", "-F", "WEFT-POSTROUTING"}}, nat},
			dsDrift{"ip6tables jump to WEFT-POSTROUTING deleted", [][]string{{"ip6tables-nft", "-w", "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "weft", "-j", "WEFT-POSTROUTING"}}, nat},
			dsDrift{"ip6tables WEFT-MSS flushed", [][]string{{"ip6tables-nft", "-w", "-t", "mangle", "-F", "WEFT-MSS"}}, mangle},
			dsDrift{"ipset weft-remote6 member deleted", [][]string{{"ipset", "del", "weft-remote6", route6}}, set("weft-remote6", route6)},
			dsDrift{"ipset weft-local6 flushed", [][]string{{"ipset", "flush", "weft-local6"}}, set("weft-local6", "fd00:1::/56")})
	}
	for _, d := range cases {
		t.Run(strings.ReplaceAll(d.name, " ", "-"), func(t *testing.T) {
			if err := d.back(); err != nil {
				t.Fatalf("before breaking it: %v", err)
			}
			for _, c := range d.breakIt {
				dpExec(t, n, c[0], c[1:]...)
			}
			var err error
			took, ok := dpWaitUntil(dsResync+driftMargin, func() bool { err = d.back(); return err == nil })
			if !ok {
				t.Fatalf("not repaired within %s: %v\n%s", dsResync+driftMargin, err, w.LogTail(2000))
			}
			t.Logf("%s: repaired after %s", d.name, took.Round(time.Millisecond))
		})
	}
	if after := foreign.snapshot(t); after != before {
		t.Errorf("foreign IPv6 objects changed while weftd ran and repaired:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if !w.Running() {
		t.Fatalf("weftd exited: %v", w.ExitErr())
	}

	t.Run("cleanup", func(t *testing.T) { dsCleanup(t, ctx, n, w, backend, foreign, before) })
}

// dsForeignObjects are IPv6 objects that are not weft's, on one node.
type dsForeignObjects struct {
	n    *harness.Node
	cmds [][]string
}

// dsForeign adds IPv6 objects that are not weft's — an ip -6 rule, a
// route in another table and one of another protocol in weft's table, an
// nft table ip6 (nftables) or ip6tables rules and an inet6 ipset
// (iptables) — and returns how to list them.
func dsForeign(t *testing.T, n *harness.Node, backend string) *dsForeignObjects {
	t.Helper()
	f := &dsForeignObjects{n: n, cmds: [][]string{
		{"ip", "-6", "rule", "show", "priority", "300"},
		{"ip", "-6", "route", "show", "table", "300"},
		{"ip", "-6", "route", "show", "table", "240", "fd00:99::/64"},
	}}
	for _, c := range [][]string{
		{"ip", "-6", "rule", "add", "priority", "300", "from", "fd00:99::/64", "lookup", "300"},
		{"ip", "-6", "route", "add", "fd00:98::/64", "dev", "eth0", "table", "300"},
		{"ip", "-6", "route", "add", "fd00:99::/64", "dev", "eth0", "table", "240"},
	} {
		dpExec(t, n, c[0], c[1:]...)
	}
	if backend == "nftables" {
		dpExec(t, n, "nft", "add table ip6 foreign; add chain ip6 foreign post { type nat hook postrouting priority 100; }; add rule ip6 foreign post ip6 saddr fd00:99::/64 masquerade")
		f.cmds = append(f.cmds, []string{"nft", "list", "table", "ip6", "foreign"})
	} else {
		dpExec(t, n, "ipset", "create", "foreign6", "hash:net", "family", "inet6")
		dpExec(t, n, "ipset", "add", "foreign6", "fd00:99::/64")
		dpExec(t, n, "ip6tables-nft", "-w", "-t", "nat", "-A", "POSTROUTING", "-m", "set", "--match-set", "foreign6", "src", "-j", "MASQUERADE")
		dpExec(t, n, "ip6tables-nft", "-w", "-t", "mangle", "-N", "FOREIGN")
		dpExec(t, n, "ip6tables-nft", "-w", "-t", "mangle", "-A", "FOREIGN", "-s", "fd00:99::/64", "-j", "ACCEPT")
		f.cmds = append(f.cmds, []string{"ip6tables-nft", "-w", "-t", "nat", "-S", "POSTROUTING"}, []string{"ip6tables-nft", "-w", "-t", "mangle", "-S", "FOREIGN"},
			[]string{"ipset", "list", "foreign6"})
	}
	return f
}

// snapshot lists the foreign objects; weft's own jumps (comment weft) and
// ipset reference counts are left out.
func (f *dsForeignObjects) snapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, c := range f.cmds {
		out := dpExec(t, f.n, c[0], c[1:]...)
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "--comment weft") || strings.HasPrefix(l, "References:") || strings.HasPrefix(l, "Size in memory:") {
				continue
			}
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// What must be gone after `weftd cleanup`, per inspection command.
var dsCleanupInspections = []struct {
	args     []string
	leftover *regexp.Regexp
}{
	{[]string{"ip", "-d", "link", "show"}, regexp.MustCompile(`vx-weft`)},
	{[]string{"ip", "-6", "rule", "show"}, regexp.MustCompile(`lookup 240|proto 247`)},
	{[]string{"ip", "rule", "show"}, regexp.MustCompile(`lookup 240|proto 247`)},
	{[]string{"ip", "-6", "route", "show", "table", "all"}, regexp.MustCompile(`proto 247|fd57:`)},
	{[]string{"ip", "-6", "addr", "show"}, regexp.MustCompile(`fd57:`)},
	{[]string{"ip", "-6", "neigh", "show"}, regexp.MustCompile(`fd57:`)},
	{[]string{"nft", "list", "ruleset"}, regexp.MustCompile(`table ip6? weft`)},
	{[]string{"ip6tables-nft-save"}, regexp.MustCompile(`WEFT|weft`)},
	{[]string{"iptables-nft-save"}, regexp.MustCompile(`WEFT|weft`)},
	{[]string{"ipset", "list", "-n"}, regexp.MustCompile(`(?m)^weft-`)},
}

// dsCleanup stops weftd (SIGTERM leaves the data plane), runs `weftd
// cleanup` twice and checks that no IPv6 object of weft's is left, the
// second run changed nothing and the foreign objects are as before.
func dsCleanup(t *testing.T, ctx context.Context, n *harness.Node, w *harness.Weftd, backend string, foreign *dsForeignObjects, want string) {
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	v6Objects := []string{"ip -6 rule show", "ip -6 addr show", "ip -6 neigh show"}
	v6Objects = append(v6Objects, map[string]string{"nftables": "nft list ruleset", "iptables": "ip6tables-nft-save"}[backend])
	for _, cmd := range v6Objects {
		out, _ := n.Exec("sh", "-c", cmd)
		if !strings.Contains(out, "fd57:") && !strings.Contains(out, "lookup 240") && !strings.Contains(out, "ip6 weft") && !strings.Contains(out, "WEFT") {
			t.Errorf("before cleanup, %s shows nothing of weft's (the check would be vacuous):\n%s", cmd, out)
		}
	}
	dump := func() string {
		var b strings.Builder
		for _, in := range dsCleanupInspections {
			out := dpExec(t, n, in.args[0], in.args[1:]...)
			out = counters.ReplaceAllString(peerNetnsNoise.ReplaceAllString(out, ""), "")
			if strings.Contains(in.args[0], "save") {
				out = stripComments(out)
			}
			if m := in.leftover.FindString(out); m != "" {
				t.Errorf("after cleanup %v still shows %q:\n%s", in.args, m, out)
			}
			fmt.Fprintf(&b, "$ %s\n%s\n", strings.Join(in.args, " "), out)
		}
		return b.String()
	}
	if out, err := n.WeftdCleanup(ctx); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	first := dump()
	if out, err := n.WeftdCleanup(ctx); err != nil {
		t.Fatalf("second cleanup: %v\n%s", err, out)
	}
	if second := dump(); second != first {
		t.Errorf("a further cleanup changed the node:\nbefore:\n%s\nafter:\n%s", first, second)
	}
	if got := foreign.snapshot(t); got != want {
		t.Errorf("cleanup changed foreign IPv6 objects:\nbefore:\n%s\nafter:\n%s", want, got)
	}
}

// TestDualStackGatewayMove reloads a dual-stack node's file with another
// gateway and back, per backend, without a restart: as a non-gateway its
// IPv6 routes go via the gateway's IPv6 VTEP on vx-weft (a static IPv6
// neighbour for it), vx-weft-cable and its IPv6 VTEP are gone; as the
// gateway again its IPv6 routes go over the cable. The IPv6 routes keep
// the CNI IPv6 address as src and the IPv6 host SNAT stays throughout.
func TestDualStackGatewayMove(t *testing.T) {
	for _, backend := range dpBackends {
		t.Run(backend, func(t *testing.T) {
			ctx := ctxFor(t, 60*time.Second)
			n, cfg, w := dsStart(t, ctx, dsSpec{backend: backend, gateway: true})
			pid := w.PID
			for _, step := range []struct {
				gateway, role, dev string
				via                netip.Addr
			}{
				{"c1-n1", "gateway", dpVXLAN + "-cable", dsVTEP6(config.DefaultCableVTEPCIDR6, dsRemoteGW)},
				{"c1-n2", "non-gateway", dpVXLAN, dsVTEP6(config.DefaultVTEPCIDR6, netip.MustParseAddr("192.168.10.12"))},
				{"c1-n1", "gateway", dpVXLAN + "-cable", dsVTEP6(config.DefaultCableVTEPCIDR6, dsRemoteGW)},
			} {
				cfg["cluster"].(map[string]any)["gateway"] = step.gateway
				tmp := n.WeftdConfigPath() + ".tmp"
				if err := os.WriteFile(tmp, cfg.MustYAML(), 0o600); err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				if err := os.Rename(tmp, n.WeftdConfigPath()); err != nil {
					t.Fatal(err)
				}
				var why string
				took, ok := dpWaitUntil(5*time.Second, func() bool {
					// Errors read as missing objects: the first look may
					// come before weftd made table 240 or the device.
					route, _ := n.Exec("ip", "-6", "route", "show", "table", "240", dsRemote6.String())
					neigh, _ := n.Exec("ip", "-6", "neigh", "show", "dev", step.dev, step.via.String())
					links, _ := n.Exec("ip", "link", "show")
					snat, rules := dpSNATOfTo(n, backend, true, dsCNI6)
					st, err := w.Status(ctx)
					switch {
					case !strings.Contains(route, fmt.Sprintf("via %s dev %s proto 247 src %s", step.via, step.dev, dsCNI6)):
						why = "route " + route
					case !strings.Contains(neigh, "PERMANENT"):
						why = "neighbour " + neigh
					case strings.Contains(links, "vx-weft-cable") != (step.role == "gateway"):
						why = "links " + links
					case !snat:
						why = fmt.Sprintf("IPv6 host SNAT %q", rules)
					case err != nil || st.Role != step.role || !st.Ready:
						why = fmt.Sprintf("status %+v %v", st, err)
					default:
						return true
					}
					return false
				})
				if !ok {
					t.Fatalf("gateway %s: not converged to %s after %s: %s\n%s", step.gateway, step.role, took, why, w.LogTail(2000))
				}
				t.Logf("gateway %s: %s, IPv6 routes via %s dev %s, %s after the file changed", step.gateway, step.role, step.via, step.dev, time.Since(start).Round(time.Millisecond))
			}
			if !w.Running() || w.PID != pid {
				t.Fatalf("weftd restarted or exited (pid %d → %d)", pid, w.PID)
			}
		})
	}
}
