package harness

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// expectNamespacesGone registers, before the Env exists, a cleanup that
// runs after the Env's own (cleanups are LIFO) and checks that none of its
// namespaces survived.
func expectNamespacesGone(t *testing.T, env **Env) {
	t.Cleanup(func() {
		if *env == nil || t.Skipped() {
			return
		}
		assertNoNamespaces(t, (*env).Namespaces())
	})
}

func assertNoNamespaces(t *testing.T, names []string) {
	t.Helper()
	if len(names) == 0 {
		t.Error("env recorded no namespaces")
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s still listed after cleanup", n)
		}
	}
}

func newEnv(t *testing.T) *Env {
	var env *Env
	expectNamespacesGone(t, &env)
	env = NewTestEnv(t)
	return env
}

// must(f())(t) fails t when f returned an error.
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func TestFlannelClusterCNIToolAndLibcni(t *testing.T) {
	env := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	u := must(NewUnderlay(env))(t)
	c := must(NewCluster(env, u, ClusterSpec{
		ID: "c1", Nodes: 2, PodCIDR: "10.1.0.0/16", ServiceCIDR: "10.101.0.0/16",
		NodeIPBase: "192.168.10.0", CNI: CNIOptions{Layout: LayoutFlannel},
	}))(t)
	if err := c.ConnectHostGW(); err != nil {
		t.Fatal(err)
	}
	n1, n2 := c.Node("c1-n1"), c.Node("c1-n2")
	if n1 == nil || n2 == nil {
		t.Fatalf("nodes: %v", c.Nodes)
	}
	if n1.IP != netip.MustParseAddr("192.168.10.11") || n2.PodCIDR != netip.MustParsePrefix("10.1.2.0/24") {
		t.Fatalf("addressing: n1 %s, n2 pod CIDR %s", n1.IP, n2.PodCIDR)
	}
	// The default-route interface of a node is eth0 (weftd's nodeIP default).
	if out := n1.NS.MustExec(t, "ip", "-4", "route", "show", "default"); !strings.Contains(out, "dev eth0") {
		t.Fatalf("default route of n1: %q", out)
	}

	type podSpec struct {
		node   *Node
		name   string
		libcni bool
	}
	specs := []podSpec{
		{n1, "a", false}, {n1, "b", false}, {n1, "c", true},
		{n2, "a", false}, {n2, "b", false}, {n2, "c", true},
	}
	pods := map[string]*Pod{}
	seen := map[netip.Addr]bool{}
	for _, s := range specs {
		p := must(s.node.NewPod("default", s.node.Name+"-"+s.name))(t)
		var ip netip.Addr
		if s.libcni {
			ip = must(s.node.AttachLibcni(ctx, p))(t)
		} else {
			ip = must(s.node.AttachCNITool(ctx, p))(t)
		}
		if !s.node.PodCIDR.Contains(ip) || seen[ip] || ip != p.IP {
			t.Fatalf("pod %s: IP %s (node CIDR %s, seen before %v)", p.Name, ip, s.node.PodCIDR, seen[ip])
		}
		if p.Gateway != s.node.PodCIDR.Addr().Next() {
			t.Errorf("pod %s: gateway %s, want the cni0 address %s", p.Name, p.Gateway, s.node.PodCIDR.Addr().Next())
		}
		seen[ip] = true
		pods[p.Name] = p
	}
	p1a, p1b, p1c := pods["c1-n1-a"], pods["c1-n1-b"], pods["c1-n1-c"]
	p2a, p2b, p2c := pods["c1-n2-a"], pods["c1-n2-b"], pods["c1-n2-c"]

	// Every node has its own CNI cache, and the real /var/lib/cni holds none
	// of the harness's attachments.
	for _, tc := range []struct {
		node *Node
		want []*Pod
	}{{n1, []*Pod{p1a, p1b, p1c}}, {n2, []*Pod{p2a, p2b, p2c}}} {
		got := must(tc.node.CachedAttachments())(t)
		for _, p := range tc.want {
			if !slices.Contains(got, p.ContainerID) {
				t.Errorf("node %s cache %v lacks %s (%s)", tc.node.Name, got, p.Name, p.ContainerID)
			}
		}
		if len(got) != len(tc.want) {
			t.Errorf("node %s cache: %d attachments, want %d", tc.node.Name, len(got), len(tc.want))
		}
	}
	if ents, err := os.ReadDir("/var/lib/cni/results"); err == nil {
		for _, e := range ents {
			for _, p := range pods {
				if strings.Contains(e.Name(), p.ContainerID) {
					t.Errorf("attachment of %s leaked into /var/lib/cni: %s", p.Name, e.Name())
				}
			}
		}
	}

	// CHECK needs cniVersion >= 0.4.0: libcni refuses it for flannel's 0.3.1.
	if err := n1.CheckCNITool(ctx, p1a); err == nil || !strings.Contains(err.Error(), "does not support the CHECK") {
		t.Errorf("cnitool check on 0.3.1: %v", err)
	}
	if err := n1.StatusCNITool(ctx); err != nil {
		t.Errorf("cnitool status: %v", err)
	}

	srv2a := must(ServeTCPEcho(env, p2a.NS, netip.AddrPortFrom(p2a.IP, 8080).String()))(t)
	srv2c := must(ServeTCPEcho(env, p2c.NS, ":8080"))(t)
	udp2b := must(ServeUDPEcho(env, p2b.NS, ":5353"))(t)
	srvNode2 := must(ServeTCPEcho(env, n2.NS, netip.AddrPortFrom(n2.IP, 9090).String()))(t)

	checkTCP := func(t *testing.T, from *Pod, addr string, want netip.Addr) {
		t.Helper()
		got, err := DialTCP(ctx, from.NS, addr, []byte("hello from "+from.Name))
		if err != nil {
			t.Fatalf("from %s: %v", from.Name, err)
		}
		if got != want {
			t.Errorf("from %s to %s: server saw source %s, want %s", from.Name, addr, got, want)
		}
	}

	t.Run("pod-to-pod across nodes keeps the pod IP", func(t *testing.T) {
		checkTCP(t, p1a, srv2a.Addr.String(), p1a.IP)
		checkTCP(t, p1c, netip.AddrPortFrom(p2c.IP, 8080).String(), p1c.IP)
		checkTCP(t, p2b, srv2a.Addr.String(), p2b.IP) // same node, via cni0
		src, err := UDPRoundTrip(ctx, p1b.NS, netip.Addr{}, netip.AddrPortFrom(p2b.IP, udp2b.Addr.Port()), []byte("ping"))
		if err != nil {
			t.Fatal(err)
		}
		if src.Addr() != p1b.IP {
			t.Errorf("udp: server saw %s, want %s", src, p1b.IP)
		}
		_ = srv2c
	})

	t.Run("bulk transfer and MSS", func(t *testing.T) {
		tr, err := TransferTCP(ctx, p1a.NS, srv2a.Addr.String(), 4<<20)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Bytes != 4<<20 || tr.Src.Addr() != p1a.IP {
			t.Errorf("transfer: %+v", tr)
		}
		// 1500-byte path, no clamping: 1500 - 20 - 20 - 12 (timestamps).
		if tr.ServerMSS < 1400 || tr.ServerMSS > 1460 {
			t.Errorf("server MSS %d on a 1500-byte path", tr.ServerMSS)
		}
	})

	t.Run("lower underlay MTU shows in the MSS", func(t *testing.T) {
		if err := n2.SetUnderlayMTU(1400); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := n2.SetUnderlayMTU(1500); err != nil {
				t.Error(err)
			}
		}()
		// The node's own socket on eth0 advertises the lowered MSS.
		p, err := ProbeTCP(ctx, p1a.NS, srvNode2.Addr.String(), []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		if p.ClientMSS > 1360 {
			t.Errorf("client MSS %d after lowering n2's MTU to 1400", p.ClientMSS)
		}
	})

	t.Run("masquerade rewrites traffic leaving the cluster CIDR only", func(t *testing.T) {
		checkTCP(t, p1a, srvNode2.Addr.String(), p1a.IP) // before: no NAT
		if err := c.EnableMasquerade(); err != nil {
			t.Fatal(err)
		}
		checkTCP(t, p1a, srvNode2.Addr.String(), n1.IP)
		checkTCP(t, p1a, srv2a.Addr.String(), p1a.IP)
	})

	t.Run("detach and GC", func(t *testing.T) {
		if err := n1.DetachCNITool(ctx, p1b); err != nil {
			t.Fatal(err)
		}
		if err := n1.DetachCNITool(ctx, p1b); err != nil {
			t.Errorf("second DEL: %v", err)
		}
		if err := n1.DetachLibcni(ctx, p1c); err != nil {
			t.Fatal(err)
		}
		if out := p1b.NS.MustExec(t, "ip", "-o", "link"); strings.Contains(out, "eth0") {
			t.Errorf("pod eth0 still there after DEL: %s", out)
		}
		if got := must(n1.CachedAttachments())(t); !slices.Equal(got, []string{p1a.ContainerID}) {
			t.Errorf("n1 cache after DELs: %v, want only %s", got, p1a.ContainerID)
		}
		if err := n2.GCLibcni(ctx, p2a); err != nil {
			t.Fatal(err)
		}
		if got := must(n2.CachedAttachments())(t); !slices.Equal(got, []string{p2a.ContainerID}) {
			t.Errorf("n2 cache after GC keeping %s: %v", p2a.ContainerID, got)
		}
		// n1 untouched by n2's GC.
		if got := must(n1.CachedAttachments())(t); len(got) != 1 {
			t.Errorf("n1 cache after n2's GC: %v", got)
		}
		checkTCP(t, p1a, srv2a.Addr.String(), p1a.IP)
	})
}

