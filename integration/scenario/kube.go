package scenario

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/kubeapi"
)

// TopologyKubernetes makes Build run one real API server per cluster and
// give weftd its nodes from Node objects and its gateway and remotes from
// Submariner Endpoint objects (topology: kubernetes).
const TopologyKubernetes = "kubernetes"

// TopologyWeft is TopologyKubernetes with kubernetes.endpoints: weft: no
// Endpoint is written; the candidates (every cluster's n2 and n3) carry
// the gateway label, elect a gateway on the Lease and find each other
// through a third API server, the broker.
const TopologyWeft = "weft"

// GatewayLabel is the candidates' label (weft's default key).
const GatewayLabel = "weft.dev/gateway"

// WeftLease is the election timing of the TopologyWeft scenario: the
// issue's duration 3s. A candidate notices an expiry only on its next try
// (client-go jitters retryPeriod by up to 1.2x) and dates the last renew
// from when it saw it, so the takeover comes up to ~2.2 retryPeriods after
// the expiry: with 500ms that was 3.0-4.3 s after the gateway died and
// the probe gap went over duration + 2 s in one of five runs; 250ms keeps
// it within.
var WeftLease = map[string]any{"duration": "3s", "renewDeadline": "2s", "retryPeriod": "250ms"}

// SubmarinerNamespace is where the Endpoints live (weft's default).
const SubmarinerNamespace = "submariner-operator"

const endpointsPath = "/apis/submariner.io/v1/namespaces/" + SubmarinerNamespace + "/endpoints"

// Kube is the API side of a topology: kubernetes scenario.
type Kube struct {
	ControlPlane *kubeapi.ControlPlane
	// Servers and Kubeconfigs by cluster ID; a kubeconfig authenticates as
	// the manifests' ServiceAccount weft-system/weft, with the manifests'
	// RBAC and nothing else.
	Servers     map[string]*kubeapi.Server
	Kubeconfigs map[string]string
	// endpoint is the name of each cluster's current gateway Endpoint.
	endpoint map[string]string
	// Broker and BrokerKubeconfig (as weft-broker/weft-member) with
	// TopologyWeft.
	Broker           *kubeapi.Server
	BrokerKubeconfig string
	weft             bool
	once             sync.Once
	client           *http.Client // admin requests, see call
}

// Server returns the API server of a cluster.
func (k *Kube) Server(clusterID string) *kubeapi.Server { return k.Servers[clusterID] }

// startKube starts the API servers, installs Submariner's Endpoint CRD
// (test-only) and weft's manifests (kubectl apply -f daemon/deploy/), and
// writes the cluster's Node objects and both gateways' Endpoints in both
// API servers, as the kubelets and Submariner's gateway engine (through
// its broker) would.
func (s *Scenario) startKube(ctx context.Context) error {
	cp, err := kubeapi.NewControlPlane(ctx, s.Env, s.Clusters.Underlay, kubeapi.Options{})
	if err != nil {
		return err
	}
	k := &Kube{ControlPlane: cp, Servers: map[string]*kubeapi.Server{}, Kubeconfigs: map[string]string{}, endpoint: map[string]string{}, weft: s.Opts.Topology == TopologyWeft}
	manifests := ManifestsDir(s.Env)
	if k.weft {
		if err := k.startBroker(ctx, manifests); err != nil {
			return err
		}
	}
	for _, c := range s.Clusters.Clusters() {
		srv, err := cp.StartServer(ctx, kubeapi.ServerOptions{Name: c.ID})
		if err != nil {
			return err
		}
		k.Servers[c.ID] = srv
		if !k.weft {
			if err := srv.InstallSubmarinerCRD(ctx); err != nil {
				return err
			}
		}
		if _, err := srv.Kubectl(ctx, "apply", "-f", manifests); err != nil {
			return fmt.Errorf("kubectl apply -f %s: %w", manifests, err)
		}
		if !k.weft {
			if _, err := srv.Kubectl(ctx, "create", "namespace", SubmarinerNamespace); err != nil {
				return err
			}
		}
		tok, err := srv.Token(ctx, "weft-system", "weft")
		if err != nil {
			return err
		}
		if k.Kubeconfigs[c.ID], err = srv.Kubeconfig(tok); err != nil {
			return err
		}
		for i, n := range c.Nodes {
			if err := k.CreateNode(ctx, n); err != nil {
				return err
			}
			if k.weft && i >= 1 {
				if err := k.SetCandidate(ctx, n, true); err != nil {
					return err
				}
			}
		}
	}
	s.Kube = k
	if k.weft {
		return nil
	}
	for _, c := range s.Clusters.Clusters() {
		if err := s.publishGateway(ctx, c, s.gateways[c.ID]); err != nil {
			return err
		}
	}
	return nil
}

