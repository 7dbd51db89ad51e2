package kubesource

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"

	"github.com/weft-net/weft/pkg/toposource"
)

// WeftGroupVersion is the API group of weft's own ClusterEndpoint
// (kubernetes.endpoints: weft); the CRD is daemon/deploy/05-clusterendpoint-crd.yaml.
var WeftGroupVersion = schema.GroupVersion{Group: "weft.dev", Version: "v1alpha1"}

// ClusterEndpoint is one cluster's gateway as its elected leader publishes
// it: named after the cluster's ID, in the cluster's weft namespace, and
// copied through the broker into every other cluster's.
type ClusterEndpoint struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ClusterEndpointSpec `json:"spec"`
}

// ClusterEndpointSpec is what a remote cluster needs to reach this one,
// and what this cluster's nodes need to follow its gateway.
type ClusterEndpointSpec struct {
	ClusterID    string   `json:"clusterID"`
	PodCIDRs     []string `json:"podCIDRs"`
	ServiceCIDRs []string `json:"serviceCIDRs,omitempty"`
	GatewayNode  string   `json:"gatewayNode"`
	// GatewayIP is the gateway's underlay address: its IPv4 one, or on
	// an IPv6-only gateway its IPv6 one. GatewayIP6 is a dual-stack
	// gateway's IPv6 address (weft v1alpha1 objects written before dual
	// stack have GatewayIP only).
	GatewayIP  string `json:"gatewayIP"`
	GatewayIP6 string `json:"gatewayIP6,omitempty"`
	Cable      string `json:"cable"`
	Port       int32  `json:"port,omitempty"`
	VNI        int64  `json:"vni,omitempty"`
	// HealthCheckIP is the gateway's CNI interface IP, the target of the
	// other clusters' whole-path health probes ("" while unknown): IPv4,
	// or IPv6 in a cluster without IPv4 pods. HealthCheckIP6 is the IPv6
	// one of a dual-stack cluster's gateway.
	HealthCheckIP  string `json:"healthCheckIP,omitempty"`
	HealthCheckIP6 string `json:"healthCheckIP6,omitempty"`
}

// ClusterEndpointList is a list of ClusterEndpoints.
type ClusterEndpointList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []ClusterEndpoint `json:"items"`
}

// DeepCopyInto copies e into out.
func (e *ClusterEndpoint) DeepCopyInto(out *ClusterEndpoint) {
	*out = *e
	e.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.Spec.PodCIDRs = slices.Clone(e.Spec.PodCIDRs)
	out.Spec.ServiceCIDRs = slices.Clone(e.Spec.ServiceCIDRs)
}

// DeepCopyObject implements runtime.Object.
func (e *ClusterEndpoint) DeepCopyObject() runtime.Object {
	if e == nil {
		return nil
	}
	out := new(ClusterEndpoint)
	e.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *ClusterEndpointList) DeepCopyObject() runtime.Object {
	if l == nil {
		return nil
	}
	out := &ClusterEndpointList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = make([]ClusterEndpoint, len(l.Items))
	for i := range l.Items {
		l.Items[i].DeepCopyInto(&out.Items[i])
	}
	return out
}

// AddClusterEndpointTypes registers ClusterEndpoint in a scheme.
func AddClusterEndpointTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(WeftGroupVersion, &ClusterEndpoint{}, &ClusterEndpointList{})
	metav1.AddToGroupVersion(s, WeftGroupVersion)
	return nil
}

// ClusterEndpointClient is a REST client for ClusterEndpoints (the
// election's publisher and the broker sync use it).
func ClusterEndpointClient(rc *rest.Config) (*rest.RESTClient, error) {
	return restClient(rc, WeftGroupVersion, "/apis", AddClusterEndpointTypes, false)
}

