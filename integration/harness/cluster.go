package harness

import (
	"fmt"
	"net/netip"

	"sigs.k8s.io/yaml"
)

// ClusterSpec describes a cluster of nodes on an underlay.
type ClusterSpec struct {
	// ID is the cluster ID (c1); nodes are named <ID>-n1 … <ID>-nN.
	ID    string
	Nodes int
	// PodCIDR is the cluster pod CIDR (10.1.0.0/16); node i (1-based) gets
	// the i-th /24 of it: 10.1.1.0/24, 10.1.2.0/24, …
	PodCIDR string
	// ServiceCIDR (10.101.0.0/16): configured, nothing real behind it.
	ServiceCIDR string
	// NodeIPBase (192.168.10.0): node i gets base + 10 + i (192.168.10.11, …).
	NodeIPBase string
	// CNI is the primary-CNI simulation of every node.
	CNI CNIOptions
	// MTU of every node's underlay veth; 0 = 1500. Per-node changes:
	// Node.SetUnderlayMTU.
	MTU int
	// Family is the address plan (IPv4 by default). With IPv6, node i
	// also gets the IPv6 underlay address Underlay6For(its IPv4 plan
	// address) and the i-th /64 of PodCIDR6; IPv6 only drops every IPv4
	// address (PodCIDR and ServiceCIDR may then be empty; NodeIPBase
	// still numbers the nodes).
	Family Family
	// PodCIDR6 (fd00:1::/56, at most /56) and ServiceCIDR6
	// (fd00:101::/112): the IPv6 halves, required with IPv6.
	PodCIDR6     string
	ServiceCIDR6 string
}

// Cluster is a set of nodes sharing a pod CIDR.
type Cluster struct {
	ID     string
	Family Family
	// The CIDRs of each family; invalid when the plan lacks the family.
	PodCIDR      netip.Prefix
	ServiceCIDR  netip.Prefix
	PodCIDR6     netip.Prefix
	ServiceCIDR6 netip.Prefix
	Nodes        []*Node
	Underlay     *Underlay
	env          *Env
}

// PodCIDRs lists the valid pod CIDRs, IPv4 first.
func (c *Cluster) PodCIDRs() []netip.Prefix { return validPrefixes(c.PodCIDR, c.PodCIDR6) }

// ServiceCIDRs lists the valid service CIDRs, IPv4 first.
func (c *Cluster) ServiceCIDRs() []netip.Prefix {
	return validPrefixes(c.ServiceCIDR, c.ServiceCIDR6)
}

func validPrefixes(ps ...netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// NewCluster creates spec.Nodes nodes on u. Host-gw routes and masquerade
// are separate calls (ConnectHostGW, EnableMasquerade).
func NewCluster(env *Env, u *Underlay, spec ClusterSpec) (*Cluster, error) {
	c := &Cluster{ID: spec.ID, Family: spec.Family, Underlay: u, env: env}
	if spec.Family.HasIPv4() {
		pod, err := netip.ParsePrefix(spec.PodCIDR)
		if err != nil || !pod.Addr().Is4() || pod.Bits() > 16 {
			return nil, fmt.Errorf("cluster %s: pod CIDR %q must be an IPv4 /16 or larger", spec.ID, spec.PodCIDR)
		}
		svc, err := netip.ParsePrefix(spec.ServiceCIDR)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: service CIDR %q: %w", spec.ID, spec.ServiceCIDR, err)
		}
		c.PodCIDR, c.ServiceCIDR = pod.Masked(), svc.Masked()
	}
	if spec.Family.HasIPv6() {
		pod, err := netip.ParsePrefix(spec.PodCIDR6)
		if err != nil || !pod.Addr().Is6() || pod.Addr().Is4In6() || pod.Bits() > 56 {
			return nil, fmt.Errorf("cluster %s: IPv6 pod CIDR %q must be an IPv6 /56 or larger", spec.ID, spec.PodCIDR6)
		}
		svc, err := netip.ParsePrefix(spec.ServiceCIDR6)
		if err != nil || !svc.Addr().Is6() {
			return nil, fmt.Errorf("cluster %s: IPv6 service CIDR %q is not an IPv6 CIDR", spec.ID, spec.ServiceCIDR6)
		}
		c.PodCIDR6, c.ServiceCIDR6 = pod.Masked(), svc.Masked()
	}
	base, err := netip.ParseAddr(spec.NodeIPBase)
	if err != nil || !base.Is4() {
		return nil, fmt.Errorf("cluster %s: node IP base %q is not IPv4", spec.ID, spec.NodeIPBase)
	}
	if spec.Nodes < 1 || spec.Nodes > 200 {
		return nil, fmt.Errorf("cluster %s: %d nodes", spec.ID, spec.Nodes)
	}
	for i := 1; i <= spec.Nodes; i++ {
		b := base.As4()
		b[3] += byte(10 + i)
		opts := NodeOptions{
			Name:    fmt.Sprintf("%s-n%d", spec.ID, i),
			Cluster: spec.ID,
			MTU:     spec.MTU,
			CNI:     spec.CNI,
		}
		if c.PodCIDR.IsValid() {
			p := c.PodCIDR.Addr().As4()
			p[2] = byte(i)
			opts.IP, opts.PodCIDR = netip.AddrFrom4(b), netip.PrefixFrom(netip.AddrFrom4(p), 24)
		}
		if c.PodCIDR6.IsValid() {
			opts.IP6, opts.PodCIDR6 = Underlay6For(netip.AddrFrom4(b)), subnet6(c.PodCIDR6, i)
		}
		n, err := u.AddNode(opts)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", spec.ID, err)
		}
		c.Nodes = append(c.Nodes, n)
	}
	return c, nil
}