// startBroker starts the broker's API server with the ClusterEndpoint CRD
// and daemon/deploy/broker/, and writes the members' kubeconfig.
func (k *Kube) startBroker(ctx context.Context, manifests string) error {
	srv, err := k.ControlPlane.StartServer(ctx, kubeapi.ServerOptions{Name: "broker"})
	if err != nil {
		return err
	}
	k.Broker = srv
	if _, err := srv.Kubectl(ctx, "apply", "-f", filepath.Join(manifests, "05-clusterendpoint-crd.yaml"), "-f", filepath.Join(manifests, "broker")); err != nil {
		return fmt.Errorf("broker: kubectl apply: %w", err)
	}
	tok, err := srv.Token(ctx, "weft-broker", "weft-member")
	if err != nil {
		return err
	}
	k.BrokerKubeconfig, err = srv.Kubeconfig(tok)
	return err
}

// SetCandidate sets or removes n's gateway label.
func (k *Kube) SetCandidate(ctx context.Context, n *harness.Node, on bool) error {
	v := "null"
	if on {
		v = `"true"`
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, GatewayLabel, v)
	if err := k.call(ctx, n.Cluster, http.MethodPatch, "/api/v1/nodes/"+n.Name, "application/merge-patch+json", patch); err != nil {
		return fmt.Errorf("label Node %s: %w", n.Name, err)
	}
	return nil
}

// LeaseHolder reads cluster's Lease weft-gateway: holder and transitions.
func (k *Kube) LeaseHolder(ctx context.Context, cluster string) (holder string, transitions int, err error) {
	var l struct {
		Spec struct {
			HolderIdentity   string `json:"holderIdentity"`
			LeaseTransitions int    `json:"leaseTransitions"`
		} `json:"spec"`
	}
	b, err := k.get(ctx, cluster, "/apis/coordination.k8s.io/v1/namespaces/weft-system/leases/weft-gateway")
	if err != nil {
		return "", 0, err
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return "", 0, err
	}
	return l.Spec.HolderIdentity, l.Spec.LeaseTransitions, nil
}

// ClusterEndpoint reads the ClusterEndpoint id in cluster's weft-system
// as raw JSON.
func (k *Kube) ClusterEndpoint(ctx context.Context, cluster, id string) ([]byte, error) {
	return k.get(ctx, cluster, "/apis/weft.dev/v1alpha1/namespaces/weft-system/clusterendpoints/"+id)
}

// ManifestsDir is daemon/deploy/ of the repository env runs from: what
// `kubectl apply -f daemon/deploy/` installs.
func ManifestsDir(env *harness.Env) string {
	return filepath.Join(filepath.Dir(env.BinDir), "daemon", "deploy")
}

