// Package scenario builds weft's two-cluster end-to-end setup on top of the
// integration harness: two clusters whose primary CNI is simulated by
// bridge + host-local (flannel layout, weft chained last) with host-gw
// routes and flannel's ipMasq masquerade, weftd on every node, one pod per
// node attached through the real chain with cnitool, and the gateways
// connected by weft's own VXLAN cable over the shared underlay.
//
// The integration tests and `make demo` both drive it, so what the demo
// shows is exactly what the tests check.
package scenario

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
)

// Role names, as weftd reports them in status.
const (
	RoleGateway    = "gateway"
	RoleNonGateway = "non-gateway"
)

// Options shapes Build.
type Options struct {
	// NodesPerCluster defaults to 3; at least 2 (the gateway is n2).
	NodesPerCluster int
	// Backend is weftd's packetFilter: "nftables", "iptables" or "" (auto).
	Backend string
	// ResyncInterval overrides weftd's resyncInterval; 0 keeps the
	// harness's configuration (30s).
	ResyncInterval time.Duration
	// EchoPort is the TCP echo port in every pod; 0 = 7000.
	EchoPort uint16
	// ProbeTimeout bounds one matrix probe; 0 = 2s. A broken path costs
	// this much, so keep it short.
	ProbeTimeout time.Duration
	// Topology is "" (the file lists nodes, gateway, remotes) or
	// TopologyKubernetes (an API server per cluster; see Kube).
	Topology string
	// HealthCheckIPs writes each remote's remotes[].healthCheckIP (its
	// gateway's cni0 address), so every node probes the whole path.
	HealthCheckIPs bool
	// Family is the clusters' address plan: IPv4 (default), dual stack
	// (weft's VXLAN over the IPv4 underlay) or IPv6 only (over the IPv6
	// underlay). The matrix then probes every family the plan has.
	Family harness.Family
	// HostUnderlayProbes adds matrix rows from each node's host network
	// bound to its underlay address of the family: a source outside the
	// pod CIDRs, which only weft's host SNAT turns into the CNI address.
	HostUnderlayProbes bool
	// GatewayUnderlayMTU, when not 0, is the underlay MTU of c1's first
	// gateway, set before weftd starts; its bridge port drops every frame
	// above it without an ICMP error, as a switch would: a path only MSS
	// clamping makes usable for full-size TCP segments.
	GatewayUnderlayMTU int
}

func (o Options) withDefaults() (Options, error) {
	if o.NodesPerCluster == 0 {
		o.NodesPerCluster = 3
	}
	if o.NodesPerCluster < 2 {
		return o, fmt.Errorf("scenario: %d nodes per cluster: need at least 2 (the gateway is not the first node)", o.NodesPerCluster)
	}
	switch o.Backend {
	case "", "auto", "nftables", "iptables":
	default:
		return o, fmt.Errorf("scenario: unknown packet-filter backend %q", o.Backend)
	}
	if o.EchoPort == 0 {
		o.EchoPort = 7000
	}
	if o.ProbeTimeout == 0 {
		o.ProbeTimeout = 2 * time.Second
	}
	if o.Family != harness.FamilyIPv4 && o.Topology != "" {
		return o, fmt.Errorf("scenario: address family %s: only with the file topology", o.Family)
	}
	return o, nil
}

// Member is one node of the scenario with everything that runs on it.
type Member struct {
	Node    *harness.Node
	Cluster *harness.Cluster
	Weftd   *harness.Weftd
	Pod     *harness.Pod
	// Echo is the pod's IPv4 TCP echo server, Echo6 its IPv6 one (each
	// nil when the plan lacks the family).
	Echo  *harness.EchoServer
	Echo6 *harness.EchoServer
	// FirstADD is when the node's first pod ADD started: weftd was already
	// running, and the bridge plugin creates cni0 during that ADD.
	FirstADD time.Time
}

// PodAddr is the address of the pod's (IPv4) echo server.
func (m *Member) PodAddr() netip.AddrPort { return netip.AddrPortFrom(m.Pod.IP, m.Echo.Addr.Port()) }

// CNIIP is the node's CNI interface address (cni0), which is the pod
// gateway of the bridge layout.
func (m *Member) CNIIP() netip.Addr { return m.Pod.Gateway }

// PodAddrOf is the pod's echo server address of a family (IPv4, IPv6).
func (m *Member) PodAddrOf(family string) netip.AddrPort {
	if family == IPv6 {
		return netip.AddrPortFrom(m.Pod.IP6, m.Echo6.Addr.Port())
	}
	return m.PodAddr()
}

// CNIIPOf is cni0's address of a family: what a remote pod must see as
// the source of the node's host-network traffic of that family.
func (m *Member) CNIIPOf(family string) netip.Addr {
	if family == IPv6 {
		return m.Pod.Gateway6
	}
	return m.CNIIP()
}

// PodIPOf is the pod's address of a family.
func (m *Member) PodIPOf(family string) netip.Addr {
	if family == IPv6 {
		return m.Pod.IP6
	}
	return m.Pod.IP
}