func TestCalicoLayoutWithStatusAndGC(t *testing.T) {
	env := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	u := must(NewUnderlay(env))(t)
	c := must(NewCluster(env, u, ClusterSpec{
		ID: "c2", Nodes: 2, PodCIDR: "10.2.0.0/16", ServiceCIDR: "10.102.0.0/16",
		NodeIPBase: "192.168.20.0", CNI: CNIOptions{Layout: LayoutCalico, CNIVersion: "1.1.0"},
	}))(t)
	if err := c.ConnectHostGW(); err != nil {
		t.Fatal(err)
	}
	n1, n2 := c.Nodes[0], c.Nodes[1]
	if n1.NetName() != CalicoNetName || !strings.HasSuffix(n1.ConflistPath(), "10-calico.conflist") {
		t.Fatalf("calico conflist: %s %s", n1.NetName(), n1.ConflistPath())
	}

	if _, err := n1.NS.Exec("ip", "link", "show", CalicoDevice); err == nil {
		t.Fatal("vxlan.calico exists before CreateCalicoDevice")
	}
	addr := must(n1.CreateCalicoDevice())(t)
	if addr != netip.MustParseAddr("10.2.1.0") {
		t.Errorf("calico device address %s", addr)
	}
	out := n1.NS.MustExec(t, "ip", "-d", "-o", "addr", "show", "dev", CalicoDevice)
	if !strings.Contains(out, "inet 10.2.1.0/32") {
		t.Errorf("vxlan.calico addresses: %s", out)
	}
	if link := n1.NS.MustExec(t, "ip", "-d", "-o", "link", "show", "dev", CalicoDevice); !strings.Contains(link, "vxlan id 4096") {
		t.Errorf("vxlan.calico is not a vxlan device: %s", link)
	}

	p1 := must(n1.NewPod("web", "p1"))(t)
	p2 := must(n2.NewPod("web", "p2"))(t)
	ip1 := must(n1.AttachCNITool(ctx, p1))(t)
	ip2 := must(n2.AttachLibcni(ctx, p2))(t)
	if err := n1.CheckCNITool(ctx, p1); err != nil {
		t.Errorf("cnitool check: %v", err)
	}
	if err := n2.CheckLibcni(ctx, p2); err != nil {
		t.Errorf("libcni check: %v", err)
	}
	if !n1.PodCIDR.Contains(ip1) || !n2.PodCIDR.Contains(ip2) || ip1 == addr {
		t.Fatalf("pod IPs %s %s", ip1, ip2)
	}
	// ptp: the host side is a point-to-point veth, no bridge.
	if _, err := n1.NS.Exec("ip", "link", "show", "cni0"); err == nil {
		t.Error("calico layout created cni0")
	}
	srv := must(ServeTCPEcho(env, p2.NS, ":7000"))(t)
	src, err := DialTCP(ctx, p1.NS, netip.AddrPortFrom(ip2, srv.Addr.Port()).String(), []byte("calico"))
	if err != nil {
		t.Fatal(err)
	}
	if src != ip1 {
		t.Errorf("server saw %s, want %s", src, ip1)
	}

	if err := n1.StatusCNITool(ctx); err != nil {
		t.Errorf("cnitool status (1.1.0): %v", err)
	}
	if err := n2.StatusLibcni(ctx); err != nil {
		t.Errorf("libcni status (1.1.0): %v", err)
	}
	// cnitool gc keeps nothing: the attachment is DELeted and host-local
	// forgets the address.
	if err := n1.GCCNITool(ctx); err != nil {
		t.Fatalf("cnitool gc: %v", err)
	}
	if got := must(n1.CachedAttachments())(t); len(got) != 0 {
		t.Errorf("n1 cache after gc: %v", got)
	}
	if _, err := os.Stat(n1.IPAMDir + "/" + CalicoNetName + "/" + ip1.String()); !os.IsNotExist(err) {
		t.Errorf("host-local still holds %s after gc: %v", ip1, err)
	}
	if got := must(n2.CachedAttachments())(t); len(got) != 1 {
		t.Errorf("n2 cache after n1's gc: %v", got)
	}

	if err := n1.RemoveCalicoDevice(); err != nil {
		t.Fatal(err)
	}
}

