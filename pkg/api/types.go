// Package api holds the wire types spoken between the chained CNI plugin and
// weftd over the unix socket, and the status document printed by
// `weftd status --json`. It imports nothing heavier than the standard library
// so that the plugin, which runs on every pod start-up, stays small.
package api

import "time"

// Paths of the daemon's HTTP API on the unix socket.
const (
	PathAdd     = "/v1/cni/add"
	PathDel     = "/v1/cni/del"
	PathCheck   = "/v1/cni/check"
	PathGC      = "/v1/cni/gc"
	PathStatus  = "/v1/status"
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
)

// MaxBodyBytes caps every request body the daemon accepts.
const MaxBodyBytes = 64 << 10

// Verbs carried by an Event.
const (
	VerbAdd = "ADD"
	VerbDel = "DEL"
)

// PodIP is one address of the pod as the primary CNI reported it.
type PodIP struct {
	Address string `json:"address"`           // CIDR notation, e.g. 10.1.2.5/24
	Gateway string `json:"gateway,omitempty"` // e.g. 10.1.2.1
}

// Event is what the plugin learned on ADD or DEL. It is sent to the daemon,
// or written to the spool directory when the daemon is away.
type Event struct {
	Verb           string    `json:"verb"`
	ContainerID    string    `json:"containerID"`
	IfName         string    `json:"ifName"`
	Netns          string    `json:"netns,omitempty"`
	PodNamespace   string    `json:"podNamespace,omitempty"`
	PodName        string    `json:"podName,omitempty"`
	Network        string    `json:"network,omitempty"`
	IPs            []PodIP   `json:"ips,omitempty"`
	HostInterfaces []string  `json:"hostInterfaces,omitempty"`
	Time           time.Time `json:"time"`
	// Spooled is set by the daemon when the event came from the spool.
	Spooled bool `json:"spooled,omitempty"`
}

// AttachmentKey identifies one attachment, as the CNI spec does.
type AttachmentKey struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// CheckRequest asks whether an attachment is known and the node ready.
type CheckRequest struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// CheckResponse answers a CheckRequest.
type CheckResponse struct {
	Known  bool   `json:"known"`
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
}

// GCRequest lists the attachments the runtime still considers valid for a
// network; the daemon forgets every other attachment of that network.
type GCRequest struct {
	Network          string          `json:"network"`
	ValidAttachments []AttachmentKey `json:"validAttachments"`
}

// GCResponse reports how many attachments the daemon forgot.
type GCResponse struct {
	Removed int `json:"removed"`
}

// Error is the body of every non-2xx answer of the daemon.
type Error struct {
	Error string `json:"error"`
}

// CNIInterface is the daemon's record of the node's CNI interface. In a
// dual-stack or IPv6 cluster the IPv6 address may be on another interface
// (Calico's vxlan-v6.calico): Name6, IP6 and Source6 say which. An
// IPv6-only cluster has IP empty and Name = Name6.
type CNIInterface struct {
	Name    string    `json:"name"`
	IP      string    `json:"ip"`
	Source  string    `json:"source"` // pinned | plugin | well-known | lowest-ifindex
	Since   time.Time `json:"since"`
	Name6   string    `json:"name6,omitempty"`
	IP6     string    `json:"ip6,omitempty"`
	Source6 string    `json:"source6,omitempty"`
}

// SameAddresses reports whether c and o name the same interfaces,
// addresses and sources (Since aside).
func (c *CNIInterface) SameAddresses(o *CNIInterface) bool {
	if c == nil || o == nil {
		return c == o
	}
	a, b := *c, *o
	a.Since, b.Since = time.Time{}, time.Time{}
	return a == b
}

// Reconcile describes the last reconcile pass.
type Reconcile struct {
	At         time.Time `json:"at"`
	DurationMs float64   `json:"durationMs"`
	Error      string    `json:"error"`
	// Passes counts the passes since weftd started, Triggers the requests
	// for one (plugin, netlink and config events): many triggers share a
	// pass, and passes are at least a minimum interval apart.
	Passes   uint64 `json:"passes"`
	Triggers uint64 `json:"triggers"`
}

// Condition is one observed fact about the node, in the Kubernetes style.
type Condition struct {
	Type    string    `json:"type"`
	Status  bool      `json:"status"`
	Reason  string    `json:"reason"`
	Message string    `json:"message,omitempty"`
	Fix     string    `json:"fix,omitempty"`
	Since   time.Time `json:"since"`
}

// Remote is the status of one remote cluster.
type Remote struct {
	ID              string   `json:"id"`
	CIDRs           []string `json:"cidrs"`
	RoutesInstalled bool     `json:"routesInstalled"`
	// Families: per address family weft routes for this remote (a family
	// the remote has CIDRs of and the local pods have too), whether all of
	// that family's routes are in place; RoutesInstalled is both.
	Families []RemoteFamily `json:"families,omitempty"`
}

