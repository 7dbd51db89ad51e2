package pathprobe

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/pathhealth"
	"github.com/weft-net/weft/pkg/topology"
)

// Plan is what the node probes and answers, derived from the
// configuration and the facts of the last reconcile pass.
type Plan struct {
	Enabled       bool
	Port          uint16
	Interval      time.Duration
	LossThreshold int
	Role          string
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
//     its CNI interface IP: the route's source, so the probe takes weft's
//     routes exactly as pod and host-network traffic does (HopRemote);
//   - a gateway with cable: vxlan probes each remote gateway's cable VTEP
//     over vx-weft-cable (HopCable).
func PlanFor(cfg *config.Config, in topology.Inputs, role string) Plan {
	h := cfg.HealthCheck
	p := Plan{
		Enabled: h.On(), Port: h.Port, Interval: h.Interval.Duration, LossThreshold: h.LossThreshold, Role: role,
		VXLANPort: cfg.VXLAN.Port, CablePort: cfg.CableVXLAN.Port,
	}
	if !p.Enabled || !in.NodeIP.Is4() {
		return p
	}
	at := func(a netip.Addr) netip.AddrPort { return netip.AddrPortFrom(a, h.Port) }
	pp := cfg.Parsed
	if role == topology.RoleNonGateway {
		for _, n := range pp.Nodes {
			if n.Name == cfg.Cluster.Gateway {
				p.Targets = append(p.Targets, pathhealth.Target{
					Name: gatewayTarget(n.Name), Hop: pathhealth.HopGateway, Cluster: cfg.Cluster.ID, Node: n.Name,
					Address: at(topology.VTEPIP(pp.VTEPCIDR, n.IP)), Source: topology.VTEPIP(pp.VTEPCIDR, in.NodeIP),
				})
				break
			}
		}
	}
	for _, r := range pp.Remotes {
		if r.HealthCheckIP.Is4() && in.CNIIP.Is4() {
			p.Targets = append(p.Targets, pathhealth.Target{
				Name: remoteTarget(r.ID), Hop: pathhealth.HopRemote, Cluster: r.ID,
				Address: at(r.HealthCheckIP), Source: in.CNIIP,
			})
		}
		if role == topology.RoleGateway && cfg.Cable == config.CableVXLAN && r.GatewayIP.Is4() {
			p.Targets = append(p.Targets, pathhealth.Target{
				Name: cableTarget(r.ID), Hop: pathhealth.HopCable, Cluster: r.ID,
				Address: at(topology.VTEPIP(pp.CableCIDR, r.GatewayIP)), Source: topology.VTEPIP(pp.CableCIDR, in.NodeIP),
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
	return p.Role == o.Role && p.Enabled == o.Enabled && p.Port == o.Port && p.Interval == o.Interval &&
		p.LossThreshold == o.LossThreshold && p.VXLANPort == o.VXLANPort && p.CablePort == o.CablePort && slices.Equal(t1, t2)
}
