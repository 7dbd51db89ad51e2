package pathprobe

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/pathhealth"
	"github.com/weft-net/weft/pkg/topology"
)

// Condition types of the data-path health.
const (
	CondGatewayReachable = "GatewayReachable"
	CondRemotesReachable = "RemotesReachable"
)

// Report is what a snapshot means for status: the per-target detail and
// the two conditions, each failing one naming the hop that breaks and
// what to check. It never touches readiness.
func Report(s pathhealth.Snapshot, p Plan) (*api.PathHealth, []api.Condition) {
	h := &api.PathHealth{At: s.At, Protocol: p.Timing.Protocol, IntervalMs: ms(p.Timing.Interval), FastIntervalMs: ms(p.Timing.Fast), LossThreshold: p.Timing.LossThreshold, Targets: make([]api.PathTarget, 0, len(s.Targets))}
	byName := map[string]pathhealth.TargetStatus{}
	for _, t := range s.Targets {
		byName[t.Name] = t
		pt := api.PathTarget{
			Name: t.Name, Hop: string(t.Hop), Cluster: t.Cluster, Node: t.Node, Address: t.AddressString(),
			Up: t.Up, Since: t.Since, Sent: t.Sent, Lost: t.Lost, Message: t.Message,
			RTT: api.PathRTT{LastMs: ms(t.RTT.Last), MinMs: ms(t.RTT.Min), MeanMs: ms(t.RTT.Mean), MaxMs: ms(t.RTT.Max), StdDevMs: ms(t.RTT.StdDev)},
		}
		if t.Source.IsValid() {
			pt.Source = t.Source.String()
		}
		h.Targets = append(h.Targets, pt)
	}
	return h, []api.Condition{gatewayCond(s, p), remotesCond(s, p, byName)}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func gatewayCond(s pathhealth.Snapshot, p Plan) api.Condition {
	c := api.Condition{Type: CondGatewayReachable}
	if p.Role == topology.RoleGateway {
		c.Status, c.Reason, c.Message = true, "ThisNodeIsGateway", "this node is the gateway"
		return c
	}
	for _, t := range s.Targets {
		if t.Hop != pathhealth.HopGateway {
			continue
		}
		if t.Up {
			c.Status, c.Reason, c.Message = true, "Answering", fmt.Sprintf("this node → gateway %s (%s) answers", t.Node, t.Address.Addr())
			return c
		}
		c.Reason = "NoAnswer"
		c.Message = fmt.Sprintf("this node → gateway %s (VTEP %s) is broken since %s: %s", t.Node, t.Address.Addr(), t.Since.Format(time.RFC3339Nano), t.Message)
		c.Fix = fmt.Sprintf("check the underlay between this node and gateway %s (UDP %d for VXLAN and %s must pass both ways, and weftd must run there: `weftd status` on it); this node elects nothing itself, the gateway Lease (or Submariner) decides a failover",
			t.Node, p.VXLANPort, p.Timing.probeWhat())
		return c
	}
	c.Status, c.Reason, c.Message = true, "NotProbed", "no gateway to probe yet"
	return c
}

func remotesCond(s pathhealth.Snapshot, p Plan, byName map[string]pathhealth.TargetStatus) api.Condition {
	c := api.Condition{Type: CondRemotesReachable}
	clusters := map[string]bool{}
	var gw *pathhealth.TargetStatus
	for _, t := range s.Targets {
		switch t.Hop {
		case pathhealth.HopRemote, pathhealth.HopCable:
			clusters[t.Cluster] = true
		case pathhealth.HopGateway:
			gw = &t
		}
	}
	if len(clusters) == 0 {
		c.Status, c.Reason, c.Message = true, "NotProbed", "no remote to probe (a remote is probed once its health-check IP is known: Endpoint spec.healthCheckIP, ClusterEndpoint spec.healthCheckIP or remotes[].healthCheckIP)"
		return c
	}
	var broken, fixes, fine []string
	for _, id := range slices.Sorted(maps.Keys(clusters)) {
		cable, hasCable := byName[cableTarget(id)]
		remote, hasRemote := byName[remoteTarget(id)]
		switch {
		case hasCable && !cable.Up:
			broken = append(broken, fmt.Sprintf("gateway → remote gateway of %s (cable VTEP %s): %s", id, cable.Address.Addr(), cable.Message))
			fixes = append(fixes, fmt.Sprintf("check the underlay between this gateway and %s's gateway (UDP %d for the cable and %s) and that weftd runs there", id, p.CablePort, p.Timing.probeWhat()))
		case hasRemote && !remote.Up && gw != nil && !gw.Up:
			broken = append(broken, fmt.Sprintf("whole path to cluster %s: this node → gateway is broken (see %s)", id, CondGatewayReachable))
			fixes = append(fixes, "repair this node → gateway first")
		case hasRemote && !remote.Up:
			broken = append(broken, fmt.Sprintf("whole path to cluster %s (%s → %s): %s", id, remote.Source, remote.AddressString(), remote.Message))
			fixes = append(fixes, fmt.Sprintf("the hops this node probes itself answer: check %s's gateway (its packet filter must let %s to %s in%s) and, on this cluster's gateway, `weftd status` for its cable to %s", id, p.Timing.probeWhat(), remote.Address.Addr(), p.Timing.responderNote(), id))
		default:
			fine = append(fine, id)
		}
	}
	if len(broken) == 0 {
		c.Status, c.Reason, c.Message = true, "Answering", "answering: "+strings.Join(fine, ", ")
		return c
	}
	c.Reason = "NoAnswer"
	c.Message = strings.Join(broken, "; ")
	c.Fix = strings.Join(slices.Compact(fixes), "; ")
	return c
}