// RemoteFamily is one address family of a remote's routes.
type RemoteFamily struct {
	Family          string `json:"family"` // "ipv4" or "ipv6"
	RoutesInstalled bool   `json:"routesInstalled"`
}

// Spool reports what the daemon replayed from, and what was dropped by, the
// plugin's spool directory.
type Spool struct {
	Replayed uint64 `json:"replayed"`
	Dropped  uint64 `json:"dropped"`
	Skipped  uint64 `json:"skipped"`
}

// Status is the document served on /v1/status and printed by
// `weftd status --json`. Field names are part of the user contract.
type Status struct {
	Node          string        `json:"node"`
	Cluster       string        `json:"cluster"`
	Role          string        `json:"role"` // gateway | non-gateway
	Ready         bool          `json:"ready"`
	CNIInterface  *CNIInterface `json:"cniInterface"`
	PacketFilter  string        `json:"packetFilter"`
	Attachments   int           `json:"attachments"`
	LastReconcile *Reconcile    `json:"lastReconcile"`
	Conditions    []Condition   `json:"conditions"`
	Remotes       []Remote      `json:"remotes,omitempty"`
	Spool         Spool         `json:"spool"`
	Config        *ConfigStatus `json:"config,omitempty"`
	Version       string        `json:"version,omitempty"`
	Topology      *Topology     `json:"topology,omitempty"`
	PathHealth    *PathHealth   `json:"pathHealth,omitempty"`
}

// Topology is where the node's topology comes from (status "topology").
type Topology struct {
	Source   string           `json:"source"` // file | kubernetes
	Synced   bool             `json:"synced"`
	Reason   string           `json:"reason"`
	Message  string           `json:"message,omitempty"`
	Since    *time.Time       `json:"since,omitempty"`
	Nodes    int              `json:"nodes"`
	Gateway  *TopologyGateway `json:"gateway,omitempty"`
	Remotes  []TopologyRemote `json:"remotes,omitempty"`
	Problems []string         `json:"problems,omitempty"`
	Control  *TopologyControl `json:"control,omitempty"`
}

// TopologyControl is weft's own control plane (kubernetes.endpoints:
// weft): the gateway election and, on the leader, the broker sync.
type TopologyControl struct {
	Candidate         bool        `json:"candidate"`
	Leading           bool        `json:"leading"`
	LeaseHolder       string      `json:"leaseHolder,omitempty"`
	LeaseRenewTime    *time.Time  `json:"leaseRenewTime,omitempty"`
	LeadershipChanges int         `json:"leadershipChanges"`
	Broker            *BrokerSync `json:"broker,omitempty"`
	Message           string      `json:"message,omitempty"`
}

// BrokerSync is the leader's sync with the broker.
type BrokerSync struct {
	Synced   bool       `json:"synced"`
	Reason   string     `json:"reason,omitempty"`
	Since    *time.Time `json:"since,omitempty"` // synced last changed
	Message  string     `json:"message,omitempty"`
	LastSync *time.Time `json:"lastSync,omitempty"`
	Remotes  int        `json:"remotes"`
	Errors   uint64     `json:"errors"`
}

// TopologyGateway is the local gateway and the object that named it.
type TopologyGateway struct {
	Name string `json:"name"`
	IP   string `json:"ip,omitempty"`
	IP6  string `json:"ip6,omitempty"`
	From string `json:"from"`
}

// TopologyRemote is one remote cluster and the object it came from.
type TopologyRemote struct {
	ID         string `json:"id"`
	GatewayIP  string `json:"gatewayIP,omitempty"`
	GatewayIP6 string `json:"gatewayIP6,omitempty"` // a dual-stack or IPv6-only remote gateway's IPv6 address
	From       string `json:"from"`
}

// ConfigStatus is the configuration file as weftd last read it.
type ConfigStatus struct {
	File  string `json:"file"`
	Valid bool   `json:"valid"`
	// Problems are the first problems of a file that was refused;
	// MoreProblems counts the others.
	Problems     []ConfigProblem `json:"problems,omitempty"`
	MoreProblems int             `json:"moreProblems,omitempty"`
	// RestartRequired lists the keys whose new values weftd cannot apply
	// while running; it keeps the old ones until restarted.
	RestartRequired []string `json:"restartRequired,omitempty"`
	// Warnings are what an accepted file should tidy (nested or duplicate
	// CIDRs of one cluster, merged into the entry covering them);
	// MoreWarnings counts the others.
	Warnings     []ConfigProblem `json:"warnings,omitempty"`
	MoreWarnings int             `json:"moreWarnings,omitempty"`
}

// ConfigProblem is one problem of a refused configuration file: the field
// (path in the file), the value found there, why it is refused, and what
// to write instead.
type ConfigProblem struct {
	Field  string `json:"field"`
	Value  string `json:"value"`
	Reason string `json:"reason"`
	Fix    string `json:"fix"`
}
