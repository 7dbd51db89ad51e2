package pathprobe

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/pathhealth"
	"github.com/weft-net/weft/pkg/topology"
)

// Plan is what the node probes and answers, derived from the
// configuration and the facts of the last reconcile pass.
type Plan struct {
	Enabled bool
	Timing  Timing
	Role    string
	// VXLANPort and CablePort name the ports a broken hop's fix mentions.
	VXLANPort, CablePort uint16
	Targets              []pathhealth.Target
}

// Target names.
func gatewayTarget(node string) string { return "gateway/" + node }
func remoteTarget(id string) string    { return "remote/" + id }
func cableTarget(id string) string     { return "cable/" + id }

// PlanFor computes the plan of a node: cfg is the effective configuration
// (the topology source applied), in the inputs the pass computed the
// desired state from, role the node's role in it.
//
//   - a non-gateway node probes its gateway's VTEP over vx-weft
//     (HopGateway), from its own VTEP;
//   - every node probes each remote whose health-check IP is known, from
//     its CNI interface IP of that family: the route's source, so the
//     probe takes weft's routes exactly as pod and host-network traffic
//     does (HopRemote);
//   - a gateway with cable: vxlan probes each remote gateway's cable VTEP
//     over vx-weft-cable (HopCable).
//
// A VTEP hop is probed over IPv4 where the cluster has IPv4 VTEPs, else
// over IPv6 (an IPv6-only cluster). With protocol icmp a target's port is
// 0: the probe is an echo request its kernel answers.
func PlanFor(cfg *config.Config, in topology.Inputs, role string) Plan {
	h := cfg.HealthCheck
	p := Plan{
		Enabled: h.On(), Role: role, VXLANPort: cfg.VXLAN.Port, CablePort: cfg.CableVXLAN.Port,
		Timing: Timing{Protocol: h.Protocol, Port: h.Port, Interval: h.Interval.Duration, Fast: h.FastInterval.Duration, LossThreshold: h.LossThreshold},
	}
	if !p.Enabled || !in.NodeIP.IsValid() {
		return p
	}
	port := uint16(0)
	if h.UDP() {
		port = h.Port
	}
	at := func(a netip.Addr) netip.AddrPort { return netip.AddrPortFrom(a, port) }
	// pair is the (source, destination) VTEPs of one family both ends have.
	pair := func(self, peer netip.Addr, cable bool) (src, dst netip.Addr, ok bool) {
		s4, s6 := topology.VTEPsOf(cfg.Parsed, self, cable)
		d4, d6 := topology.VTEPsOf(cfg.Parsed, peer, cable)
		switch {
		case s4.IsValid() && d4.IsValid():
			return s4, d4, true
		case s6.IsValid() && d6.IsValid():
			return s6, d6, true
		}
		return netip.Addr{}, netip.Addr{}, false
	}
	pp := cfg.Parsed
	if role == topology.RoleNonGateway {
		for _, n := range pp.Nodes {
			if n.Name != cfg.Cluster.Gateway {
				continue
			}
			if src, dst, ok := pair(in.NodeIP, topology.UnderlayOf(pp, n), false); ok {
				p.Targets = append(p.Targets, pathhealth.Target{
					Name: gatewayTarget(n.Name), Hop: pathhealth.HopGateway, Cluster: cfg.Cluster.ID, Node: n.Name,
					Address: at(dst), Source: src,
				})
			}
			break
		}
	}
	for _, r := range pp.Remotes {
		// One whole-path probe per family the remote names a target of and
		// this node has a CNI address of: a dual-stack remote's IPv6 path
		// can break alone (its routes, its SNAT, an IPv6 filter).
		named := false
		for _, dst := range []netip.Addr{r.HealthCheckIP, r.HealthCheckIP6} {
			src := in.CNIIP
			if dst.Is6() {
				src = in.CNIIP6
			}
			if !dst.IsValid() || !src.IsValid() {
				continue
			}
			name := remoteTarget(r.ID)
			if named {
				name += "/ipv6"
			}
			named = true
			p.Targets = append(p.Targets, pathhealth.Target{
				Name: name, Hop: pathhealth.HopRemote, Cluster: r.ID,
				Address: at(dst), Source: src,
			})
		}
		if role != topology.RoleGateway || cfg.Cable != config.CableVXLAN || r.GatewayIP.Is6() != in.NodeIP.Is6() {
			continue
		}
		if src, dst, ok := pair(in.NodeIP, r.GatewayIP, true); ok {
			p.Targets = append(p.Targets, pathhealth.Target{
				Name: cableTarget(r.ID), Hop: pathhealth.HopCable, Cluster: r.ID,
				Address: at(dst), Source: src,
			})
		}
	}
	slices.SortFunc(p.Targets, func(a, b pathhealth.Target) int { return strings.Compare(a.Name, b.Name) })
	return p
}

// Equal reports whether two plans are the same.
func (p Plan) Equal(o Plan) bool {
	t1, t2 := p.Targets, o.Targets
	p.Targets, o.Targets = nil, nil
	return p.Role == o.Role && p.Enabled == o.Enabled && p.Timing == o.Timing &&
		p.VXLANPort == o.VXLANPort && p.CablePort == o.CablePort && slices.Equal(t1, t2)
}

// probeWhat names what the probes are, for a fix line.
func (t Timing) probeWhat() string {
	if t.Protocol == config.HealthCheckUDP {
		return "UDP " + strconv.Itoa(int(t.Port)) + " for the probes"
	}
	return "ICMP echo for the probes"
}

// responderNote is what must run on the far side, for a fix line.
func (t Timing) responderNote() string {
	if t.udp() {
		return ", and weftd must run there"
	}
	return ""
}