// Node returns the node with the logical name (c1-n2), or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// ConnectHostGW gives every node a route to every other node's pod CIDR via
// that node's underlay IP (flannel host-gw).
func (c *Cluster) ConnectHostGW() error {
	for _, n := range c.Nodes {
		if err := n.ConnectHostGW(c.Nodes...); err != nil {
			return fmt.Errorf("cluster %s: %w", c.ID, err)
		}
	}
	return nil
}

// EnableMasquerade installs flannel's ipMasq rule on every node, per
// family.
func (c *Cluster) EnableMasquerade() error {
	for _, n := range c.Nodes {
		for _, p := range c.PodCIDRs() {
			if err := n.EnableMasquerade(p); err != nil {
				return fmt.Errorf("cluster %s: %w", c.ID, err)
			}
		}
	}
	return nil
}

// WriteConflists rewrites every node's conflist with opts.
func (c *Cluster) WriteConflists(opts CNIOptions) error {
	for _, n := range c.Nodes {
		if err := n.WriteConflist(opts); err != nil {
			return err
		}
	}
	return nil
}

// WeftdConfig is a weftd configuration as a YAML-ready map, so that tests
// change one key without the zero values of a struct filling the others.
type WeftdConfig map[string]any

// YAML renders the configuration.
func (w WeftdConfig) YAML() ([]byte, error) { return yaml.Marshal(map[string]any(w)) }

// MustYAML is YAML for configurations built by the harness itself, which
// always marshal.
func (w WeftdConfig) MustYAML() []byte {
	b, err := w.YAML()
	if err != nil {
		panic(err)
	}
	return b
}