// UnderlayIPOf is the node's underlay address of a family.
func (m *Member) UnderlayIPOf(family string) netip.Addr {
	if family == IPv6 {
		return m.Node.IP6
	}
	return m.Node.IP
}

// BridgeCNIIP is n's cni0 address in the bridge layout (the first
// address of its pod subnet), known before the first pod creates it.
func BridgeCNIIP(n *harness.Node) netip.Addr { return n.PodCIDR.Masked().Addr().Next() }

// Scenario is the built two-cluster setup.
type Scenario struct {
	Env      *harness.Env
	Opts     Options
	Clusters *harness.TwoClusters
	// Members lists c1's nodes, then c2's, in node order.
	Members []*Member
	// WeftdStarted is when the first weftd was started.
	WeftdStarted time.Time

	// Kube is the API servers' side with Topology kubernetes, else nil.
	Kube *Kube

	mu       sync.Mutex
	gateways map[string]*harness.Node // cluster ID -> gateway in force
	configs  map[*harness.Node]harness.WeftdConfig
	extra    []*harness.Cluster // AddCluster's, after c1 and c2
}

// AllClusters returns c1, c2 and the clusters AddCluster added.
func (s *Scenario) AllClusters() []*harness.Cluster {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(s.Clusters.Clusters(), s.extra...)
}

