package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/kubeapi"
	"github.com/weft-net/weft/integration/scenario"
	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/netnstest"
	"github.com/weft-net/weft/pkg/topology"
)

// TestKubernetesDualStack is topology: kubernetes for IPv6-only and
// dual-stack clusters, with a real kube-apiserver and the real weftd on a
// gateway node: the Nodes' InternalIPs of both families and Submariner
// Endpoints written with the dual-stack fields (privateIPs,
// healthCheckIPs, subnets of both families) become the kernel objects.
//   - IPv6 only: the VXLAN underlay is the Nodes' IPv6 addresses (FDB
//     destinations), the peers' IPv6 VTEPs derived from them are static
//     neighbours, the remote's IPv6 subnets are routed over the cable to
//     its IPv6 private IP with the CNI interface's IPv6 address as source,
//     and a Node re-addressed (IPv6) moves its FDB entry within 1 s;
//   - dual stack: both families' routes over the cable, each with its CNI
//     source, over the IPv4 underlay.
func TestKubernetesDualStack(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, tc := range []struct {
		name    string
		backend string
		v4      bool // the cluster has IPv4 pods (dual stack) besides IPv6
	}{
		{"ipv6-only", "nftables", false},
		{"dual-stack", "iptables", true},
	} {
		t.Run(tc.name, func(t *testing.T) { testKubernetesDualStack(t, tc.backend, tc.v4) })
	}
}

// kdsNode is one Node object: its name and InternalIPs.
type kdsNode struct {
	name    string
	ip, ip6 netip.Addr
}