// CreateNode writes n's Node object, as its kubelet registers it: name,
// labels, and the InternalIP and Hostname addresses in status. It talks
// HTTP to the API server directly (no kubectl process to start), so that
// a test timing the data plane's reaction counts little besides the API.
func (k *Kube) CreateNode(ctx context.Context, n *harness.Node) error {
	doc := fmt.Sprintf(`{"apiVersion":"v1","kind":"Node","metadata":{"name":%q,"labels":{"kubernetes.io/hostname":%q,"kubernetes.io/os":"linux"}},
"spec":{"podCIDR":%q,"podCIDRs":[%q]},
"status":{"addresses":[{"type":"InternalIP","address":%q},{"type":"Hostname","address":%q}],
"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"kubelet is posting ready status"}],
"nodeInfo":{"kubeletVersion":"v1.37.2","containerRuntimeVersion":"containerd://2.1.0","osImage":"weft test node","kernelVersion":"6.12","operatingSystem":"linux","architecture":"amd64","machineID":"","systemUUID":"","bootID":"","kubeProxyVersion":""}}}`,
		n.Name, n.Name, n.PodCIDR, n.PodCIDR, n.IP, n.Name)
	if err := k.call(ctx, n.Cluster, http.MethodPost, "/api/v1/nodes", "application/json", doc); err != nil {
		return fmt.Errorf("create Node %s: %w", n.Name, err)
	}
	return nil
}

// SetNodeIP re-addresses n's Node object (its status InternalIP), as the
// kubelet does when the node's address changes.
func (k *Kube) SetNodeIP(ctx context.Context, n *harness.Node, ip netip.Addr) error {
	patch := fmt.Sprintf(`{"status":{"addresses":[{"type":"InternalIP","address":%q},{"type":"Hostname","address":%q}]}}`, ip, n.Name)
	if err := k.call(ctx, n.Cluster, http.MethodPatch, "/api/v1/nodes/"+n.Name+"/status", "application/merge-patch+json", patch); err != nil {
		return fmt.Errorf("re-address Node %s: %w", n.Name, err)
	}
	return nil
}

// DeleteNode deletes n's Node object.
func (k *Kube) DeleteNode(ctx context.Context, n *harness.Node) error {
	if err := k.call(ctx, n.Cluster, http.MethodDelete, "/api/v1/nodes/"+n.Name, "", ""); err != nil {
		return fmt.Errorf("delete Node %s: %w", n.Name, err)
	}
	return nil
}

// call sends one request as admin to cluster's API server from inside the
// control-plane namespace and fails unless it answers 2xx.
func (k *Kube) call(ctx context.Context, cluster, method, path, contentType, body string) error {
	_, err := k.do(ctx, cluster, method, path, contentType, body)
	return err
}

func (k *Kube) get(ctx context.Context, cluster, path string) ([]byte, error) {
	return k.do(ctx, cluster, http.MethodGet, path, "", "")
}

func (k *Kube) do(ctx context.Context, cluster, method, path, contentType, body string) ([]byte, error) {
	srv := k.Servers[cluster]
	if cluster == "broker" {
		srv = k.Broker
	}
	k.once.Do(func() {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(srv.CA) // one control plane, one CA
		k.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext:     k.ControlPlane.DialContext,
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}}
	})
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+srv.AdminToken)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// endpointName is how Submariner's gateway engine names an Endpoint:
// <cluster>-submariner-cable-<cluster>-<private IP, dashed>.
func endpointName(c *harness.Cluster, gw *harness.Node) string {
	return fmt.Sprintf("%s-submariner-cable-%s-%s", c.ID, c.ID, strings.ReplaceAll(gw.IP.String(), ".", "-"))
}

// EndpointYAML is gw's Endpoint as Submariner's gateway engine writes it
// (in SubmarinerNamespace; kubecluster writes the same).
func EndpointYAML(c *harness.Cluster, gw *harness.Node) []byte {
	return fmt.Appendf(nil, `apiVersion: submariner.io/v1
kind: Endpoint
metadata:
  name: %[1]s
  namespace: %[2]s
  labels: {submariner-io/clusterID: %[3]s}
spec:
  cluster_id: %[3]s
  cable_name: submariner-cable-%[3]s-%[4]s
  hostname: %[5]s
  subnets: [%[6]s, %[7]s]
  private_ip: %[8]s
  public_ip: ""
  nat_enabled: false
  backend: vxlan
  backend_config: {natt-discovery-port: "4490", udp-port: "4500", preferred-server: "false"}
  healthCheckIP: %[9]s
`, endpointName(c, gw), SubmarinerNamespace, c.ID, strings.ReplaceAll(gw.IP.String(), ".", "-"), gw.Name,
		c.PodCIDR, c.ServiceCIDR, gw.IP, gw.PodCIDR.Addr().Next())
}