// Build creates the scenario in env. On error, what was built is still
// registered with env and removed by env.Close.
func Build(ctx context.Context, env *harness.Env, opts Options) (*Scenario, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	tc, err := harness.NewTwoClusters(env, harness.TwoClustersSpec{
		NodesPerCluster: opts.NodesPerCluster,
		CNI:             harness.CNIOptions{Layout: harness.LayoutFlannel, Weft: true},
		Family:          opts.Family,
	})
	if err != nil {
		return nil, fmt.Errorf("build clusters: %w", err)
	}
	s := &Scenario{
		Env:      env,
		Opts:     opts,
		Clusters: tc,
		gateways: map[string]*harness.Node{},
		configs:  map[*harness.Node]harness.WeftdConfig{},
	}
	for _, c := range tc.Clusters() {
		// flannel's ipMasq: without weft's own NAT rules every pod would
		// reach the other cluster masqueraded behind its node.
		if err := c.EnableMasquerade(); err != nil {
			return nil, err
		}
		s.gateways[c.ID] = c.Nodes[1]
		for _, n := range c.Nodes {
			s.Members = append(s.Members, &Member{Node: n, Cluster: c})
		}
	}

	if mtu := opts.GatewayUnderlayMTU; mtu != 0 {
		if err := s.gateways[tc.C1.ID].LowerUnderlayMTU(mtu); err != nil {
			return nil, err
		}
	}

	if opts.Topology == TopologyKubernetes || opts.Topology == TopologyWeft {
		if err := s.startKube(ctx); err != nil {
			return nil, fmt.Errorf("start API servers: %w", err)
		}
	}

	// weftd first, as a DaemonSet would be: the pods' ADDs then reach it
	// live, and it discovers cni0 when the first pod creates it.
	s.WeftdStarted = time.Now()
	for _, m := range s.Members {
		cfg := s.config(m)
		s.configs[m.Node] = cfg
		w, err := m.Node.StartWeftd(ctx, cfg.MustYAML())
		if err != nil {
			return nil, fmt.Errorf("start weftd: %w", err)
		}
		m.Weftd = w
	}
	for _, m := range s.Members {
		m.FirstADD = time.Now()
		p, err := m.Node.RunPod(ctx, "default", "pod-"+m.Node.Name)
		if err != nil {
			return nil, fmt.Errorf("attach pod on %s: %w", m.Node.Name, err)
		}
		m.Pod = p
		if opts.Family.HasIPv4() {
			if !p.Gateway.IsValid() {
				return nil, fmt.Errorf("pod on %s: the bridge result has no gateway (cni0 address)", m.Node.Name)
			}
			if m.Echo, err = harness.ServeTCPEcho(env, p.NS, fmt.Sprintf(":%d", opts.EchoPort)); err != nil {
				return nil, err
			}
		}
		if opts.Family.HasIPv6() {
			if !p.Gateway6.IsValid() {
				return nil, fmt.Errorf("pod on %s: the bridge result has no IPv6 gateway (cni0 IPv6 address)", m.Node.Name)
			}
			if m.Echo6, err = harness.ServeTCPEcho(env, p.NS, fmt.Sprintf("[::]:%d", opts.EchoPort)); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// Families lists the families the plan has, IPv4 first: what Matrix
// probes.
func (s *Scenario) Families() []string {
	var fs []string
	if s.Opts.Family.HasIPv4() {
		fs = append(fs, IPv4)
	}
	if s.Opts.Family.HasIPv6() {
		fs = append(fs, IPv6)
	}
	return fs
}

// other returns the cluster that is not c.
func (s *Scenario) other(c *harness.Cluster) *harness.Cluster {
	if c == s.Clusters.C1 {
		return s.Clusters.C2
	}
	return s.Clusters.C1
}

// config renders m's weftd configuration for the gateways in force.
// Caller holds s.mu or runs before anything else can.
func (s *Scenario) config(m *Member) harness.WeftdConfig {
	remote := s.other(m.Cluster)
	cfg := m.Cluster.WeftdConfig(m.Node, s.gateways[m.Cluster.ID], []*harness.Cluster{remote},
		map[string]*harness.Node{remote.ID: s.gateways[remote.ID]})
	if s.Opts.Backend != "" {
		cfg["packetFilter"] = s.Opts.Backend
	}
	if s.Opts.ResyncInterval > 0 {
		cfg["resyncInterval"] = s.Opts.ResyncInterval.String()
	}
	if s.Opts.HealthCheckIPs {
		for _, r := range cfg["remotes"].([]any) {
			rm := r.(map[string]any)
			if gw := s.gateways[rm["id"].(string)]; gw != nil && gw.PodCIDR.IsValid() {
				rm["healthCheckIP"] = BridgeCNIIP(gw).String()
			}
		}
	}
	if s.Kube != nil {
		cfg = s.kubeConfig(m, cfg)
	}
	return cfg
}

// Elected records n as its cluster's gateway (TopologyWeft: the Lease
// holder the test read), for Role and WaitConverged; nothing is written.
func (s *Scenario) Elected(n *harness.Node) {
	s.mu.Lock()
	s.gateways[n.Cluster] = n
	s.mu.Unlock()
}

// Gateway returns the gateway in force of a cluster ("c1", "c2").
func (s *Scenario) Gateway(clusterID string) *harness.Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gateways[clusterID]
}

// Role is the role a node has under the configuration in force.
func (s *Scenario) Role(n *harness.Node) string {
	if s.Gateway(n.Cluster) == n {
		return RoleGateway
	}
	return RoleNonGateway
}

// Member returns the member for a logical node name (c1-n2), or nil.
func (s *Scenario) Member(name string) *Member {
	for _, m := range s.Members {
		if m.Node.Name == name {
			return m
		}
	}
	return nil
}

// WaitAllReady waits until every weftd reports ready and returns the time
// from the first weftd start until then.
func (s *Scenario) WaitAllReady(ctx context.Context) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make([]error, len(s.Members))
	for i, m := range s.Members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = m.Weftd.WaitReady(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return time.Since(s.WeftdStarted), nil
}

// MoveGateway makes newGW the gateway of its cluster: every node of that
// cluster gets the new cluster.gateway and every node of the other cluster
// the new remotes[].gatewayIP. Each file is replaced by an atomic rename,
// as a careful operator or a ConfigMap would; weftd keeps running.
func (s *Scenario) MoveGateway(ctx context.Context, newGW *harness.Node) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.gateways[newGW.Cluster]; !ok {
		return fmt.Errorf("move gateway: node %s is in no cluster of the scenario", newGW.Name)
	}
	s.gateways[newGW.Cluster] = newGW
	if s.Kube != nil {
		c := s.Clusters.C1
		if newGW.Cluster == s.Clusters.C2.ID {
			c = s.Clusters.C2
		}
		return s.moveGatewayKube(ctx, c, newGW)
	}
	for _, m := range s.Members {
		if err := ctx.Err(); err != nil {
			return err
		}
		cfg := s.config(m)
		s.configs[m.Node] = cfg
		if err := replaceFile(m.Node.WeftdConfigPath(), cfg.MustYAML()); err != nil {
			return fmt.Errorf("move gateway to %s: %w", newGW.Name, err)
		}
	}
	return nil
}

// Config returns the weftd configuration last written for n.
func (s *Scenario) Config(n *harness.Node) harness.WeftdConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.configs[n]
}

func replaceFile(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, werr := f.Write(b)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}

// WaitConverged waits until every weftd reports the role the configuration
// in force gives it, and is ready after a reconcile that started no earlier
// than since (so the role change has been applied, not only parsed).
func (s *Scenario) WaitConverged(ctx context.Context, since time.Time) error {
	var wg sync.WaitGroup
	errs := make([]error, len(s.Members))
	for i, m := range s.Members {
		want := s.Role(m.Node)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Weftd.WaitFor(ctx, func(st api.Status) bool {
				return st.Role == want && st.Ready && st.LastReconcile != nil &&
					st.LastReconcile.At.Add(-time.Duration(st.LastReconcile.DurationMs*float64(time.Millisecond))).After(since)
			})
			if err != nil {
				errs[i] = fmt.Errorf("%s (want role %s): %w", m.Node.Name, want, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Statuses returns every weftd's status, in member order.
func (s *Scenario) Statuses(ctx context.Context) ([]api.Status, error) {
	out := make([]api.Status, len(s.Members))
	var errs []error
	for i, m := range s.Members {
		st, err := m.Weftd.Status(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		out[i] = st
	}
	return out, errors.Join(errs...)
}
