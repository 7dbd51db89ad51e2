package healthpublish

import (
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-net/weft/pkg/kubesource"
	"github.com/weft-net/weft/pkg/pathhealth"
)

// EndpointLookup returns the remote cluster's current Submariner Endpoint
// spec (kubesource.Source.RemoteEndpoint), so that each RouteAgent
// remoteEndpoints[].spec is the Endpoint's own, as Submariner writes it.
type EndpointLookup func(clusterID string) (kubesource.EndpointSpec, bool)

// latency formats one RTT as Submariner's pinger does.
func latency(r pathhealth.RTT) LatencyRTTSpec {
	return LatencyRTTSpec{Last: r.Last.String(), Min: r.Min.String(), Average: r.Mean.String(), Max: r.Max.String(), StdDev: r.StdDev.String()}
}

// describe names a target's hop for an operator: which piece of the path
// it checks, and where it ends.
func describe(t pathhealth.TargetStatus) string {
	switch t.Hop {
	case pathhealth.HopGateway:
		return fmt.Sprintf("this node → gateway %s (%s)", orAddr(t.Node, t), t.AddressString())
	case pathhealth.HopCable:
		return fmt.Sprintf("gateway → remote gateway of %s (%s)", t.Cluster, t.AddressString())
	case pathhealth.HopRemote:
		return fmt.Sprintf("this node → cluster %s through the gateway (%s)", t.Cluster, t.AddressString())
	}
	return fmt.Sprintf("%s %s (%s)", t.Hop, t.Name, t.AddressString())
}

func orAddr(node string, t pathhealth.TargetStatus) string {
	if node != "" {
		return node
	}
	return t.Address.Addr().String()
}

func down(t pathhealth.TargetStatus) string {
	s := describe(t) + " unreachable"
	if t.Message != "" {
		s += ": " + t.Message
	}
	return s
}

// remoteTargets groups the targets that reach remote clusters (the whole
// path, and the cable from the gateway) by cluster, in cluster order.
func remoteTargets(s pathhealth.Snapshot) (ids []string, by map[string][]pathhealth.TargetStatus) {
	by = map[string][]pathhealth.TargetStatus{}
	for _, t := range s.Targets {
		if t.Hop != pathhealth.HopRemote && t.Hop != pathhealth.HopCable {
			continue
		}
		if _, ok := by[t.Cluster]; !ok {
			ids = append(ids, t.Cluster)
		}
		by[t.Cluster] = append(by[t.Cluster], t)
	}
	slices.Sort(ids)
	return ids, by
}

func gatewayTargets(s pathhealth.Snapshot) []pathhealth.TargetStatus {
	var out []pathhealth.TargetStatus
	for _, t := range s.Targets {
		if t.Hop == pathhealth.HopGateway {
			out = append(out, t)
		}
	}
	return out
}

// routeAgentStatus is the RouteAgent status for a snapshot: one
// remoteEndpoints entry per remote cluster probed, with the remote
// Endpoint's spec, connected when every target of that cluster answers,
// and the RTT of the whole path (node → remote gateway, what Submariner's
// route agent pings), or of the cable where that is all this node probes
// (the gateway).
func routeAgentStatus(s pathhealth.Snapshot, version string, lookup EndpointLookup) RouteAgentStatus {
	st := RouteAgentStatus{Version: version, RemoteEndpoints: []RemoteEndpoint{}}
	ids, by := remoteTargets(s)
	gwDown := []string{}
	for _, g := range gatewayTargets(s) {
		if !g.Up {
			gwDown = append(gwDown, down(g))
		}
	}
	for _, id := range ids {
		ts := by[id]
		e := RemoteEndpoint{Status: Connected}
		primary := ts[0]
		for _, t := range ts {
			if t.Hop == pathhealth.HopRemote {
				primary = t
				break
			}
		}
		var msgs []string
		sent := uint64(0)
		for _, t := range ts {
			sent += t.Sent
			if !t.Up {
				msgs = append(msgs, down(t))
			}
		}
		switch {
		case len(msgs) > 0 && sent == 0:
			e.Status, msgs = Connecting, []string{"no probe sent yet"}
		case len(msgs) > 0:
			// The remote is out of reach; if the way to the own gateway is
			// broken too, that is the hop to look at first.
			e.Status, msgs = ConnectionError, append(slices.Clone(gwDown), msgs...)
		case !measured(primary):
			// Not lost, not answered yet either (a prober starts with its
			// targets up): "connected" would come with an RTT of 0s until
			// the next refresh.
			e.Status, msgs = Connecting, []string{"no probe answered yet"}
		}
		e.StatusMessage = strings.Join(msgs, "; ")
		l := latency(primary.RTT)
		e.LatencyRTT = &l
		e.Spec = EndpointSpec{ClusterID: id, Hostname: primary.Node, Subnets: []string{}, PrivateIP: primary.Address.Addr().String()}
		if a := primary.Address.Addr(); a.Is6() {
			// private_ip is IPv4 in Submariner's schema: an IPv6
			// address goes in the dual-stack list.
			e.Spec.PrivateIP, e.Spec.PrivateIPs = "", []string{a.String()}
		}
		if lookup != nil {
			if spec, ok := lookup(id); ok {
				e.Spec = endpointSpecOf(spec)
			}
		}
		st.RemoteEndpoints = append(st.RemoteEndpoints, e)
	}
	return st
}

