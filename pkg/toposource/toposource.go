// Package toposource defines where the reconcile loop gets the cluster's
// topology from: the nodes, the active gateway and the remote clusters. A
// Source yields a Topology and says when it changed; the loop does not care
// whether it came from the configuration file or from the Kubernetes API.
// This package never imports client-go: the Kubernetes source lives in its
// own package and only the daemon's composition root knows it.
package toposource

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/weft-net/weft/pkg/config"
)

// Source names (config.Topology values).
const (
	File       = config.TopologyFile
	Kubernetes = config.TopologyKubernetes
)

// FromFile is the provenance of every item of the file source.
const FromFile = "file"

// Node is one member of the local cluster.
type Node struct {
	Name string     `json:"name"`
	IP   netip.Addr `json:"ip"`
	IP6  netip.Addr `json:"ip6,omitzero"`   // a dual-stack node's IPv6 address
	From string     `json:"from,omitempty"` // e.g. "Node/c1-n2"
}

// Gateway is the local cluster's active gateway. Name "" = none known.
type Gateway struct {
	Name string     `json:"name"`
	IP   netip.Addr `json:"ip,omitzero"`
	IP6  netip.Addr `json:"ip6,omitzero"`   // a dual-stack gateway's IPv6 address
	From string     `json:"from,omitempty"` // e.g. "Endpoint submariner-operator/c1-…"
}

// Remote is one remote cluster.
type Remote struct {
	ID    string         `json:"id"`
	CIDRs []netip.Prefix `json:"cidrs"`
	// GatewayIP and GatewayIP6 are the remote gateway's underlay
	// addresses, IPv4 and IPv6 (either invalid when unknown); the cable
	// uses the one of the local cluster's underlay family.
	GatewayIP  netip.Addr `json:"gatewayIP,omitzero"`
	GatewayIP6 netip.Addr `json:"gatewayIP6,omitzero"`
	// HealthCheckIP and HealthCheckIP6 are the remote gateway's CNI
	// interface addresses, IPv4 and IPv6, the targets of the whole-path
	// health probe of each family (invalid = not probed).
	HealthCheckIP  netip.Addr `json:"healthCheckIP,omitzero"`
	HealthCheckIP6 netip.Addr `json:"healthCheckIP6,omitzero"`
	From           string     `json:"from,omitempty"`
}

// Gateway is the remote gateway's address of the family the cable runs
// over (v6: an IPv6 underlay), else its other one, which the desired
// state then names as unreachable; invalid when none is known. Either
// field is looked at whatever its name, so a topology persisted by an
// older weftd reads the same.
func (r Remote) Gateway(v6 bool) netip.Addr {
	for _, a := range []netip.Addr{r.GatewayIP, r.GatewayIP6} {
		if a.IsValid() && a.Is6() == v6 {
			return a
		}
	}
	if r.GatewayIP.IsValid() {
		return r.GatewayIP
	}
	return r.GatewayIP6
}

// Sync says whether the topology is the source's live view.
type Sync struct {
	Synced  bool      `json:"synced"`
	Reason  string    `json:"reason"`            // e.g. Watching, Stale, WaitingForAPI
	Message string    `json:"message,omitempty"` // why, when not synced
	Since   time.Time `json:"since"`             // when Synced or Reason last changed
}

// Topology is one desired view of the cluster.
type Topology struct {
	Source  string   `json:"source"` // file | kubernetes
	Nodes   []Node   `json:"nodes"`  // sorted by name
	Gateway Gateway  `json:"gateway"`
	Remotes []Remote `json:"remotes"` // sorted by id
	Sync    Sync     `json:"sync"`
	// Problems are items the source skipped or doubts, each naming the
	// object involved (for a status condition).
	Problems []string `json:"problems,omitempty"`
	// Control is weft's own control plane as this node sees it
	// (kubernetes.endpoints: weft), for status only: the reconcile loop
	// acts on Gateway and Remotes.
	Control *Control `json:"-"`
}

