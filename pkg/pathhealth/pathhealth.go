// Package pathhealth is the data-path health model: what weftd's prober
// measured on the way to each target, as one immutable snapshot. The prober
// produces it, and the status, metrics and cluster reporters consume it;
// none of them imports another.
package pathhealth

import (
	"net/netip"
	"time"
)

// Hop names the piece of the path a target checks, so that a failure can
// be told to the operator as "this node → its gateway" or "this gateway →
// the remote gateway" rather than as an address.
type Hop string

const (
	// HopGateway: a non-gateway node to its cluster's gateway VTEP.
	HopGateway Hop = "node-to-gateway"
	// HopRemote: a node to a remote cluster through weft's routes, with the
	// source address real traffic would have (the whole path).
	HopRemote Hop = "node-to-remote"
	// HopCable: the gateway to a remote cluster's gateway over the cable.
	HopCable Hop = "gateway-to-remote-gateway"
)

// Target is one thing the prober sends to.
type Target struct {
	// Name is stable across snapshots and unique in one: the metric label
	// and the key reporters diff on (for example "gateway/c1-n1" or
	// "remote/c2").
	Name string
	Hop  Hop
	// Cluster is the remote cluster's id for HopRemote and HopCable, the
	// local cluster's for HopGateway.
	Cluster string
	// Node is the target's node name where it is known (the gateway's).
	Node string
	// Address is the target's address and, for UDP probes, the
	// responder's port; an ICMP echo target's port is 0.
	Address netip.AddrPort
	Source  netip.Addr
}

// AddressString is Address as reports show it: "addr:port" for a UDP
// target, the bare address for an ICMP one.
func (t Target) AddressString() string {
	if t.Address.Port() == 0 {
		return t.Address.Addr().String()
	}
	return t.Address.String()
}

// RTT is the round-trip statistics over the prober's window, as
// Submariner's route agent reports them (last, min, mean, max, stddev).
type RTT struct {
	Last, Min, Mean, Max, StdDev time.Duration
}

// TargetStatus is what is known of one target.
type TargetStatus struct {
	Target
	// Up: the last LossThreshold probes did not all go unanswered.
	Up bool
	// Since is when Up last changed (or when probing began).
	Since time.Time
	RTT   RTT
	// Sent and Lost count probes over the window the RTT covers.
	Sent, Lost uint64
	// Message says why the target is down, in words an operator can act on.
	Message string
}

// Snapshot is the whole health picture of one node at one time. Targets
// are sorted by Name.
type Snapshot struct {
	At      time.Time
	Node    string
	Cluster string
	Targets []TargetStatus
}
