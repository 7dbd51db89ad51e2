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
	ID        string         `json:"id"`
	CIDRs     []netip.Prefix `json:"cidrs"`
	GatewayIP netip.Addr     `json:"gatewayIP,omitzero"`
	// HealthCheckIP is the remote gateway's CNI interface IP, the target
	// of the whole-path health probe (invalid = not probed).
	HealthCheckIP netip.Addr `json:"healthCheckIP,omitzero"`
	From          string     `json:"from,omitempty"`
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
		t.Remotes = append(t.Remotes, Remote{ID: r.ID, CIDRs: slices.Concat(r.PodCIDRs, r.ServiceCIDRs), GatewayIP: r.GatewayIP, HealthCheckIP: r.HealthCheckIP, From: FromFile})
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

	seenIP := map[netip.Addr]string{}
	gwListed := false
	for _, n := range t.Nodes {
		if !n.IP.Is4() {
			continue // the source reports nodes without an address
		}
		if prev, dup := seenIP[n.IP]; dup {
			problems = append(problems, fmt.Sprintf("nodes %q and %q both have address %s: %q ignored", prev, n.Name, n.IP, n.Name))
			continue
		}
		seenIP[n.IP] = n.Name
		if n.Name == t.Gateway.Name {
			gwListed = true
			if t.Gateway.IP.IsValid() && t.Gateway.IP != n.IP {
				problems = append(problems, fmt.Sprintf("gateway %q: %s says %s but its Node has %s; using the Node's", n.Name, t.Gateway.From, t.Gateway.IP, n.IP))
			}
		}
		cn := config.Node{Name: n.Name, IP: n.IP.String()}
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
	if t.Gateway.Name != "" && !gwListed && t.Gateway.IP.Is4() {
		if _, dup := seenIP[t.Gateway.IP]; !dup {
			out.Cluster.Nodes = append(out.Cluster.Nodes, config.Node{Name: t.Gateway.Name, IP: t.Gateway.IP.String()})
			out.Parsed.Nodes = append(out.Parsed.Nodes, config.ParsedNode{Name: t.Gateway.Name, IP: t.Gateway.IP})
			if t.Gateway.Name == cfg.NodeName && cfg.NodeIP == "" {
				out.Parsed.NodeIP = t.Gateway.IP
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
		if r.GatewayIP.IsValid() {
			raw.GatewayIP = r.GatewayIP.String()
		}
		hc := r.HealthCheckIP
		if hc.IsValid() && !slices.ContainsFunc(r.CIDRs, func(p netip.Prefix) bool { return p.Contains(hc) }) {
			// weft's routes would not carry the probe: it would test
			// another path than the traffic's.
			problems = append(problems, fmt.Sprintf("remote %q (%s): health-check IP %s is outside its CIDRs: its path is not probed", r.ID, r.From, hc))
			hc = netip.Addr{}
		}
		if hc.IsValid() {
			raw.HealthCheckIP = hc.String()
		}
		out.Remotes = append(out.Remotes, raw)
		out.Parsed.Remotes = append(out.Parsed.Remotes, config.ParsedRemote{ID: r.ID, PodCIDRs: slices.Clone(r.CIDRs), GatewayIP: r.GatewayIP, HealthCheckIP: hc})
	}
	return &out, problems
}

// gatewayNode names the gateway after its Node. Submariner's Endpoint
// carries the gateway pod's hostname, which is usually the Node's name but
// not always (an FQDN, a renamed host): when no Node has that name, the
// Node whose InternalIP is the Endpoint's private IP is the gateway.
func gatewayNode(t Topology) Gateway {
	g := t.Gateway
	if g.Name == "" || !g.IP.IsValid() {
		return g
	}
	for _, n := range t.Nodes {
		if n.Name == g.Name {
			return g
		}
	}
	for _, n := range t.Nodes {
		if n.IP == g.IP {
			g.Name = n.Name
			return g
		}
	}
	return g
}