// Reasons of the leader's broker sync (Control.BrokerReason).
const (
	BrokerSynced      = "Synced"
	BrokerPending     = "Pending"           // leading, no pass finished yet
	BrokerPublish     = "PublishFailed"     // the local API refused or is away
	BrokerUnreachable = "BrokerUnreachable" // no answer from the broker
	BrokerRefused     = "BrokerRefused"     // the broker answered with an error
)

// Control is the gateway election and the broker sync (status only).
type Control struct {
	Candidate         bool      // this node's Node carries the gateway label
	Leading           bool      // this node holds the Lease
	LeaseHolder       string    // as last read (candidates read the Lease)
	LeaseRenewTime    time.Time // idem
	LeadershipChanges int       // holder changes this weftd saw
	Broker            bool      // a broker is configured
	BrokerSynced      bool      // the leader's last broker pass succeeded
	BrokerReason      string    // brokersync's reason (Synced, BrokerUnreachable, ...)
	BrokerMessage     string    // why not
	BrokerSince       time.Time // BrokerSynced last changed
	BrokerLastSync    time.Time
	BrokerRemotes     int    // ClusterEndpoints copied from the broker
	BrokerSyncErrors  uint64 // failed broker passes of this weftd
	Message           string // the control plane's own problem, if any
}

// Source yields the topology. Implementations are safe for concurrent use.
type Source interface {
	// Current returns the latest topology; ok is false while the source
	// has none at all yet (no API answer and nothing persisted).
	Current() (t Topology, ok bool)
	// Changed is signalled (coalesced: capacity 1) after Current changed.
	Changed() <-chan struct{}
}

// FromConfig is the file source's topology: cluster.nodes,
// cluster.gateway and remotes of a validated configuration.
func FromConfig(cfg *config.Config) Topology {
	t := Topology{Source: File, Sync: Sync{Synced: true, Reason: "File"}}
	for _, n := range cfg.Parsed.Nodes {
		t.Nodes = append(t.Nodes, Node{Name: n.Name, IP: n.IP, IP6: n.IP6, From: FromFile})
		if n.Name == cfg.Cluster.Gateway {
			t.Gateway = Gateway{Name: n.Name, IP: n.IP, IP6: n.IP6, From: FromFile}
		}
	}
	for _, r := range cfg.Parsed.Remotes {
		tr := Remote{ID: r.ID, CIDRs: slices.Concat(r.PodCIDRs, r.ServiceCIDRs), HealthCheckIP: r.HealthCheckIP, HealthCheckIP6: r.HealthCheckIP6, From: FromFile}
		if r.GatewayIP.Is6() {
			tr.GatewayIP6 = r.GatewayIP
		} else {
			tr.GatewayIP = r.GatewayIP
		}
		t.Remotes = append(t.Remotes, tr)
	}
	t.sort()
	return t
}