// WeftdConfig returns n's weftd configuration in cluster c with gateway as
// the active gateway and remotes as the remote clusters (their first node is
// taken as their gateway unless remoteGateways names one per remote ID).
// Every path points into n.Dir; metrics are disabled. Only the keys listed
// in DESIGN.md are set, the daemon's defaults cover the rest.
func (c *Cluster) WeftdConfig(n *Node, gateway *Node, remotes []*Cluster, remoteGateways map[string]*Node) WeftdConfig {
	nodes := []any{}
	for _, m := range c.Nodes {
		nodes = append(nodes, nodeEntry(m))
	}
	rs := []any{}
	for _, r := range remotes {
		gw := remoteGateways[r.ID]
		if gw == nil && len(r.Nodes) > 0 {
			gw = r.Nodes[0]
		}
		rm := map[string]any{
			"id":           r.ID,
			"podCIDRs":     prefixStrings(r.PodCIDRs()),
			"serviceCIDRs": prefixStrings(r.ServiceCIDRs()),
		}
		if gw != nil {
			// The cable runs over IPv4 whenever the remote gateway has an
			// IPv4 underlay address (weft's VXLAN over IPv4 in a dual-stack
			// cluster), over IPv6 for an IPv6-only one.
			if gw.IP.IsValid() {
				rm["gatewayIP"] = gw.IP.String()
			} else {
				rm["gatewayIP"] = gw.IP6.String()
			}
		}
		rs = append(rs, rm)
	}
	gwName := ""
	if gateway != nil {
		gwName = gateway.Name
	}
	cfg := WeftdConfig{
		"nodeName": n.Name,
		"cluster": map[string]any{
			"id":           c.ID,
			"podCIDRs":     prefixStrings(c.PodCIDRs()),
			"serviceCIDRs": prefixStrings(c.ServiceCIDRs()),
			"gateway":      gwName,
			"nodes":        nodes,
		},
		"remotes":        rs,
		"cable":          "vxlan",
		"socket":         n.Socket,
		"spoolDir":       n.SpoolDir,
		"stateDir":       n.StateDir,
		"metricsAddress": "",
		"resyncInterval": "30s",
	}
	if n.IP.IsValid() {
		cfg["nodeIP"] = n.IP.String()
	}
	if n.IP6.IsValid() {
		cfg["nodeIP6"] = n.IP6.String()
	}
	return cfg
}

// nodeEntry is n in cluster.nodes: {name, ip} and, with IPv6, ip6.
func nodeEntry(n *Node) map[string]any {
	e := map[string]any{"name": n.Name}
	if n.IP.IsValid() {
		e["ip"] = n.IP.String()
	}
	if n.IP6.IsValid() {
		e["ip6"] = n.IP6.String()
	}
	return e
}

// TwoClustersSpec shapes NewTwoClusters.
type TwoClustersSpec struct {
	NodesPerCluster int // default 2
	CNI             CNIOptions
	MTU             int
	// Family: IPv4 (default), dual stack or IPv6 only; the IPv6 CIDRs
	// are fd00:1::/56 and fd00:101::/112 (c1), fd00:2::/56 and
	// fd00:102::/112 (c2).
	Family Family
}

// TwoClusters is c1 (pods 10.1.0.0/16, services 10.101.0.0/16, nodes
// 192.168.10.11…) and c2 (10.2.0.0/16, 10.102.0.0/16, 192.168.20.11…) on
// one underlay (with IPv6: fd00:1::/56, fd00:101::/112, fd00:ff::c0a8:a0b…
// and fd00:2::/56, fd00:102::/112, fd00:ff::c0a8:140b…), each with host-gw routes between its own nodes. Nothing
// connects the clusters: that is weft's job.
type TwoClusters struct {
	Underlay *Underlay
	C1, C2   *Cluster
}

// NewTwoClusters builds the underlay and both clusters.
func NewTwoClusters(env *Env, spec TwoClustersSpec) (*TwoClusters, error) {
	if spec.NodesPerCluster == 0 {
		spec.NodesPerCluster = 2
	}
	u, err := NewUnderlay(env)
	if err != nil {
		return nil, err
	}
	tc := &TwoClusters{Underlay: u}
	for i, cs := range []ClusterSpec{
		{ID: "c1", PodCIDR: "10.1.0.0/16", ServiceCIDR: "10.101.0.0/16", NodeIPBase: "192.168.10.0", PodCIDR6: "fd00:1::/56", ServiceCIDR6: "fd00:101::/112"},
		{ID: "c2", PodCIDR: "10.2.0.0/16", ServiceCIDR: "10.102.0.0/16", NodeIPBase: "192.168.20.0", PodCIDR6: "fd00:2::/56", ServiceCIDR6: "fd00:102::/112"},
	} {
		cs.Nodes, cs.CNI, cs.MTU, cs.Family = spec.NodesPerCluster, spec.CNI, spec.MTU, spec.Family
		c, err := NewCluster(env, u, cs)
		if err != nil {
			return nil, err
		}
		if err := c.ConnectHostGW(); err != nil {
			return nil, err
		}
		if i == 0 {
			tc.C1 = c
		} else {
			tc.C2 = c
		}
	}
	return tc, nil
}

// Clusters returns c1 and c2.
func (tc *TwoClusters) Clusters() []*Cluster { return []*Cluster{tc.C1, tc.C2} }
