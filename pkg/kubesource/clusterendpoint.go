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
	GatewayIP    string   `json:"gatewayIP"`
	Cable        string   `json:"cable"`
	Port         int32    `json:"port,omitempty"`
	VNI          int64    `json:"vni,omitempty"`
	// HealthCheckIP is the gateway's CNI interface IP, the target of the
	// other clusters' whole-path health probes ("" while unknown).
	HealthCheckIP string `json:"healthCheckIP,omitempty"`
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

// buildWeft is the topology of endpoints: weft: the local cluster's
// ClusterEndpoint names the gateway, every other one is a remote.
func buildWeft(clusterID string, nodes []*corev1.Node, ces []*ClusterEndpoint) toposource.Topology {
	t := build(clusterID, nodes, nil)
	slices.SortFunc(ces, func(a, b *ClusterEndpoint) int { return strings.Compare(a.Name, b.Name) })
	for _, e := range ces {
		s := e.Spec
		if s.ClusterID == clusterID {
			ip, err := netip.ParseAddr(s.GatewayIP)
			if err != nil || s.GatewayNode == "" {
				t.Problems = append(t.Problems, fmt.Sprintf("%s: gateway %q/%q unusable", clusterEndpointRef(e), s.GatewayNode, s.GatewayIP))
				continue
			}
			t.Gateway = toposource.Gateway{Name: s.GatewayNode, IP: ip, From: clusterEndpointRef(e)}
			continue
		}
		r := toposource.Remote{ID: s.ClusterID, From: clusterEndpointRef(e)}
		bad := ""
		for _, c := range slices.Concat(s.PodCIDRs, s.ServiceCIDRs) {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				bad = c
				break
			}
			r.CIDRs = append(r.CIDRs, p.Masked())
		}
		ip, err := netip.ParseAddr(s.GatewayIP)
		if bad != "" || err != nil || s.ClusterID == "" {
			t.Problems = append(t.Problems, fmt.Sprintf("%s: unusable (cluster %q, CIDR %q, gateway %q): remote ignored", clusterEndpointRef(e), s.ClusterID, bad, s.GatewayIP))
			continue
		}
		r.GatewayIP = ip
		if s.HealthCheckIP != "" {
			if hc, err := netip.ParseAddr(s.HealthCheckIP); err == nil && hc.Is4() {
				r.HealthCheckIP = hc
			} else {
				t.Problems = append(t.Problems, fmt.Sprintf("%s: spec.healthCheckIP %q is not an IPv4 address: the path to %q is not probed", clusterEndpointRef(e), s.HealthCheckIP, s.ClusterID))
			}
		}
		t.Remotes = append(t.Remotes, r)
	}
	slices.SortFunc(t.Remotes, func(a, b toposource.Remote) int { return strings.Compare(a.ID, b.ID) })
	return t
}
