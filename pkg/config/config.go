// Package config loads and validates weftd's configuration file (YAML or
// JSON). The schema is part of weft's user contract (DESIGN.md).
package config

import (
	"net/netip"
	"time"
)

// Config is the daemon configuration. Field names follow the YAML keys.
type Config struct {
	NodeName       string      `json:"nodeName"`
	NodeIP         string      `json:"nodeIP"`
	NodeIP6        string      `json:"nodeIP6"` // IPv6 underlay address of a dual-stack or IPv6-only node
	Cluster        Cluster     `json:"cluster"`
	Remotes        []Remote    `json:"remotes"`
	Cable          string      `json:"cable"` // vxlan | none
	CNIInterface   string      `json:"cniInterface"`
	VXLAN          VXLAN       `json:"vxlan"`
	CableVXLAN     VXLAN       `json:"cableVxlan"`
	PacketFilter   string      `json:"packetFilter"` // auto | nftables | iptables
	IptablesMode   string      `json:"iptablesMode"` // "" (detect) | legacy | nft
	MSS            MSS         `json:"mss"`
	RouteTable     int         `json:"routeTable"`
	RulePriority   int         `json:"rulePriority"`
	Socket         string      `json:"socket"`
	SpoolDir       string      `json:"spoolDir"`
	StateDir       string      `json:"stateDir"`
	MetricsAddress *string     `json:"metricsAddress"` // nil = default; "" disables
	ResyncInterval Duration    `json:"resyncInterval"`
	HealthCheck    HealthCheck `json:"healthCheck"`

	// Topology is where cluster.nodes, cluster.gateway and remotes come
	// from: file (this file) or kubernetes (the API, see Kubernetes).
	Topology   string     `json:"topology"`
	Kubernetes Kubernetes `json:"kubernetes"`
	Broker     Broker     `json:"broker"`

	// Parsed forms, filled by Validate. Not part of the file.
	Parsed Parsed `json:"-"`
}

// Cluster describes the local cluster.
type Cluster struct {
	ID           string   `json:"id"`
	PodCIDRs     []string `json:"podCIDRs"`
	ServiceCIDRs []string `json:"serviceCIDRs"`
	Gateway      string   `json:"gateway"`
	Nodes        []Node   `json:"nodes"`
}

// Node is one node of the local cluster: its IPv4 address, its IPv6
// address, or both.
type Node struct {
	Name string `json:"name"`
	IP   string `json:"ip"`
	IP6  string `json:"ip6"`
}

// Remote is one remote cluster.
type Remote struct {
	ID           string   `json:"id"`
	PodCIDRs     []string `json:"podCIDRs"`
	ServiceCIDRs []string `json:"serviceCIDRs"`
	GatewayIP    string   `json:"gatewayIP"` // IPv4 or IPv6: the cable's underlay family
	// HealthCheckIP is the address on the remote gateway that the whole
	// path probe targets (its CNI interface IP, as Submariner's Endpoint
	// spec.healthCheckIP), IPv4 or IPv6; "" = that path is not probed.
	HealthCheckIP string `json:"healthCheckIP,omitempty"`
	// HealthCheckIP6 is a dual-stack remote's second target: its CNI
	// interface's IPv6 address, with the IPv4 one in HealthCheckIP.
	HealthCheckIP6 string `json:"healthCheckIP6,omitempty"`
}

// VXLAN configures one of weft's VXLAN devices.
type VXLAN struct {
	Name     string `json:"name"`
	VNI      uint32 `json:"vni"`
	Port     uint16 `json:"port"`
	VTEPCIDR string `json:"vtepCIDR"`
	// VTEPCIDR6 holds the devices' IPv6 VTEP addresses (ULA by default):
	// its network plus the host bits of the node's underlay address.
	VTEPCIDR6 string `json:"vtepCIDR6"`
	MTU       int    `json:"mtu"` // 0 = underlay MTU - 50 (- 70 over an IPv6 underlay)
}

// MSS configures TCP MSS clamping.
type MSS struct {
	Mode  string `json:"mode"` // pmtu | fixed
	Value uint16 `json:"value"`
}

// Duration is a time.Duration written as "30s" in the file.
type Duration struct{ time.Duration }

// Parsed holds the validated, parsed form of the address fields.
type Parsed struct {
	NodeIP       netip.Addr // may be invalid when not configured: resolved at run time
	NodeIP6      netip.Addr // invalid unless configured
	PodCIDRs     []netip.Prefix
	ServiceCIDRs []netip.Prefix
	Nodes        []ParsedNode
	Remotes      []ParsedRemote
	VTEPCIDR     netip.Prefix
	CableCIDR    netip.Prefix
	VTEPCIDR6    netip.Prefix
	CableCIDR6   netip.Prefix
	// Underlay6: some node has no IPv4 address, so the cluster's VXLAN
	// underlay is IPv6 (every node then has an IPv6 address).
	Underlay6 bool
	// Cable6: the remote gateways' addresses (the cable's underlay) are
	// IPv6.
	Cable6 bool
	// Warnings are what Validate accepted but an operator should fix:
	// nested or duplicate CIDRs of one owner, merged into the entry that
	// covers them (the merged-away entries are not in the lists above).
	Warnings []FieldError
}

// ParsedNode is a Node with its addresses parsed; either may be invalid.
type ParsedNode struct {
	Name string
	IP   netip.Addr
	IP6  netip.Addr
}

// ParsedRemote is a Remote with its addresses parsed.
type ParsedRemote struct {
	ID           string
	PodCIDRs     []netip.Prefix
	ServiceCIDRs []netip.Prefix
	GatewayIP    netip.Addr // may be invalid when cable is none
	// HealthCheckIP and HealthCheckIP6 are the path probe's targets of
	// each family (remotes[].healthCheckIP sorted by family, and
	// healthCheckIP6); invalid when not known.
	HealthCheckIP  netip.Addr
	HealthCheckIP6 netip.Addr
}
