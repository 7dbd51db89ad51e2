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

// remoteGatewayIP is the address weft's cable reaches a remote gateway at,
// following Submariner's rules when no NAT discovery has run (its
// "legacy NAT settings"): the public IP when the remote Endpoint says
// nat_enabled or that it sits behind a load balancer
// (backend_config using-loadbalancer), else the private IP. weft does not
// probe both addresses as Submariner's NAT discovery does.
func remoteGatewayIP(e *Endpoint) (netip.Addr, string, error) {
	usePublic := e.Spec.NATEnabled || e.Spec.BackendConfig["using-loadbalancer"] == "true"
	field, raw := "private_ip", e.Spec.PrivateIP
	if usePublic {
		field, raw = "public_ip", e.Spec.PublicIP
	}
	ip, err := netip.ParseAddr(raw)
	if err != nil || !ip.Is4() {
		return netip.Addr{}, field, fmt.Errorf("spec.%s %q is not an IPv4 address", field, raw)
	}
	return ip, field, nil
}

// build turns the cached objects into a topology: the Nodes, the local
// cluster's newest Endpoint as the gateway, every other cluster's newest
// Endpoint as a remote. Unusable items are skipped and named in Problems.
func build(clusterID string, nodes []*corev1.Node, eps []*Endpoint) toposource.Topology {
	t := toposource.Topology{Source: toposource.Kubernetes}
	for _, n := range nodes {
		ips := nodeIPs(n)
		if !ips[0].IsValid() {
			// An IPv6-only node needs an IPv6 VXLAN underlay, which
			// only a file topology selects so far (cluster.nodes[].ip6).
			why := "no InternalIP"
			if ips[1].IsValid() {
				why = "only an IPv6 InternalIP (" + ips[1].String() + "; IPv6-only clusters need topology: file for now)"
			}
			t.Problems = append(t.Problems, fmt.Sprintf("Node %s has no IPv4 InternalIP, %s: not a member until it has one", n.Name, why))
			continue
		}
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
			if ip, err := netip.ParseAddr(e.Spec.PrivateIP); err == nil && ip.Is4() {
				gw.IP = ip
			} else {
				t.Problems = append(t.Problems, fmt.Sprintf("%s: spec.private_ip %q is not an IPv4 address", ref, e.Spec.PrivateIP))
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
		if hc := e.Spec.HealthCheckIP; hc != "" {
			if ip, err := netip.ParseAddr(hc); err == nil && ip.Is4() {
				r.HealthCheckIP = ip
			} else {
				t.Problems = append(t.Problems, fmt.Sprintf("%s: spec.healthCheckIP %q is not an IPv4 address: the path to %q is not probed", ref, hc, id))
			}
		}
		ip, field, err := remoteGatewayIP(e)
		if err != nil {
			t.Problems = append(t.Problems, fmt.Sprintf("%s: %v: the cable cannot reach remote %q", ref, err, id))
		} else {
			r.GatewayIP = ip
			if field == "public_ip" {
				r.From += " (public_ip)"
			}
		}
		t.Remotes = append(t.Remotes, r)
	}
	return t
}