func (t *Topology) sort() {
	slices.SortFunc(t.Nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(t.Remotes, func(a, b Remote) int { return strings.Compare(a.ID, b.ID) })
}

// Apply returns a copy of cfg whose cluster.nodes, cluster.gateway and
// remotes (raw and parsed) are t's, so that the desired-state computation
// sees the API's view exactly as it would see a file listing it. cfg is
// not modified. The gateway is added as a node when no Node object names
// it (a nodeSelector that leaves it out): its VTEP must still be a peer.
// Items that would break the local cluster's invariants (a remote CIDR
// overlapping a local one or another remote's) are dropped and reported.
func Apply(cfg *config.Config, t Topology) (*config.Config, []string) {
	out := *cfg
	out.Cluster.Nodes, out.Remotes = nil, nil
	out.Parsed.Nodes, out.Parsed.Remotes = nil, nil
	var problems []string
	t.Gateway = gatewayNode(t)
	out.Cluster.Gateway = t.Gateway.Name

	u6, why6 := underlay6(cfg, t)
	out.Parsed.Underlay6 = u6
	under := func(ip, ip6 netip.Addr) netip.Addr {
		if u6 {
			return ip6
		}
		return ip
	}
	seenIP := map[netip.Addr]string{} // both families
	gwListed := false
	for _, n := range t.Nodes {
		ul := under(n.IP, n.IP6)
		switch {
		case !n.IP.IsValid() && !n.IP6.IsValid():
			continue // the source reports nodes without an address
		case !ul.IsValid() && u6:
			problems = append(problems, fmt.Sprintf("node %q (%s) has no IPv6 address, and the cluster's VXLAN underlay is IPv6 (%s): not a member until it has one", n.Name, n.From, why6))
			continue
		case !ul.IsValid():
			problems = append(problems, fmt.Sprintf("node %q (%s) has no IPv4 address, only %s, and %s: not a member until it has one", n.Name, n.From, n.IP6, why6))
			continue
		}
		dup := false
		for _, a := range []netip.Addr{n.IP, n.IP6} {
			if prev, ok := seenIP[a]; ok && a.IsValid() {
				problems = append(problems, fmt.Sprintf("nodes %q and %q both have address %s: %q ignored", prev, n.Name, a, n.Name))
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		for _, a := range []netip.Addr{n.IP, n.IP6} {
			if a.IsValid() {
				seenIP[a] = n.Name
			}
		}
		if n.Name == t.Gateway.Name {
			gwListed = true
			if g := under(t.Gateway.IP, t.Gateway.IP6); g.IsValid() && g != ul {
				problems = append(problems, fmt.Sprintf("gateway %q: %s says %s but its Node has %s; using the Node's", n.Name, t.Gateway.From, g, ul))
			}
		}
		cn := config.Node{Name: n.Name}
		if n.IP.IsValid() {
			cn.IP = n.IP.String()
		}
		if n.IP6.IsValid() {
			cn.IP6 = n.IP6.String()
		}
		out.Cluster.Nodes = append(out.Cluster.Nodes, cn)
		out.Parsed.Nodes = append(out.Parsed.Nodes, config.ParsedNode{Name: n.Name, IP: n.IP, IP6: n.IP6})
		if n.Name == cfg.NodeName && cfg.NodeIP == "" {
			out.Parsed.NodeIP = n.IP
		}
		if n.Name == cfg.NodeName && cfg.NodeIP6 == "" {
			out.Parsed.NodeIP6 = n.IP6
		}
	}
	if g := t.Gateway; g.Name != "" && !gwListed && under(g.IP, g.IP6).IsValid() {
		_, dup := seenIP[g.IP]
		_, dup6 := seenIP[g.IP6]
		if !dup && !dup6 {
			cn := config.Node{Name: g.Name}
			pn := config.ParsedNode{Name: g.Name, IP: g.IP, IP6: g.IP6}
			if g.IP.IsValid() {
				cn.IP = g.IP.String()
			}
			if g.IP6.IsValid() {
				cn.IP6 = g.IP6.String()
			}
			out.Cluster.Nodes = append(out.Cluster.Nodes, cn)
			out.Parsed.Nodes = append(out.Parsed.Nodes, pn)
			if g.Name == cfg.NodeName && cfg.NodeIP == "" {
				out.Parsed.NodeIP = g.IP
			}
			if g.Name == cfg.NodeName && cfg.NodeIP6 == "" {
				out.Parsed.NodeIP6 = g.IP6
			}
		}
	}

	type owner struct {
		who string
		p   netip.Prefix
	}
	var taken []owner
	for _, p := range slices.Concat(cfg.Parsed.PodCIDRs, cfg.Parsed.ServiceCIDRs) {
		taken = append(taken, owner{"the local cluster", p})
	}
	for _, r := range t.Remotes {
		if r.ID == cfg.Cluster.ID {
			continue
		}
		var clash string
		for _, c := range r.CIDRs {
			for _, o := range taken {
				if c.Overlaps(o.p) {
					clash = fmt.Sprintf("remote %q (%s): %s overlaps %s of %s: remote ignored", r.ID, r.From, c, o.p, o.who)
					break
				}
			}
			if clash != "" {
				break
			}
		}
		if clash != "" {
			problems = append(problems, clash)
			continue
		}
		for _, c := range r.CIDRs {
			taken = append(taken, owner{fmt.Sprintf("remote %q", r.ID), c})
		}
		raw := config.Remote{ID: r.ID}
		for _, c := range r.CIDRs {
			raw.PodCIDRs = append(raw.PodCIDRs, c.String())
		}
		pr := config.ParsedRemote{ID: r.ID, PodCIDRs: slices.Clone(r.CIDRs), GatewayIP: r.Gateway(u6)}
		if pr.GatewayIP.IsValid() {
			raw.GatewayIP = pr.GatewayIP.String()
			out.Parsed.Cable6 = out.Parsed.Cable6 || pr.GatewayIP.Is6()
		}
		// One health-check address per family, each only if weft's routes
		// carry it: else the probe would test another path than the
		// traffic's.
		for _, hc := range []netip.Addr{r.HealthCheckIP, r.HealthCheckIP6} {
			if !hc.IsValid() {
				continue
			}
			if !slices.ContainsFunc(r.CIDRs, func(p netip.Prefix) bool { return p.Contains(hc) }) {
				problems = append(problems, fmt.Sprintf("remote %q (%s): %s health-check IP %s is outside its CIDRs: its %s path is not probed", r.ID, r.From, family(hc), hc, family(hc)))
				continue
			}
			if hc.Is6() {
				pr.HealthCheckIP6, raw.HealthCheckIP6 = hc, hc.String()
			} else {
				pr.HealthCheckIP, raw.HealthCheckIP = hc, hc.String()
			}
		}
		out.Remotes = append(out.Remotes, raw)
		out.Parsed.Remotes = append(out.Parsed.Remotes, pr)
	}
	return &out, problems
}

func family(a netip.Addr) string {
	if a.Is6() {
		return "IPv6"
	}
	return "IPv4"
}

// underlay6 decides the family of the cluster's VXLAN underlay from the
// API's view by the file's rule (IPv6 when some node has no IPv4
// address, config.Parsed.Underlay6), with one difference: a cluster with
// IPv4 pod CIDRs needs an IPv4 VTEP on every node, so it keeps its IPv4
// underlay and a node without an IPv4 InternalIP waits, named, instead of
// every node's underlay switching. why says what decided, for problems.
func underlay6(cfg *config.Config, t Topology) (bool, string) {
	for _, p := range cfg.Parsed.PodCIDRs {
		if p.Addr().Is4() {
			return false, fmt.Sprintf("cluster.podCIDRs has the IPv4 CIDR %s, whose pods need an IPv4 underlay", p)
		}
	}
	for _, n := range t.Nodes {
		if !n.IP.IsValid() && n.IP6.IsValid() {
			return true, fmt.Sprintf("node %q has IPv6 only", n.Name)
		}
	}
	return false, "every node has an IPv4 address"
}

// gatewayNode names the gateway after its Node. Submariner's Endpoint
// carries the gateway pod's hostname, which is usually the Node's name but
// not always (an FQDN, a renamed host): when no Node has that name, the
// Node whose InternalIP is the Endpoint's private IP is the gateway.
func gatewayNode(t Topology) Gateway {
	g := t.Gateway
	if g.Name == "" || !g.IP.IsValid() && !g.IP6.IsValid() {
		return g
	}
	for _, n := range t.Nodes {
		if n.Name == g.Name {
			return g
		}
	}
	for _, n := range t.Nodes {
		if n.IP.IsValid() && n.IP == g.IP || n.IP6.IsValid() && n.IP6 == g.IP6 {
			g.Name = n.Name
			return g
		}
	}
	return g
}