// publishGateway creates gw's Endpoint in every cluster's API server (its
// own, and the others' as the broker sync copies it).
func (s *Scenario) publishGateway(ctx context.Context, c *harness.Cluster, gw *harness.Node) error {
	for id := range s.Kube.Servers {
		if err := s.Kube.call(ctx, id, http.MethodPost, endpointsPath, "application/yaml", string(EndpointYAML(c, gw))); err != nil {
			return fmt.Errorf("create Endpoint of %s in %s: %w", gw.Name, id, err)
		}
	}
	s.Kube.endpoint[c.ID] = endpointName(c, gw)
	return nil
}

// moveGatewayKube does what Submariner does when its gateway fails over:
// the old gateway's Endpoint is deleted and the new one's created, in
// both clusters' API servers. No file is edited.
func (s *Scenario) moveGatewayKube(ctx context.Context, c *harness.Cluster, newGW *harness.Node) error {
	old := s.Kube.endpoint[c.ID]
	for id := range s.Kube.Servers {
		if err := s.Kube.call(ctx, id, http.MethodDelete, endpointsPath+"/"+old, "", ""); err != nil {
			return fmt.Errorf("delete Endpoint %s in %s: %w", old, id, err)
		}
	}
	return s.publishGateway(ctx, c, newGW)
}

// kubeConfig turns a file-topology weftd configuration into the
// topology: kubernetes one: the cluster's constants stay, the nodes, the
// gateway and the remotes come from the API.
func (s *Scenario) kubeConfig(m *Member, cfg harness.WeftdConfig) harness.WeftdConfig {
	cl := cfg["cluster"].(map[string]any)
	delete(cl, "nodes")
	delete(cl, "gateway")
	delete(cfg, "remotes")
	cfg["topology"] = TopologyKubernetes
	cfg["kubernetes"] = map[string]any{"kubeconfig": s.Kube.Kubeconfigs[m.Cluster.ID]}
	if s.Kube.weft {
		cfg["kubernetes"] = map[string]any{"kubeconfig": s.Kube.Kubeconfigs[m.Cluster.ID], "endpoints": "weft", "lease": WeftLease}
		cfg["broker"] = map[string]any{"kubeconfig": s.Kube.BrokerKubeconfig}
	}
	return cfg
}

// JoinNode adds a node to cluster c the way an autoscaler does: a new node
// (namespace, CNI, weftd with the same ConfigMap as every node); no other
// node's file is touched. The caller then creates its Node object
// (Kube.CreateNode) and starts its pod (StartPod).
func (s *Scenario) JoinNode(ctx context.Context, c *harness.Cluster) (*Member, error) {
	i := len(c.Nodes) + 1
	ip := c.Nodes[0].IP.As4()
	ip[3] = byte(10 + i)
	pod := c.PodCIDR.Addr().As4()
	pod[2] = byte(i)
	n, err := c.Underlay.AddNode(harness.NodeOptions{
		Name: fmt.Sprintf("%s-n%d", c.ID, i), Cluster: c.ID, IP: netipFrom4(ip), PodCIDR: prefixFrom4(pod, 24),
		CNI: harness.CNIOptions{Layout: harness.LayoutFlannel, Weft: true},
	})
	if err != nil {
		return nil, err
	}
	// flannel host-gw: the other nodes learn the new node's subnet from
	// flannel's own watch, not from weft.
	c.Nodes = append(c.Nodes, n)
	if err := c.ConnectHostGW(); err != nil {
		return nil, err
	}
	if err := n.EnableMasquerade(c.PodCIDR); err != nil {
		return nil, err
	}
	m := &Member{Node: n, Cluster: c}
	s.mu.Lock()
	cfg := s.config(m)
	s.configs[n] = cfg
	s.Members = append(s.Members, m)
	s.mu.Unlock()
	if m.Weftd, err = n.StartWeftd(ctx, cfg.MustYAML()); err != nil {
		return nil, err
	}
	return m, nil
}

