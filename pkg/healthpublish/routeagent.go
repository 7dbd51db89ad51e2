package healthpublish

import (
	"maps"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/weft-net/weft/pkg/kubesource"
)

// RouteAgent is Submariner's per-node status object (submariner.io/v1,
// named after the node, in Submariner's namespace), with the JSON names
// Submariner's route agent writes (pkg/apis/submariner.io/v1 in
// submariner-io/submariner; its CRD is deploy/crds/submariner.io_routeagents.yaml
// there). Submariner's CRD has no status subresource: the route agent
// writes the whole object, and so does weft.
type RouteAgent struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Status            RouteAgentStatus `json:"status"`
}

// RouteAgentStatus is what the node saw of each remote cluster. All three
// fields are required by Submariner's schema (an empty list, not null).
type RouteAgentStatus struct {
	Version         string           `json:"version"`
	StatusFailure   string           `json:"statusFailure"`
	RemoteEndpoints []RemoteEndpoint `json:"remoteEndpoints"`
}

// RemoteEndpoint is one remote cluster's gateway as this node reaches it.
type RemoteEndpoint struct {
	Status        ConnectionStatus `json:"status"`
	StatusMessage string           `json:"statusMessage"`
	Spec          EndpointSpec     `json:"spec"`
	LatencyRTT    *LatencyRTTSpec  `json:"latencyRTT,omitempty"`
}

// ConnectionStatus is a RemoteEndpoint's state, in Submariner's words.
type ConnectionStatus string

// The values Submariner's route agent writes: its pinger's connected and
// error (and unknown), and the Connection kind's connecting, which weft
// uses before the first probe was answered or lost.
const (
	Connected       ConnectionStatus = "connected"
	Connecting      ConnectionStatus = "connecting"
	ConnectionError ConnectionStatus = "error"
)

// LatencyRTTSpec is the round-trip statistics, each formatted as Go's
// time.Duration.String ("1.234567ms", "0s"), as Submariner's pinger does.
type LatencyRTTSpec struct {
	Last    string `json:"last,omitempty"`
	Min     string `json:"min,omitempty"`
	Average string `json:"average,omitempty"`
	Max     string `json:"max,omitempty"`
	StdDev  string `json:"stdDev,omitempty"`
}

// EndpointSpec is Submariner's EndpointSpec as a RouteAgent carries it:
// the remote Endpoint's spec. Unlike kubesource.EndpointSpec (which only
// decodes), it keeps Submariner's tags exactly, so cable_name and backend
// are written even when empty (the schema requires them), and so are
// private_ip and public_ip, which Submariner's older schemas require.
type EndpointSpec struct {
	ClusterID      string            `json:"cluster_id"`
	CableName      string            `json:"cable_name"`
	HealthCheckIP  string            `json:"healthCheckIP,omitempty"`
	HealthCheckIPs []string          `json:"healthCheckIPs,omitempty"`
	Hostname       string            `json:"hostname"`
	Subnets        []string          `json:"subnets"`
	PrivateIP      string            `json:"private_ip"`
	PrivateIPs     []string          `json:"privateIPs,omitempty"`
	PublicIP       string            `json:"public_ip"`
	PublicIPs      []string          `json:"publicIPs,omitempty"`
	NATEnabled     bool              `json:"nat_enabled"`
	Backend        string            `json:"backend"`
	BackendConfig  map[string]string `json:"backend_config,omitempty"`
}

// endpointSpecOf copies the remote Endpoint's spec as weft's topology
// source decoded it.
func endpointSpecOf(s kubesource.EndpointSpec) EndpointSpec {
	subnets := slices.Clone(s.Subnets)
	if subnets == nil {
		subnets = []string{}
	}
	return EndpointSpec{
		ClusterID: s.ClusterID, CableName: s.CableName, HealthCheckIP: s.HealthCheckIP, Hostname: s.Hostname, Subnets: subnets,
		PrivateIP: s.PrivateIP, PublicIP: s.PublicIP, NATEnabled: s.NATEnabled,
		HealthCheckIPs: slices.Clone(s.HealthCheckIPs), PrivateIPs: slices.Clone(s.PrivateIPs), PublicIPs: slices.Clone(s.PublicIPs),
		Backend: s.Backend, BackendConfig: maps.Clone(s.BackendConfig),
	}
}

// RouteAgentList is a list of RouteAgents.
type RouteAgentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []RouteAgent `json:"items"`
}

// DeepCopyInto copies a into out.
func (a *RouteAgent) DeepCopyInto(out *RouteAgent) {
	*out = *a
	a.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.Status.RemoteEndpoints = make([]RemoteEndpoint, len(a.Status.RemoteEndpoints))
	for i, e := range a.Status.RemoteEndpoints {
		e.Spec.Subnets = slices.Clone(e.Spec.Subnets)
		e.Spec.HealthCheckIPs = slices.Clone(e.Spec.HealthCheckIPs)
		e.Spec.PrivateIPs = slices.Clone(e.Spec.PrivateIPs)
		e.Spec.PublicIPs = slices.Clone(e.Spec.PublicIPs)
		e.Spec.BackendConfig = maps.Clone(e.Spec.BackendConfig)
		if e.LatencyRTT != nil {
			l := *e.LatencyRTT
			e.LatencyRTT = &l
		}
		out.Status.RemoteEndpoints[i] = e
	}
}

// DeepCopyObject implements runtime.Object.
func (a *RouteAgent) DeepCopyObject() runtime.Object {
	if a == nil {
		return nil
	}
	out := new(RouteAgent)
	a.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *RouteAgentList) DeepCopyObject() runtime.Object {
	if l == nil {
		return nil
	}
	out := &RouteAgentList{TypeMeta: l.TypeMeta, Items: copyItems(l.Items)}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	return out
}

// AddRouteAgentTypes registers RouteAgent in a scheme.
func AddRouteAgentTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(kubesource.SubmarinerGroupVersion, &RouteAgent{}, &RouteAgentList{})
	metav1.AddToGroupVersion(s, kubesource.SubmarinerGroupVersion)
	return nil
}