func stripClusterEndpoint(obj any) (any, error) {
	e, ok := obj.(*ClusterEndpoint)
	if !ok {
		return obj, nil
	}
	return &ClusterEndpoint{
		ObjectMeta: metav1.ObjectMeta{Name: e.Name, Namespace: e.Namespace, ResourceVersion: e.ResourceVersion, UID: e.UID, CreationTimestamp: e.CreationTimestamp},
		Spec:       e.Spec,
	}, nil
}

func clusterEndpointRef(e *ClusterEndpoint) string {
	return "ClusterEndpoint " + e.Namespace + "/" + e.Name
}

// weftIPs reads a ClusterEndpoint's address of each family from the
// field that may hold either (gatewayIP, healthCheckIP) and its IPv6
// companion (gatewayIP6, healthCheckIP6). bad names the first field that
// holds no address, or a second one of the same family.
func weftIPs(field, any, v6only string) (v4, v6 netip.Addr, bad string) {
	for _, f := range []struct{ name, raw string }{{field, any}, {field + "6", v6only}} {
		if f.raw == "" {
			continue
		}
		ip, err := netip.ParseAddr(f.raw)
		switch {
		case err != nil || ip.Is4In6() || !reachable(ip) || f.name != field && !ip.Is6():
			return v4, v6, fmt.Sprintf("spec.%s %q is not a global unicast %s address", f.name, f.raw, map[bool]string{true: "IPv6", false: "IP"}[f.name != field])
		case ip.Is4():
			v4 = ip
		case v6.IsValid():
			return v4, v6, fmt.Sprintf("spec.%s %q is a second IPv6 address", f.name, f.raw)
		default:
			v6 = ip
		}
	}
	return v4, v6, ""
}

// buildWeft is the topology of endpoints: weft: the local cluster's
// ClusterEndpoint names the gateway, every other one is a remote.
func buildWeft(clusterID string, nodes []*corev1.Node, ces []*ClusterEndpoint) toposource.Topology {
	t := build(clusterID, nodes, nil)
	slices.SortFunc(ces, func(a, b *ClusterEndpoint) int { return strings.Compare(a.Name, b.Name) })
	for _, e := range ces {
		s := e.Spec
		ref := clusterEndpointRef(e)
		gw4, gw6, bad := weftIPs("gatewayIP", s.GatewayIP, s.GatewayIP6)
		if s.ClusterID == clusterID {
			if bad != "" || s.GatewayNode == "" || !gw4.IsValid() && !gw6.IsValid() {
				t.Problems = append(t.Problems, fmt.Sprintf("%s: gateway %q/%q unusable %s", ref, s.GatewayNode, s.GatewayIP, bad))
				continue
			}
			t.Gateway = toposource.Gateway{Name: s.GatewayNode, IP: gw4, IP6: gw6, From: ref}
			continue
		}
		r := toposource.Remote{ID: s.ClusterID, From: ref}
		badCIDR := ""
		for _, c := range slices.Concat(s.PodCIDRs, s.ServiceCIDRs) {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				badCIDR = c
				break
			}
			r.CIDRs = append(r.CIDRs, p.Masked())
		}
		if badCIDR != "" || bad != "" || !gw4.IsValid() && !gw6.IsValid() || s.ClusterID == "" {
			t.Problems = append(t.Problems, fmt.Sprintf("%s: unusable (cluster %q, CIDR %q, gateway %q %s): remote ignored", ref, s.ClusterID, badCIDR, s.GatewayIP, bad))
			continue
		}
		r.GatewayIP, r.GatewayIP6 = gw4, gw6
		hc4, hc6, bad := weftIPs("healthCheckIP", s.HealthCheckIP, s.HealthCheckIP6)
		if bad != "" {
			t.Problems = append(t.Problems, fmt.Sprintf("%s: %s: the path to %q is not probed", ref, bad, s.ClusterID))
		} else {
			r.HealthCheckIP, r.HealthCheckIP6 = hc4, hc6
		}
		t.Remotes = append(t.Remotes, r)
	}
	slices.SortFunc(t.Remotes, func(a, b toposource.Remote) int { return strings.Compare(a.ID, b.ID) })
	return t
}