func testKubernetesDualStack(t *testing.T, backend string, v4 bool) {
	env := kubeTestEnv(t)
	ctx := ctxFor(t, 3*time.Minute)
	a := netip.MustParseAddr
	n, cfg := handoffNode(t, env, harness.CNIOptions{Layout: harness.LayoutFlannel})

	// The API server, with weft's manifests and Submariner's Endpoint kind.
	cp, err := kubeapi.NewControlPlane(ctx, env, n.Underlay, kubeapi.Options{})
	if err != nil {
		t.Fatal(err)
	}
	k, kc := kdsServer(t, ctx, env, cp, "c1")

	// The cluster: this node (the gateway) and two more, as Node objects
	// only (the gateway's FDB and neighbours need no more of them).
	nodes := []kdsNode{
		{name: n.Name, ip6: a("fd00:10::11")},
		{name: "c1-n2", ip6: a("fd00:10::12")},
		{name: "c1-n3", ip6: a("fd00:10::13")},
	}
	podCIDRs, svcCIDRs := []string{"fd00:1::/56"}, []string{"fd00:101::/112"}
	remoteSubnets := []string{"fd00:2::/56", "fd00:102::/112"}
	if v4 {
		nodes[0].ip, nodes[1].ip, nodes[2].ip = n.IP, a("192.168.10.12"), a("192.168.10.13")
		podCIDRs, svcCIDRs = append([]string{"10.1.0.0/16"}, podCIDRs...), append([]string{"10.101.0.0/16"}, svcCIDRs...)
		remoteSubnets = append([]string{"10.2.0.0/16", "10.102.0.0/16"}, remoteSubnets...)
	}
	for _, nd := range nodes {
		if err := k.createNode(ctx, nd); err != nil {
			t.Fatal(err)
		}
	}
	// Submariner's gateway engine's Endpoints: the local one names this
	// node, the remote c2 has IPv6 (and with dual stack IPv4) addresses.
	// (An IPv6 underlay address's low 32 bits make its VTEP: the remote
	// gateway's must differ from every local node's in them.)
	remoteGW6, hc6 := a("fd00:20::21"), a("fd00:2:0:1::1")
	local := kdsEndpoint{cluster: "c1", host: n.Name, subnets: slices2(podCIDRs, svcCIDRs), privateIPs: []string{"fd00:10::11"}}
	remote := kdsEndpoint{cluster: "c2", host: "c2-n1", subnets: remoteSubnets, privateIPs: []string{remoteGW6.String()}, healthCheckIPs: []string{hc6.String()}}
	if v4 {
		local.privateIP, local.privateIPs = n.IP.String(), []string{n.IP.String(), "fd00:10::11"}
		remote.privateIP, remote.privateIPs = "192.168.20.11", []string{remoteGW6.String(), "192.168.20.11"}
		remote.healthCheckIP = "10.2.1.1"
	}
	for _, e := range []kdsEndpoint{local, remote} {
		if err := k.postEndpoint(ctx, e); err != nil {
			t.Fatal(err)
		}
	}

	// The node: its IPv6 underlay address, the primary CNI's cni0 with
	// its IPv6 gateway address, IPv6 forwarding.
	pod, err := n.NewPod("default", "kds-0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.AttachCNITool(ctx, pod); err != nil {
		t.Fatal(err)
	}
	cni6 := a("fd00:1:0:1::1")
	for _, c := range [][]string{
		{"ip", "-6", "addr", "add", "fd00:10::11/64", "dev", "eth0", "nodad"},
		{"ip", "-6", "addr", "add", cni6.String() + "/64", "dev", "cni0", "nodad"},
		{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
	} {
		if out, err := n.Exec(c[0], c[1:]...); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	kubeOnly(cfg, kc, backend, podCIDRs, svcCIDRs)
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	readyCtx, readyCancel := context.WithTimeout(ctx, 60*time.Second)
	defer readyCancel()
	st, err := w.WaitFor(readyCtx, func(s api.Status) bool {
		return s.Ready && s.Topology != nil && s.Topology.Synced && s.Role == "gateway"
	})
	if err != nil {
		t.Fatalf("weftd not ready as the gateway: %v\nstatus %+v\nlog tail:\n%s", err, st, w.LogTail(4000))
	}
	t.Logf("ready: role %s, topology %d nodes, remotes %+v, problems %q", st.Role, st.Topology.Nodes, st.Topology.Remotes, st.Topology.Problems)
	if st.Topology.Nodes != 3 || len(st.Topology.Remotes) != 1 || st.Topology.Remotes[0].GatewayIP6 != remoteGW6.String() || len(st.Topology.Problems) > 0 {
		t.Errorf("topology %+v, want 3 nodes and remote c2 with gateway IPv6 %s, no problem", *st.Topology, remoteGW6)
	}

	vtep6 := netip.MustParsePrefix("fd57:6566:7400::/96")
	cable6 := netip.MustParsePrefix("fd57:6566:7400:1::/96")
	type want struct {
		cmd   []string
		lines []string
	}
	var wants []want
	if !v4 {
		// IPv6 underlay: the VXLAN devices run over the Nodes' IPv6
		// addresses, the VTEPs derive from them.
		wants = []want{
			{[]string{"bridge", "fdb", "show", "dev", "vx-weft"}, []string{"dst fd00:10::12 ", "dst fd00:10::13 "}},
			{[]string{"ip", "-6", "neigh", "show", "dev", "vx-weft"}, []string{
				topology.VTEPIP(vtep6, a("fd00:10::12")).String() + " lladdr", topology.VTEPIP(vtep6, a("fd00:10::13")).String() + " lladdr"}},
			{[]string{"ip", "-d", "link", "show", "dev", "vx-weft-cable"}, []string{"local fd00:10::11 "}},
			{[]string{"bridge", "fdb", "show", "dev", "vx-weft-cable"}, []string{"dst " + remoteGW6.String() + " "}},
			{[]string{"ip", "-6", "route", "show", "table", "240"}, []string{
				"fd00:2::/56 via " + topology.VTEPIP(cable6, remoteGW6).String() + " dev vx-weft-cable proto 247 src " + cni6.String(),
				"fd00:102::/112 via " + topology.VTEPIP(cable6, remoteGW6).String() + " dev vx-weft-cable proto 247 src " + cni6.String()}},
			{[]string{"ip", "-6", "rule", "show"}, []string{"240:\tfrom all lookup 240 proto 247"}},
		}
	} else {
		// Dual stack over the IPv4 underlay: one cable, both families'
		// routes, each with the CNI source of its family.
		gw4 := a("192.168.20.11")
		wants = []want{
			{[]string{"bridge", "fdb", "show", "dev", "vx-weft"}, []string{"dst 192.168.10.12 ", "dst 192.168.10.13 "}},
			{[]string{"ip", "-6", "neigh", "show", "dev", "vx-weft"}, []string{topology.VTEPIP(vtep6, a("192.168.10.12")).String() + " lladdr"}},
			{[]string{"bridge", "fdb", "show", "dev", "vx-weft-cable"}, []string{"dst 192.168.20.11 "}},
			{[]string{"ip", "route", "show", "table", "240"}, []string{
				"10.2.0.0/16 via 241.168.20.11 dev vx-weft-cable proto 247 src 10.1.1.1",
				"10.102.0.0/16 via 241.168.20.11 dev vx-weft-cable proto 247 src 10.1.1.1"}},
			{[]string{"ip", "-6", "route", "show", "table", "240"}, []string{
				"fd00:2::/56 via " + topology.VTEPIP(cable6, gw4).String() + " dev vx-weft-cable proto 247 src " + cni6.String(),
				"fd00:102::/112 via " + topology.VTEPIP(cable6, gw4).String() + " dev vx-weft-cable proto 247 src " + cni6.String()}},
		}
	}
	for _, c := range wants {
		out, err := n.Exec(c.cmd[0], c.cmd[1:]...)
		if err != nil {
			t.Fatalf("%v: %v", c.cmd, err)
		}
		for _, l := range c.lines {
			if !strings.Contains(out, l) {
				t.Errorf("%v: missing %q in\n%s", c.cmd, l, out)
			}
		}
	}
	if t.Failed() {
		t.Logf("log tail:\n%s", w.LogTail(4000))
		return
	}

	// A Node re-addressed: its FDB entry follows within 1 s (the IPv6
	// underlay's destinations are the Nodes' IPv6 addresses); and back.
	if !v4 {
		moved := kdsNode{name: "c1-n2", ip6: a("fd00:10::22")}
		for _, step := range []struct{ to, from kdsNode }{{moved, nodes[1]}, {nodes[1], moved}} {
			start := time.Now()
			if err := k.setNodeIPs(ctx, step.to); err != nil {
				t.Fatal(err)
			}
			if _, err := kdsWaitFDB(ctx, n, "vx-weft", step.to.ip6.String(), true); err != nil {
				t.Fatal(err)
			}
			if _, err := kdsWaitFDB(ctx, n, "vx-weft", step.from.ip6.String(), false); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			t.Logf("Node %s re-addressed %s -> %s: the gateway's FDB followed in %s (budget %s)", step.to.name, step.from.ip6, step.to.ip6, took.Round(time.Millisecond), fdbBudget)
			if took > fdbBudget {
				t.Errorf("FDB followed the re-addressed Node after %s, want within %s", took, fdbBudget)
			}
		}
	}
	human, _, _ := n.WeftdCommand(ctx, "status", "--socket", w.Socket)
	if !strings.Contains(string(human), remoteGW6.String()) {
		t.Errorf("weftd status does not show the remote's IPv6 gateway %s:\n%s", remoteGW6, human)
	}
}

// kdsServer starts cluster id's API server on cp with weft's manifests,
// Submariner's Endpoint kind and its namespace, and returns an admin client
// and a kubeconfig of weft's ServiceAccount.
func kdsServer(t *testing.T, ctx context.Context, env *harness.Env, cp *kubeapi.ControlPlane, id string) (*kdsAPI, string) {
	t.Helper()
	srv, err := cp.StartServer(ctx, kubeapi.ServerOptions{Name: id})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.InstallSubmarinerCRD(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := srv.Kubectl(ctx, "apply", "-f", scenario.ManifestsDir(env)); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	if _, err := srv.Kubectl(ctx, "create", "namespace", scenario.SubmarinerNamespace); err != nil {
		t.Fatal(err)
	}
	tok, err := srv.Token(ctx, "weft-system", "weft")
	if err != nil {
		t.Fatal(err)
	}
	kc, err := srv.Kubeconfig(tok)
	if err != nil {
		t.Fatal(err)
	}
	return newKdsAPI(cp, srv), kc
}

// kubeOnly turns a file configuration into topology: kubernetes with
// IPv6 (or dual-stack) CIDRs: the node, its address, the gateway and the
// remotes come from the API.
func kubeOnly(cfg harness.WeftdConfig, kubeconfig, backend string, podCIDRs, svcCIDRs []string) {
	cl := cfg["cluster"].(map[string]any)
	delete(cl, "nodes")
	delete(cl, "gateway")
	delete(cfg, "remotes")
	delete(cfg, "nodeIP")
	cl["podCIDRs"], cl["serviceCIDRs"] = podCIDRs, svcCIDRs
	cfg["topology"] = "kubernetes"
	cfg["kubernetes"] = map[string]any{"kubeconfig": kubeconfig}
	cfg["packetFilter"] = backend
}

func (k *kdsAPI) postEndpoint(ctx context.Context, e kdsEndpoint) error {
	return k.post(ctx, "/apis/submariner.io/v1/namespaces/"+scenario.SubmarinerNamespace+"/endpoints", "application/json", e.json())
}

func slices2(a, b []string) []string { return append(append([]string(nil), a...), b...) }

// kdsEndpoint is a Submariner Endpoint as a dual-stack gateway engine
// (Submariner 0.20+) writes it.
type kdsEndpoint struct {
	cluster, host              string
	subnets                    []string
	privateIP, healthCheckIP   string // the deprecated IPv4 fallbacks
	privateIPs, healthCheckIPs []string
}

func (e kdsEndpoint) json() string {
	q := func(ss []string) string {
		if len(ss) == 0 {
			return "[]"
		}
		return `["` + strings.Join(ss, `","`) + `"]`
	}
	name := e.cluster + "-submariner-cable-" + e.cluster + "-" + strings.NewReplacer(".", "-", ":", "-").Replace(e.privateIPs[0])
	return fmt.Sprintf(`{"apiVersion":"submariner.io/v1","kind":"Endpoint","metadata":{"name":%q,"labels":{"submariner-io/clusterID":%q}},
"spec":{"cluster_id":%q,"cable_name":"submariner-cable-%s","hostname":%q,"subnets":%s,"private_ip":%q,"privateIPs":%s,"public_ip":"","nat_enabled":false,
"backend":"vxlan","backend_config":{"udp-port":"4500"},"healthCheckIP":%q,"healthCheckIPs":%s}}`,
		name, e.cluster, e.cluster, e.cluster, e.host, q(e.subnets), e.privateIP, q(e.privateIPs), e.healthCheckIP, q(e.healthCheckIPs))
}

// kdsAPI sends admin requests to the API server over HTTP (no kubectl
// process per call, so that a timed reaction counts little but the API).
type kdsAPI struct {
	srv *kubeapi.Server
	c   *http.Client
}

func newKdsAPI(cp *kubeapi.ControlPlane, srv *kubeapi.Server) *kdsAPI {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(srv.CA)
	return &kdsAPI{srv: srv, c: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: cp.DialContext, TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}}
}

func (k *kdsAPI) do(ctx context.Context, method, path, contentType, body string) error {
	req, err := http.NewRequestWithContext(ctx, method, k.srv.URL+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+k.srv.AdminToken)
	req.Header.Set("Content-Type", contentType)
	resp, err := k.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

func (k *kdsAPI) post(ctx context.Context, path, contentType, body string) error {
	return k.do(ctx, http.MethodPost, path, contentType, body)
}

// addresses is a Node's status.addresses as a kubelet writes them on a
// dual-stack or IPv6-only node: InternalIPs, primary family first.
func (nd kdsNode) addresses() string {
	var as []string
	for _, ip := range []netip.Addr{nd.ip, nd.ip6} {
		if ip.IsValid() {
			as = append(as, fmt.Sprintf(`{"type":"InternalIP","address":%q}`, ip))
		}
	}
	as = append(as, fmt.Sprintf(`{"type":"Hostname","address":%q}`, nd.name))
	return "[" + strings.Join(as, ",") + "]"
}

func (k *kdsAPI) createNode(ctx context.Context, nd kdsNode) error {
	doc := fmt.Sprintf(`{"apiVersion":"v1","kind":"Node","metadata":{"name":%q,"labels":{"kubernetes.io/hostname":%q}},"status":{"addresses":%s}}`, nd.name, nd.name, nd.addresses())
	if err := k.post(ctx, "/api/v1/nodes", "application/json", doc); err != nil {
		return fmt.Errorf("create Node %s: %w", nd.name, err)
	}
	return nil
}

func (k *kdsAPI) setNodeIPs(ctx context.Context, nd kdsNode) error {
	patch := fmt.Sprintf(`{"status":{"addresses":%s}}`, nd.addresses())
	if err := k.do(ctx, http.MethodPatch, "/api/v1/nodes/"+nd.name+"/status", "application/merge-patch+json", patch); err != nil {
		return fmt.Errorf("re-address Node %s: %w", nd.name, err)
	}
	return nil
}

// kdsWaitFDB polls dev's FDB every 10 ms until an entry towards ip is
// present (want) or absent, for up to 5 s.
func kdsWaitFDB(ctx context.Context, n *harness.Node, dev, ip string, want bool) (time.Duration, error) {
	start := time.Now()
	for {
		out, err := n.Exec("bridge", "fdb", "show", "dev", dev)
		if err == nil && strings.Contains(out, "dst "+ip+" ") == want {
			return time.Since(start), nil
		}
		if time.Since(start) > 5*time.Second || ctx.Err() != nil {
			return time.Since(start), fmt.Errorf("%s FDB entry for %s present=%v after 5 s:\n%s", dev, ip, !want, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKubernetesIPv6PodProbe is an IPv6-only pair of clusters with
// topology: kubernetes and nothing else: each cluster one gateway node
// with its own API server, the Nodes' IPv6 InternalIPs the VXLAN underlay,
// the gateways and remotes from Submariner Endpoints with IPv6 addresses
// only. A pod of each cluster reaches the other's over IPv6 with its own
// address kept, and host-network traffic of a node is seen as its CNI
// interface's IPv6 address.
func TestKubernetesIPv6PodProbe(t *testing.T) {
	netnstest.RequireRoot(t)
	env := kubeTestEnv(t)
	ctx := ctxFor(t, 3*time.Minute)
	a := netip.MustParseAddr
	u, err := harness.NewUnderlay(env)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := kubeapi.NewControlPlane(ctx, env, u, kubeapi.Options{})
	if err != nil {
		t.Fatal(err)
	}
	type side struct {
		id        string
		c         *harness.Cluster
		n         *harness.Node
		pod       *harness.Pod
		k         *kdsAPI
		kc        string
		ul6, cni6 netip.Addr
		pod6      netip.Addr
		cidr      string
		w         *harness.Weftd
	}
	sides := []*side{
		{id: "c1", ul6: a("fd00:99::11"), cni6: a("fd00:1:0:1::1"), pod6: a("fd00:1:0:1::10"), cidr: "fd00:1::/56"},
		{id: "c2", ul6: a("fd00:99::21"), cni6: a("fd00:2:0:1::1"), pod6: a("fd00:2:0:1::10"), cidr: "fd00:2::/56"},
	}
	for i, s := range sides {
		s.c, err = harness.NewCluster(env, u, harness.ClusterSpec{
			ID: s.id, Nodes: 1, PodCIDR: fmt.Sprintf("10.%d.0.0/16", i+1), ServiceCIDR: fmt.Sprintf("10.10%d.0.0/16", i+1),
			NodeIPBase: fmt.Sprintf("192.168.%d0.0", i+1), CNI: harness.CNIOptions{Layout: harness.LayoutFlannel, Weft: true},
		})
		if err != nil {
			t.Fatal(err)
		}
		s.n = s.c.Nodes[0]
		s.k, s.kc = kdsServer(t, ctx, env, cp, s.id)
		if err := s.k.createNode(ctx, kdsNode{name: s.n.Name, ip6: s.ul6}); err != nil {
			t.Fatal(err)
		}
		// The primary CNI's IPv6 half, as a dual-stack bridge plugin would
		// make it (the harness's host-local hands out IPv4 only).
		if s.pod, err = s.n.NewPod("default", "v6-"+s.id); err != nil {
			t.Fatal(err)
		}
		if _, err := s.n.AttachCNITool(ctx, s.pod); err != nil {
			t.Fatal(err)
		}
		for _, c := range [][]string{
			{"ip", "-6", "addr", "add", s.ul6.String() + "/64", "dev", "eth0", "nodad"},
			{"ip", "-6", "addr", "add", s.cni6.String() + "/64", "dev", "cni0", "nodad"},
			{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
		} {
			if out, err := s.n.Exec(c[0], c[1:]...); err != nil {
				t.Fatalf("%s: %v: %v %s", s.n.Name, c, err, out)
			}
		}
		for _, c := range [][]string{
			{"ip", "-6", "addr", "add", s.pod6.String() + "/64", "dev", s.pod.IfName, "nodad"},
			{"ip", "-6", "route", "add", "default", "via", s.cni6.String()},
		} {
			if out, err := s.pod.Exec(c[0], c[1:]...); err != nil {
				t.Fatalf("pod on %s: %v: %v %s", s.n.Name, c, err, out)
			}
		}
	}
	// Every gateway's Endpoint in both API servers, IPv6 only, as the
	// broker sync of Submariner copies them.
	for _, s := range sides {
		e := kdsEndpoint{cluster: s.id, host: s.n.Name, subnets: []string{s.cidr}, privateIPs: []string{s.ul6.String()}, healthCheckIPs: []string{s.cni6.String()}}
		for _, o := range sides {
			if err := o.k.postEndpoint(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, s := range sides {
		cfg := s.c.WeftdConfig(s.n, s.n, nil, nil)
		kubeOnly(cfg, s.kc, "nftables", []string{s.cidr}, nil)
		if s.w, err = s.n.StartWeftd(ctx, cfg.MustYAML()); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range sides {
		readyCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
		st, err := s.w.WaitFor(readyCtx, func(st api.Status) bool {
			return st.Ready && st.Topology != nil && st.Topology.Synced && len(st.Topology.Remotes) == 1
		})
		cancel()
		if err != nil {
			t.Fatalf("%s: not ready: %v\n%+v\nlog tail:\n%s", s.n.Name, err, st, s.w.LogTail(3000))
		}
	}
	for _, p := range []struct {
		from, to *side
		host     bool
	}{{sides[0], sides[1], false}, {sides[1], sides[0], false}, {sides[0], sides[1], true}, {sides[1], sides[0], true}} {
		src, want, what := p.from.pod.NS, p.from.pod6, "pod"
		if p.host {
			src, want, what = p.from.n.NS, p.from.cni6, "host network"
		}
		var seen netip.Addr
		var err error
		// The first packets may meet a route still being written on the
		// far side: a few tries.
		for try := 0; try < 10; try++ {
			if seen, err = dsProbe(src, p.to.pod.NS, p.to.pod6); err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("%s %s -> pod %s [%s]: %v", p.from.id, what, p.to.id, p.to.pod6, err)
			continue
		}
		t.Logf("%s %s -> pod %s [%s]: the remote pod saw %s", p.from.id, what, p.to.id, p.to.pod6, seen)
		if seen != want {
			t.Errorf("%s %s -> pod %s: source seen %s, want %s", p.from.id, what, p.to.id, seen, want)
		}
	}
	if t.Failed() {
		for _, s := range sides {
			for _, c := range [][]string{{"ip", "-6", "route", "show", "table", "240"}, {"bridge", "fdb", "show", "dev", "vx-weft-cable"}, {"nft", "list", "table", "ip6", "weft"}} {
				out, _ := s.n.Exec(c[0], c[1:]...)
				t.Logf("%s %v:\n%s", s.n.Name, c, out)
			}
		}
	}
}
