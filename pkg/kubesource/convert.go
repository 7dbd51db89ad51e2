package kubesource

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-net/weft/pkg/toposource"
)

// stripNode is the Node store's transform: it keeps the name, the
// resource version (the reflector resumes watches from it) and the first
// InternalIP of each family, and drops everything else (labels, images, conditions,
// managed fields: several KiB per Node) before the object is cached, so
// that 5,000 Nodes cost a few hundred KiB.
func stripNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil // a tombstone (DeletedFinalStateUnknown) is kept as is
	}
	out := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, ResourceVersion: n.ResourceVersion}}
	for _, ip := range nodeIPs(n) {
		if ip.IsValid() {
			out.Status.Addresses = append(out.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()})
		}
	}
	return out, nil
}

// nodeIPs is the Node's first IPv4 and first IPv6 InternalIP (kubelet
// lists the primary family first on a dual-stack node; weft wants one
// of each); either may be invalid. Link-local IPv6 addresses are not
// node addresses another node can reach.
func nodeIPs(n *corev1.Node) [2]netip.Addr {
	var out [2]netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		switch {
		case err != nil || ip.Zone() != "":
		case ip.Is4() && !out[0].IsValid():
			out[0] = ip
		case ip.Is6() && !ip.Is4In6() && !ip.IsLinkLocalUnicast() && !out[1].IsValid():
			out[1] = ip
		}
	}
	return out
}

// stripEndpoint is the Endpoint store's transform: it drops annotations,
// labels and managed fields, keeping what identifies and orders Endpoints.
func stripEndpoint(obj any) (any, error) {
	e, ok := obj.(*Endpoint)
	if !ok {
		return obj, nil
	}
	out := &Endpoint{
		ObjectMeta: metav1.ObjectMeta{
			Name: e.Name, Namespace: e.Namespace, ResourceVersion: e.ResourceVersion,
			UID: e.UID, CreationTimestamp: e.CreationTimestamp,
		},
		Spec: e.Spec,
	}
	return out, nil
}

func endpointRef(e *Endpoint) string { return "Endpoint " + e.Namespace + "/" + e.Name }

// newest returns, for each cluster ID, the Endpoint Submariner considers
// current: the most recently created (ties broken by name, so every node
// picks the same one). During a gateway failover the new gateway's
// Endpoint can appear before the old one is deleted; the older one's
// later deletion then changes nothing, since only the set is looked at.
func newest(eps []*Endpoint) map[string]*Endpoint {
	out := map[string]*Endpoint{}
	for _, e := range eps {
		id := e.Spec.ClusterID
		cur, ok := out[id]
		if !ok || newer(e, cur) {
			out[id] = e
		}
	}
	return out
}

func newer(a, b *Endpoint) bool {
	ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time
	if !ta.Equal(tb) {
		return ta.After(tb)
	}
	return a.Name > b.Name
}

// endpointIPs reads one address of a Submariner Endpoint per family, the
// way Submariner's EndpointSpec.Get*IP(family) does: the dual-stack list
// (privateIPs, publicIPs, healthCheckIPs) first, then for IPv4 the older
// single field (private_ip, public_ip, healthCheckIP). An IPv6 address in
// the single field, which Submariner itself never writes, is taken as the
// IPv6 one when the list has none. Entries that are no address are named
// in problems.
func endpointIPs(ref, listField string, list []string, singleField, single string) (v4, v6 netip.Addr, problems []string) {
	take := func(field, raw string) {
		ip, err := netip.ParseAddr(raw)
		switch {
		case err != nil || ip.Is4In6():
			problems = append(problems, fmt.Sprintf("%s: spec.%s %q is not an IP address", ref, field, raw))
		case !reachable(ip):
			problems = append(problems, fmt.Sprintf("%s: spec.%s %q is not a global unicast address", ref, field, raw))
		case ip.Is4() && !v4.IsValid():
			v4 = ip
		case ip.Is6() && !v6.IsValid():
			v6 = ip
		}
	}
	for i, raw := range list {
		take(fmt.Sprintf("%s[%d]", listField, i), raw)
	}
	if single != "" {
		take(singleField, single)
	}
	return v4, v6, problems
}

// reachable: an address another host can be sent to (no loopback,
// link-local, multicast or unspecified address, no zone).
func reachable(ip netip.Addr) bool { return ip.IsGlobalUnicast() && ip.Zone() == "" }