// StartPod attaches m's pod through the CNI chain and serves the echo.
func (s *Scenario) StartPod(ctx context.Context, m *Member) error {
	var err error
	m.FirstADD = time.Now()
	if m.Pod, err = m.Node.RunPod(ctx, "default", "pod-"+m.Node.Name); err != nil {
		return err
	}
	if m.Echo, err = harness.ServeTCPEcho(s.Env, m.Pod.NS, fmt.Sprintf(":%d", s.Opts.EchoPort)); err != nil {
		return err
	}
	return nil
}

func netipFrom4(b [4]byte) netip.Addr              { return netip.AddrFrom4(b) }
func prefixFrom4(b [4]byte, bits int) netip.Prefix { return netip.PrefixFrom(netip.AddrFrom4(b), bits) }

// RemoveMember stops m's weftd (unless it has exited) and drops it from the scenario (its
// namespace stays until env.Close): the matrix no longer probes it.
func (s *Scenario) RemoveMember(m *Member) error {
	if m.Weftd.Running() { // a weftd killed by the test has exited already
		if err := m.Weftd.Stop(); err != nil {
			return fmt.Errorf("stop weftd on %s: %w", m.Node.Name, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Members = slices.DeleteFunc(s.Members, func(x *Member) bool { return x == m })
	m.Cluster.Nodes = slices.DeleteFunc(m.Cluster.Nodes, func(x *harness.Node) bool { return x == m.Node })
	return nil
}

// FDBHas reports whether n's vx-weft FDB has an entry towards underlay ip.
func FDBHas(n *harness.Node, ip string) (bool, string) {
	out, err := n.Exec("bridge", "fdb", "show", "dev", "vx-weft")
	if err != nil {
		return false, err.Error()
	}
	return strings.Contains(out, "dst "+ip+" "), out
}

// WaitFDB polls the gateway's FDB every 10 ms until the entry for ip is
// present (want) or absent, and returns how long that took.
func WaitFDB(ctx context.Context, gw *harness.Node, ip string, want bool, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		has, out := FDBHas(gw, ip)
		if has == want {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("gateway %s: FDB entry for %s present=%v after %s, want %v:\n%s", gw.Name, ip, has, limit, want, out)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// AddCluster builds one more cluster on the scenario's underlay, the way
// a cluster joins weft's own control plane (TopologyWeft only): its nodes
// (host-gw, masquerade), its own API server with weft's manifests and its
// Node objects (every node but the first a candidate), weftd on every node
// with only the cluster's constants and the two kubeconfigs, and a pod per
// node. The members are returned, not yet in s.Members (the matrix does not
// probe them) until Adopt; the cluster's first candidate is recorded as its
// gateway until the test reads the Lease (Elected).
func (s *Scenario) AddCluster(ctx context.Context, spec harness.ClusterSpec) (*harness.Cluster, []*Member, error) {
	if s.Kube == nil || !s.Kube.weft {
		return nil, nil, fmt.Errorf("add cluster %s: only with topology %q", spec.ID, TopologyWeft)
	}
	if spec.Nodes < 2 {
		return nil, nil, fmt.Errorf("add cluster %s: %d nodes: need a candidate besides the first node", spec.ID, spec.Nodes)
	}
	spec.CNI = harness.CNIOptions{Layout: harness.LayoutFlannel, Weft: true}
	c, err := harness.NewCluster(s.Env, s.Clusters.Underlay, spec)
	if err != nil {
		return nil, nil, err
	}
	if err := c.ConnectHostGW(); err != nil {
		return nil, nil, err
	}
	if err := c.EnableMasquerade(); err != nil {
		return nil, nil, err
	}
	k := s.Kube
	srv, err := k.ControlPlane.StartServer(ctx, kubeapi.ServerOptions{Name: c.ID})
	if err != nil {
		return nil, nil, err
	}
	manifests := ManifestsDir(s.Env)
	if _, err := srv.Kubectl(ctx, "apply", "-f", manifests); err != nil {
		return nil, nil, fmt.Errorf("%s: kubectl apply -f %s: %w", c.ID, manifests, err)
	}
	tok, err := srv.Token(ctx, "weft-system", "weft")
	if err != nil {
		return nil, nil, err
	}
	kc, err := srv.Kubeconfig(tok)
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	k.Servers[c.ID], k.Kubeconfigs[c.ID] = srv, kc
	s.extra = append(s.extra, c)
	s.gateways[c.ID] = c.Nodes[1]
	s.mu.Unlock()
	for i, n := range c.Nodes {
		if err := k.CreateNode(ctx, n); err != nil {
			return nil, nil, err
		}
		if i >= 1 {
			if err := k.SetCandidate(ctx, n, true); err != nil {
				return nil, nil, err
			}
		}
	}
	var ms []*Member
	for _, n := range c.Nodes {
		m := &Member{Node: n, Cluster: c}
		s.mu.Lock()
		cfg := s.config(m)
		s.configs[n] = cfg
		s.mu.Unlock()
		if m.Weftd, err = n.StartWeftd(ctx, cfg.MustYAML()); err != nil {
			return nil, nil, err
		}
		ms = append(ms, m)
	}
	for _, m := range ms {
		if err := s.StartPod(ctx, m); err != nil {
			return nil, nil, fmt.Errorf("pod on %s: %w", m.Node.Name, err)
		}
	}
	return c, ms, nil
}

// Adopt adds members (of AddCluster) to s.Members: the matrix and the
// convergence checks include them from now on.
func (s *Scenario) Adopt(ms ...*Member) {
	s.mu.Lock()
	s.Members = append(s.Members, ms...)
	s.mu.Unlock()
}

// RemoveCluster stops the weftds of an AddCluster cluster (SIGTERM, as an
// uninstall does) and its API server, and drops it and its members from
// the scenario. Its objects elsewhere (its ClusterEndpoint on the broker
// and the copies) are the test's business.
func (s *Scenario) RemoveCluster(c *harness.Cluster) error {
	for _, m := range slices.Clone(s.Members) {
		if m.Cluster == c {
			if err := s.RemoveMember(m); err != nil {
				return err
			}
		}
	}
	s.mu.Lock()
	s.extra = slices.DeleteFunc(s.extra, func(x *harness.Cluster) bool { return x == c })
	delete(s.gateways, c.ID)
	srv := s.Kube.Servers[c.ID]
	delete(s.Kube.Servers, c.ID)
	s.mu.Unlock()
	if srv != nil {
		return srv.Stop()
	}
	return nil
}

// DeleteBrokerEndpoint deletes cluster id's ClusterEndpoint from the
// broker, as an administrator removing a cluster does.
func (k *Kube) DeleteBrokerEndpoint(ctx context.Context, id string) error {
	return k.call(ctx, "broker", http.MethodDelete, "/apis/weft.dev/v1alpha1/namespaces/weft-broker/clusterendpoints/"+id, "", "")
}

// BrokerEndpoint reads cluster id's ClusterEndpoint on the broker as raw
// JSON.
func (k *Kube) BrokerEndpoint(ctx context.Context, id string) ([]byte, error) {
	return k.get(ctx, "broker", "/apis/weft.dev/v1alpha1/namespaces/weft-broker/clusterendpoints/"+id)
}