func TestCNIErrorsCarryDetails(t *testing.T) {
	env := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	u := must(NewUnderlay(env))(t)
	n := must(u.AddNode(NodeOptions{
		Name: "x-n1", Cluster: "x", IP: netip.MustParseAddr("192.168.30.11"),
		PodCIDR: netip.MustParsePrefix("10.3.1.0/24"),
		CNI:     CNIOptions{Layout: LayoutFlannel, CNIVersion: "1.0.0"},
	}))(t)
	// A chain ending in a plugin that does not exist fails on both paths.
	if err := n.WriteConflist(CNIOptions{Layout: LayoutFlannel, CNIVersion: "1.0.0", Weft: true,
		WeftOptions: map[string]any{"type": "no-such-plugin"}}); err != nil {
		t.Fatal(err)
	}
	p := must(n.NewPod("default", "broken"))(t)
	_, err := n.AttachCNITool(ctx, p)
	var ce *CNIError
	if !asCNIError(err, &ce) || ce.ExitCode != 1 || !strings.Contains(ce.Stderr, "no-such-plugin") {
		t.Errorf("cnitool error: %#v", err)
	}
	// A fresh pod: the failed ADD left the bridge's eth0 in the first one.
	_, err = n.AttachLibcni(ctx, must(n.NewPod("default", "broken2"))(t))
	if !asCNIError(err, &ce) || ce.ExitCode != -1 || !strings.Contains(err.Error(), "no-such-plugin") {
		t.Errorf("libcni error: %v", err)
	}
}

