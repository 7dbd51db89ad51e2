package kubesource

import (
	"maps"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// SubmarinerGroupVersion is the API group of Submariner's Endpoint objects.
var SubmarinerGroupVersion = schema.GroupVersion{Group: "submariner.io", Version: "v1"}

// Endpoint is the subset of Submariner's submariner.io/v1 Endpoint that
// weft reads, with the JSON names Submariner's gateway engine writes
// (pkg/apis/submariner.io/v1 in submariner-io/submariner). Submariner's
// Go module is not on the module proxy, and weft only reads these fields.
type Endpoint struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              EndpointSpec `json:"spec"`
}

// EndpointSpec holds the fields weft uses. Others are ignored when
// decoding.
type EndpointSpec struct {
	ClusterID     string            `json:"cluster_id"`
	CableName     string            `json:"cable_name,omitempty"`
	Hostname      string            `json:"hostname"`
	Subnets       []string          `json:"subnets"`
	PrivateIP     string            `json:"private_ip"`
	PublicIP      string            `json:"public_ip"`
	NATEnabled    bool              `json:"nat_enabled"`
	Backend       string            `json:"backend,omitempty"`
	BackendConfig map[string]string `json:"backend_config,omitempty"`
	// HealthCheckIP is the gateway's CNI interface IP, which Submariner's
	// route agents ping: weft's whole-path probe targets it.
	HealthCheckIP string `json:"healthCheckIP,omitempty"`
	// The dual-stack fields of Submariner 0.20+ (at most one address per
	// family each). The single fields above are their IPv4 fallback, which
	// Submariner marks deprecated but still writes and reads (its
	// EndpointSpec.Get*IP(family)): an IPv6 address is only ever in a list.
	PrivateIPs     []string `json:"privateIPs,omitempty"`
	PublicIPs      []string `json:"publicIPs,omitempty"`
	HealthCheckIPs []string `json:"healthCheckIPs,omitempty"`
}

// EndpointList is a list of Endpoints.
type EndpointList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []Endpoint `json:"items"`
}

// DeepCopyInto copies e into out.
func (e *Endpoint) DeepCopyInto(out *Endpoint) {
	*out = *e
	out.TypeMeta = e.TypeMeta
	e.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.Spec.Subnets = slices.Clone(e.Spec.Subnets)
	out.Spec.BackendConfig = maps.Clone(e.Spec.BackendConfig)
	out.Spec.PrivateIPs = slices.Clone(e.Spec.PrivateIPs)
	out.Spec.PublicIPs = slices.Clone(e.Spec.PublicIPs)
	out.Spec.HealthCheckIPs = slices.Clone(e.Spec.HealthCheckIPs)
}

// DeepCopyObject implements runtime.Object.
func (e *Endpoint) DeepCopyObject() runtime.Object {
	if e == nil {
		return nil
	}
	out := new(Endpoint)
	e.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *EndpointList) DeepCopyObject() runtime.Object {
	if l == nil {
		return nil
	}
	out := &EndpointList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = make([]Endpoint, len(l.Items))
	for i := range l.Items {
		l.Items[i].DeepCopyInto(&out.Items[i])
	}
	return out
}

func addEndpointTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(SubmarinerGroupVersion, &Endpoint{}, &EndpointList{})
	metav1.AddToGroupVersion(s, SubmarinerGroupVersion)
	return nil
}
