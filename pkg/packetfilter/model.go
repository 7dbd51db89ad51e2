// Package packetfilter holds the domain model of weft's packet-filter rules
// and the interface both backends (nftables, iptables) implement. The model is
// domain data, not a rule language: each backend renders it its own way.
package packetfilter

import (
	"context"
	"errors"
	"net/netip"
	"slices"
)

// ErrDegraded marks an Apply error after which every rule that carries
// traffic (NAT, MSS) is in place and only informative rules are missing
// (e.g. the accept rules of a filter table that a foreign tool made
// unparsable for iptables). The node stays ready; the condition says why.
var ErrDegraded = errors.New("packet filter degraded")

// MSS modes.
const (
	MSSPMTU  = "pmtu"  // clamp to the route MTU
	MSSFixed = "fixed" // set to Value
)

// MSS is the TCP MSS clamping policy.
type MSS struct {
	Mode  string
	Value uint16
}

// Model is everything weft's rules depend on.
type Model struct {
	// LocalCIDRs are the local cluster's pod and service CIDRs.
	LocalCIDRs []netip.Prefix
	// RemoteCIDRs are every remote cluster's pod and service CIDRs.
	RemoteCIDRs []netip.Prefix
	// Devices are weft's own device names (vx-weft, and vx-weft-cable on a
	// gateway with cable: vxlan).
	Devices []string
	// CNIIP is the node's CNI interface IP; invalid while unknown, in which
	// case the host-network SNAT rule is not rendered.
	CNIIP netip.Addr
	// VXLANPorts are the UDP ports of weft's VXLAN devices.
	VXLANPorts []uint16
	MSS        MSS
	// Verify re-reads weft's objects from the kernel instead of trusting
	// what the last Apply wrote, so drift made behind weft's back is
	// repaired (the agent sets it on the first pass, every resync and
	// after a failure, as dataplane.State.Verify). A backend whose change
	// detection is exact anyway (nftables' ruleset generation) may ignore
	// it.
	Verify bool
}

// Finding is something a backend noticed about the host's packet filter
// that an operator should know (a foreign drop policy, an unparsable
// foreign rule, a missing kernel feature). It becomes a status condition.
type Finding struct {
	Type    string // condition type, e.g. "ForeignForwardDrop"
	Reason  string // CamelCase reason
	Message string
	Fix     string // what the operator should do
}

// Backend renders a Model into the kernel. Apply is idempotent and
// diff-based: applying the same model twice sends nothing the second time
// beyond what is needed to verify it.
type Backend interface {
	// Name is "nftables" or "iptables".
	Name() string
	// Apply makes the kernel state equal to m.
	Apply(ctx context.Context, m Model) error
	// Cleanup removes everything the backend owns. Idempotent.
	Cleanup(ctx context.Context) error
	// Findings inspects the host's packet filter outside weft's own objects
	// (read-only) and reports what an operator should know.
	Findings(ctx context.Context) []Finding
}

// Equal reports whether m and o render the same rules (Verify aside). It
// compares 20,000 CIDRs in microseconds, where reflect.DeepEqual walks
// every field of every address.
func (m Model) Equal(o Model) bool {
	return slices.Equal(m.LocalCIDRs, o.LocalCIDRs) && slices.Equal(m.RemoteCIDRs, o.RemoteCIDRs) &&
		slices.Equal(m.Devices, o.Devices) && m.CNIIP == o.CNIIP &&
		slices.Equal(m.VXLANPorts, o.VXLANPorts) && m.MSS == o.MSS
}
