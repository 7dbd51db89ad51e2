package healthpublish

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/weft-net/weft/pkg/kubesource"
)

// NodePath is weft's own per-node path health object (kubernetes.endpoints:
// weft): weft.dev/v1alpha1, named after the node, in weft's namespace,
// written by the node's weftd through the status subresource. The CRD is
// daemon/deploy/06-nodepath-crd.yaml.
type NodePath struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Status            NodePathStatus `json:"status,omitempty"`
}

// NodePathStatus is the node's last path health snapshot as written.
type NodePathStatus struct {
	Node    string `json:"node"`
	Cluster string `json:"cluster"`
	// ObservedTime is when the prober took the snapshot written.
	ObservedTime metav1.Time `json:"observedTime"`
	// Conditions: GatewayReachable and RemotesReachable, naming the hop
	// that fails.
	Conditions []metav1.Condition `json:"conditions"`
	Targets    []PathTarget       `json:"targets"`
}

// PathTarget is one probed target.
type PathTarget struct {
	Name    string      `json:"name"`
	Hop     string      `json:"hop"`
	Cluster string      `json:"cluster"`
	Node    string      `json:"node,omitempty"`
	Address string      `json:"address"`
	Source  string      `json:"source,omitempty"`
	Up      bool        `json:"up"`
	Since   metav1.Time `json:"since"`
	// RTT is formatted as Submariner's latencyRTT is (time.Duration).
	RTT     LatencyRTTSpec `json:"rtt"`
	Sent    int64          `json:"sent"`
	Lost    int64          `json:"lost"`
	Message string         `json:"message,omitempty"`
}

// Condition types of a NodePath.
const (
	CondGatewayReachable = "GatewayReachable"
	CondRemotesReachable = "RemotesReachable"
)

// NodePathList is a list of NodePaths.
type NodePathList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []NodePath `json:"items"`
}

// DeepCopyInto copies p into out.
func (p *NodePath) DeepCopyInto(out *NodePath) {
	*out = *p
	p.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	p.Status.ObservedTime.DeepCopyInto(&out.Status.ObservedTime)
	out.Status.Conditions = make([]metav1.Condition, len(p.Status.Conditions))
	for i := range p.Status.Conditions {
		p.Status.Conditions[i].DeepCopyInto(&out.Status.Conditions[i])
	}
	out.Status.Targets = slices.Clone(p.Status.Targets)
}

// DeepCopyObject implements runtime.Object.
func (p *NodePath) DeepCopyObject() runtime.Object {
	if p == nil {
		return nil
	}
	out := new(NodePath)
	p.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *NodePathList) DeepCopyObject() runtime.Object {
	if l == nil {
		return nil
	}
	out := &NodePathList{TypeMeta: l.TypeMeta, Items: copyItems(l.Items)}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	return out
}

// copyItems deep-copies a list's items.
func copyItems[T any, P interface {
	*T
	DeepCopyInto(*T)
}](in []T) []T {
	out := make([]T, len(in))
	for i := range in {
		P(&in[i]).DeepCopyInto(&out[i])
	}
	return out
}

// AddNodePathTypes registers NodePath in a scheme.
func AddNodePathTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(kubesource.WeftGroupVersion, &NodePath{}, &NodePathList{})
	metav1.AddToGroupVersion(s, kubesource.WeftGroupVersion)
	return nil
}