// measured: the target's RTT comes from at least one answered probe.
func measured(t pathhealth.TargetStatus) bool { return t.RTT.Last > 0 }

// routeAgentShape is what of a RouteAgent status counts as a change: not
// the RTT figures, which move with every probe.
func routeAgentShape(st RouteAgentStatus) RouteAgentStatus {
	out := st
	out.RemoteEndpoints = slices.Clone(st.RemoteEndpoints)
	for i := range out.RemoteEndpoints {
		out.RemoteEndpoints[i].LatencyRTT = nil
	}
	return out
}

// nodePathStatus is the NodePath status for a snapshot; prev (the last
// written conditions) keeps each condition's transition time while its
// status holds.
func nodePathStatus(s pathhealth.Snapshot, prev []metav1.Condition) NodePathStatus {
	// A zero time is JSON null, which the schema's required date-times
	// refuse: the snapshot's time stands in.
	at := metav1.NewTime(s.At.UTC().Truncate(time.Second))
	st := NodePathStatus{Node: s.Node, Cluster: s.Cluster, ObservedTime: at, Targets: []PathTarget{}}
	for _, t := range s.Targets {
		since := at
		if !t.Since.IsZero() {
			since = metav1.NewTime(t.Since.UTC().Truncate(time.Second))
		}
		p := PathTarget{
			Name: t.Name, Hop: string(t.Hop), Cluster: t.Cluster, Node: t.Node, Address: t.AddressString(),
			Up: t.Up, Since: since, RTT: latency(t.RTT), Sent: int64(t.Sent), Lost: int64(t.Lost), Message: t.Message,
		}
		if t.Source.IsValid() {
			p.Source = t.Source.String()
		}
		st.Targets = append(st.Targets, p)
	}
	st.Conditions = []metav1.Condition{gatewayCondition(s), remotesCondition(s)}
	for i := range st.Conditions {
		c := &st.Conditions[i]
		c.LastTransitionTime = at
		for _, p := range prev {
			if p.Type == c.Type && p.Status == c.Status {
				c.LastTransitionTime = p.LastTransitionTime
			}
		}
	}
	return st
}

func gatewayCondition(s pathhealth.Snapshot) metav1.Condition {
	c := metav1.Condition{Type: CondGatewayReachable}
	gws := gatewayTargets(s)
	if len(gws) == 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, "NotProbed", "this node probes no gateway (it is the gateway, or none is known)"
		return c
	}
	var bad, good []string
	for _, g := range gws {
		if g.Up {
			good = append(good, describe(g))
		} else {
			bad = append(bad, down(g))
		}
	}
	if len(bad) > 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "GatewayUnreachable", strings.Join(bad, "; ")
		return c
	}
	c.Status, c.Reason, c.Message = metav1.ConditionTrue, "Reachable", strings.Join(good, "; ")+" answers"
	return c
}

func remotesCondition(s pathhealth.Snapshot) metav1.Condition {
	c := metav1.Condition{Type: CondRemotesReachable}
	ids, by := remoteTargets(s)
	if len(ids) == 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, "NotProbed", "no remote cluster is probed"
		return c
	}
	gatewayDown := false
	for _, g := range gatewayTargets(s) {
		gatewayDown = gatewayDown || !g.Up
	}
	var bad []string
	reason := ""
	for _, id := range ids {
		for _, t := range by[id] {
			if t.Up {
				continue
			}
			bad = append(bad, down(t))
			switch {
			case gatewayDown:
				reason = "GatewayUnreachable"
			case t.Hop == pathhealth.HopCable && reason == "":
				reason = "CableDown"
			case reason == "":
				reason = "RemoteUnreachable"
			}
		}
	}
	if len(bad) > 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, reason, strings.Join(bad, "; ")
		return c
	}
	c.Status, c.Reason, c.Message = metav1.ConditionTrue, "Reachable", "clusters "+strings.Join(ids, ", ")+" answer"
	return c
}

// nodePathKey is what of a NodePath status counts as a change: the
// targets and their state, whether each has a measured RTT yet, the
// conditions; not the RTT figures, the probe counts or the snapshot's time.
type nodePathKey struct {
	status   NodePathStatus
	measured []bool
}

func nodePathShape(st NodePathStatus) nodePathKey {
	k := nodePathKey{status: st, measured: make([]bool, len(st.Targets))}
	k.status.ObservedTime = metav1.Time{}
	k.status.Targets = slices.Clone(st.Targets)
	for i := range k.status.Targets {
		t := &k.status.Targets[i]
		k.measured[i] = t.RTT.Last != "" && t.RTT.Last != time.Duration(0).String()
		t.RTT, t.Sent, t.Lost = LatencyRTTSpec{}, 0, 0
	}
	return k
}
