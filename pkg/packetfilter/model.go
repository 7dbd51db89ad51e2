// Package packetfilter holds the domain model of weft's packet-filter rules
// and the interface both backends (nftables, iptables) implement. The model is
// domain data, not a rule language: each backend renders it its own way.
package packetfilter

import (
	"context"
	"errors"
	"fmt"
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
	// LocalCIDRs are the local cluster's pod and service CIDRs, of either
	// family: each backend renders each family into its own objects (the
	// IPv6 ones exist only while the model holds an IPv6 CIDR, so an
	// IPv4-only model renders exactly what weft rendered before IPv6).
	LocalCIDRs []netip.Prefix
	// RemoteCIDRs are every remote cluster's pod and service CIDRs, of
	// either family.
	RemoteCIDRs []netip.Prefix
	// Devices are weft's own device names (vx-weft, and vx-weft-cable on a
	// gateway with cable: vxlan).
	Devices []string
	// CNIIP is the node's CNI interface IPv4 address; invalid while unknown,
	// in which case the IPv4 host-network SNAT rule is not rendered.
	CNIIP netip.Addr
	// CNIIP6 is the CNI interface's IPv6 address (inside the IPv6 pod
	// CIDR), the source of host-network IPv6 traffic to remote clusters;
	// invalid while unknown or on an IPv4-only node.
	CNIIP6 netip.Addr
	// VXLANPorts are the UDP ports of weft's VXLAN devices.
	VXLANPorts []uint16
	// HealthCheckPort is the UDP port of weftd's health-check responder
	// (0 = none): accepted in the input chain like the VXLAN ports.
	HealthCheckPort uint16
	MSS             MSS
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
		slices.Equal(m.Devices, o.Devices) && m.CNIIP == o.CNIIP && m.CNIIP6 == o.CNIIP6 &&
		slices.Equal(m.VXLANPorts, o.VXLANPorts) && m.HealthCheckPort == o.HealthCheckPort && m.MSS == o.MSS
}

// Split returns the IPv4 and the IPv6 prefixes of ps, in their order.
// IPv4-mapped IPv6 prefixes (::ffff:a.b.c.d/n, n >= 96) count as IPv4; a
// shorter one cannot be either and is returned in bad.
func Split(ps []netip.Prefix) (v4, v6, bad []netip.Prefix) {
	for _, p := range ps {
		a := p.Addr()
		switch {
		case !p.IsValid():
			bad = append(bad, p)
		case a.Is4():
			v4 = append(v4, p)
		case a.Is4In6():
			if p.Bits() < 96 {
				bad = append(bad, p)
				continue
			}
			v4 = append(v4, netip.PrefixFrom(a.Unmap(), p.Bits()-96))
		default:
			v6 = append(v6, p)
		}
	}
	return v4, v6, bad
}

// CheckCIDRs returns an error naming the first local or remote CIDR that
// is neither IPv4 nor IPv6 (invalid, or IPv4-mapped with fewer than 96
// bits). It allocates nothing: every Apply calls it on 20,000 CIDRs.
func (m Model) CheckCIDRs() error {
	for _, ps := range [][]netip.Prefix{m.LocalCIDRs, m.RemoteCIDRs} {
		for _, p := range ps {
			if !p.IsValid() || (p.Addr().Is4In6() && p.Bits() < 96) {
				return fmt.Errorf("CIDR %v is neither IPv4 nor IPv6", p)
			}
		}
	}
	return nil
}

// HasIPv6 reports whether the model holds an IPv6 CIDR, i.e. whether the
// backends render their IPv6 objects at all.
func (m Model) HasIPv6() bool {
	for _, ps := range [][]netip.Prefix{m.LocalCIDRs, m.RemoteCIDRs} {
		for _, p := range ps {
			if p.IsValid() && p.Addr().Is6() && !p.Addr().Is4In6() {
				return true
			}
		}
	}
	return false
}