// remoteGatewayIPs are the addresses weft's cable reaches a remote gateway
// at, one per family, following Submariner's rules when no NAT discovery
// has run (its "legacy NAT settings"): the public IPs when the remote
// Endpoint says nat_enabled or that it sits behind a load balancer
// (backend_config using-loadbalancer), else the private IPs. weft does not
// probe both addresses as Submariner's NAT discovery does. Which family
// the cable uses is the local cluster's underlay's (toposource.Apply).
func remoteGatewayIPs(ref string, s EndpointSpec) (v4, v6 netip.Addr, public bool, problems []string) {
	public = s.NATEnabled || s.BackendConfig["using-loadbalancer"] == "true"
	if public {
		v4, v6, problems = endpointIPs(ref, "publicIPs", s.PublicIPs, "public_ip", s.PublicIP)
	} else {
		v4, v6, problems = endpointIPs(ref, "privateIPs", s.PrivateIPs, "private_ip", s.PrivateIP)
	}
	return v4, v6, public, problems
}

// build turns the cached objects into a topology: the Nodes, the local
// cluster's newest Endpoint as the gateway, every other cluster's newest
// Endpoint as a remote. Unusable items are skipped and named in Problems.
func build(clusterID string, nodes []*corev1.Node, eps []*Endpoint) toposource.Topology {
	t := toposource.Topology{Source: toposource.Kubernetes}
	for _, n := range nodes {
		ips := nodeIPs(n)
		if !ips[0].IsValid() && !ips[1].IsValid() {
			t.Problems = append(t.Problems, fmt.Sprintf("Node %s has no usable InternalIP (IPv4, or global IPv6): not a member until it has one", n.Name))
			continue
		}
		// Which family the cluster's underlay is, and so whether a node
		// with one family only can be a member, is toposource.Apply's
		// decision: it knows the cluster's pod CIDRs.
		t.Nodes = append(t.Nodes, toposource.Node{Name: n.Name, IP: ips[0], IP6: ips[1], From: "Node/" + n.Name})
	}
	slices.SortFunc(t.Nodes, func(a, b toposource.Node) int { return strings.Compare(a.Name, b.Name) })

	byCluster := newest(eps)
	ids := slices.Sorted(maps.Keys(byCluster))
	for _, id := range ids {
		e := byCluster[id]
		ref := endpointRef(e)
		if id == "" {
			t.Problems = append(t.Problems, ref+" has no spec.cluster_id: ignored")
			continue
		}
		if id == clusterID {
			gw := toposource.Gateway{Name: e.Spec.Hostname, From: ref}
			var ps []string
			gw.IP, gw.IP6, ps = endpointIPs(ref, "privateIPs", e.Spec.PrivateIPs, "private_ip", e.Spec.PrivateIP)
			t.Problems = append(t.Problems, ps...)
			if !gw.IP.IsValid() && !gw.IP6.IsValid() && len(ps) == 0 {
				t.Problems = append(t.Problems, ref+": neither spec.privateIPs nor spec.private_ip gives an address: the gateway is found by its hostname only")
			}
			if gw.Name == "" {
				t.Problems = append(t.Problems, ref+" has no spec.hostname: no gateway")
				continue
			}
			t.Gateway = gw
			continue
		}
		r := toposource.Remote{ID: id, From: ref}
		for i, s := range e.Spec.Subnets {
			p, err := netip.ParsePrefix(s)
			switch {
			case err != nil:
				t.Problems = append(t.Problems, fmt.Sprintf("%s: spec.subnets[%d] %q is not a CIDR: skipped", ref, i, s))
			default:
				// IPv6 subnets too: the desired-state computation routes
				// them when the local cluster has IPv6 pods and names them
				// as not routed otherwise, never drops them silently.
				r.CIDRs = append(r.CIDRs, p.Masked())
			}
		}
		if len(r.CIDRs) == 0 {
			t.Problems = append(t.Problems, fmt.Sprintf("%s: no subnets: remote %q ignored", ref, id))
			continue
		}
		hc4, hc6, ps := endpointIPs(ref, "healthCheckIPs", e.Spec.HealthCheckIPs, "healthCheckIP", e.Spec.HealthCheckIP)
		for _, p := range ps {
			t.Problems = append(t.Problems, fmt.Sprintf("%s: the path to %q is not probed", p, id))
		}
		r.HealthCheckIP, r.HealthCheckIP6 = hc4, hc6
		v4, v6, public, ps := remoteGatewayIPs(ref, e.Spec)
		r.GatewayIP, r.GatewayIP6 = v4, v6
		none := !v4.IsValid() && !v6.IsValid()
		for _, p := range ps {
			if none {
				p += fmt.Sprintf(": the cable cannot reach remote %q", id)
			}
			t.Problems = append(t.Problems, p)
		}
		switch {
		case none && len(ps) > 0:
		case none:
			fields := "spec.privateIPs and spec.private_ip"
			if public {
				fields = "spec.publicIPs and spec.public_ip"
			}
			t.Problems = append(t.Problems, fmt.Sprintf("%s: no address in %s: the cable cannot reach remote %q", ref, fields, id))
		case public:
			r.From += " (public_ip)"
		}
		t.Remotes = append(t.Remotes, r)
	}
	return t
}