func asCNIError(err error, target **CNIError) bool {
	ce, ok := err.(*CNIError)
	if ok {
		*target = ce
	}
	return ok
}

// Building without a testing.TB (the demo) and failing half-way: Close
// still removes every namespace and directory.
func TestEnvCloseAfterFailedBuild(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	env, err := NewEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := NewUnderlay(env)
	if err != nil {
		env.Close()
		t.Fatal(err)
	}
	// MTU 10 is refused by the kernel after the node namespace exists.
	_, err = NewCluster(env, u, ClusterSpec{ID: "bad", Nodes: 1, PodCIDR: "10.9.0.0/16",
		ServiceCIDR: "10.109.0.0/16", NodeIPBase: "192.168.90.0", MTU: 10})
	if err == nil {
		t.Error("cluster with MTU 10 was built")
	}
	names := env.Namespaces()
	if len(names) < 2 {
		t.Fatalf("expected underlay and node namespaces, got %v", names)
	}
	if err := env.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	assertNoNamespaces(t, names)
	if _, err := NewUnderlay(env); err == nil {
		t.Error("closed env still builds")
	}
}

// The weft entry the harness writes is accepted by the real plugin: with
// the daemon away, failPolicy open spools the event and ADD succeeds;
// failPolicy closed fails ADD with code 11 (try again later).
func TestWeftChainWithoutDaemon(t *testing.T) {
	env := newEnv(t)
	if !env.HasBin("weft") {
		t.Skipf("%s not built (make build)", env.Bin("weft"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	u := must(NewUnderlay(env))(t)
	n := must(u.AddNode(NodeOptions{
		Name: "w-n1", Cluster: "w", IP: netip.MustParseAddr("192.168.40.11"),
		PodCIDR: netip.MustParsePrefix("10.4.1.0/24"),
		CNI:     CNIOptions{Layout: LayoutFlannel, Weft: true},
	}))(t)

	p := must(n.NewPod("default", "spooled"))(t)
	ip := must(n.AttachCNITool(ctx, p))(t)
	if !n.PodCIDR.Contains(ip) {
		t.Errorf("pod IP %s", ip)
	}
	ents, err := os.ReadDir(n.SpoolDir)
	if err != nil || len(ents) == 0 {
		t.Errorf("spool %s after ADD with the daemon away: %v, %v", n.SpoolDir, ents, err)
	}
	if err := n.DetachCNITool(ctx, p); err != nil {
		t.Errorf("DEL with the daemon away: %v", err)
	}

	if err := n.WriteConflist(CNIOptions{Layout: LayoutFlannel, CNIVersion: "1.0.0", Weft: true,
		WeftOptions: map[string]any{"failPolicy": "closed", "timeout": "300ms"}}); err != nil {
		t.Fatal(err)
	}
	_, err = n.AttachLibcni(ctx, must(n.NewPod("default", "refused"))(t))
	var ce *CNIError
	if !asCNIError(err, &ce) || ce.Code != 11 {
		t.Errorf("ADD with failPolicy closed and no daemon: %v", err)
	}
}

// Two clusters share one flat underlay; their pod networks are not
// connected until something (weft) connects them.
func TestTwoClusters(t *testing.T) {
	env := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tc := must(NewTwoClusters(env, TwoClustersSpec{CNI: CNIOptions{Layout: LayoutFlannel}}))(t)
	c1n1, c2n1 := tc.C1.Node("c1-n1"), tc.C2.Node("c2-n1")
	if c2n1 == nil || c2n1.IP != netip.MustParseAddr("192.168.20.11") || c2n1.PodCIDR != netip.MustParsePrefix("10.2.1.0/24") ||
		tc.C2.ServiceCIDR != netip.MustParsePrefix("10.102.0.0/16") {
		t.Fatalf("c2 addressing: %+v", c2n1)
	}
	srv := must(ServeTCPEcho(env, c2n1.NS, netip.AddrPortFrom(c2n1.IP, 4000).String()))(t)
	if src, err := DialTCP(ctx, c1n1.NS, srv.Addr.String(), []byte("underlay")); err != nil || src != c1n1.IP {
		t.Fatalf("node to node across clusters: %s, %v", src, err)
	}
	p1 := must(c1n1.RunPod(ctx, "default", "p1"))(t)
	p2 := must(c2n1.RunPod(ctx, "default", "p2"))(t)
	psrv := must(ServeTCPEcho(env, p2.NS, ":4001"))(t)
	short, cancelShort := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancelShort()
	if _, err := DialTCP(short, p1.NS, netip.AddrPortFrom(p2.IP, psrv.Addr.Port()).String(), []byte("x")); err == nil {
		t.Error("pod of c1 reached a pod of c2 without weft")
	}
}
