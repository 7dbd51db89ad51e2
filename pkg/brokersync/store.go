package brokersync

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/weft-net/weft/pkg/kubesource"
)

// Store is the ClusterEndpoints of one namespace of one API server. Errors
// are the API's (apierrors.IsNotFound, IsConflict, IsAlreadyExists work on
// them).
type Store interface {
	Get(ctx context.Context, name string) (*kubesource.ClusterEndpoint, error)
	List(ctx context.Context) ([]kubesource.ClusterEndpoint, error)
	Create(ctx context.Context, name string, spec kubesource.ClusterEndpointSpec) error
	// Update replaces the spec of the object at resourceVersion.
	Update(ctx context.Context, name, resourceVersion string, spec kubesource.ClusterEndpointSpec) error
	Delete(ctx context.Context, name string) error
	Watch(ctx context.Context) (watch.Interface, error)
}

// callTimeout bounds each API call: a broker that accepts connections and
// never answers must not stall the leader's pass.
const callTimeout = 10 * time.Second

type restStore struct {
	c  *rest.RESTClient
	ns string
}

// RESTStore is the Store of namespace ns behind a ClusterEndpoint REST
// client (kubesource.ClusterEndpointClient).
func RESTStore(c *rest.RESTClient, ns string) Store { return restStore{c, ns} }

const resource = "clusterendpoints"

func (r restStore) object(name, rv string, spec kubesource.ClusterEndpointSpec) *kubesource.ClusterEndpoint {
	return &kubesource.ClusterEndpoint{
		TypeMeta:   metav1.TypeMeta{APIVersion: kubesource.WeftGroupVersion.String(), Kind: "ClusterEndpoint"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.ns, ResourceVersion: rv},
		Spec:       spec,
	}
}

func (r restStore) Get(ctx context.Context, name string) (*kubesource.ClusterEndpoint, error) {
	var e kubesource.ClusterEndpoint
	if err := r.c.Get().Namespace(r.ns).Resource(resource).Name(name).Timeout(callTimeout).Do(ctx).Into(&e); err != nil {
		return nil, err
	}
	return &e, nil
}

func (r restStore) List(ctx context.Context) ([]kubesource.ClusterEndpoint, error) {
	var l kubesource.ClusterEndpointList
	if err := r.c.Get().Namespace(r.ns).Resource(resource).Timeout(callTimeout).Do(ctx).Into(&l); err != nil {
		return nil, err
	}
	return l.Items, nil
}

func (r restStore) Create(ctx context.Context, name string, spec kubesource.ClusterEndpointSpec) error {
	return r.c.Post().Namespace(r.ns).Resource(resource).Body(r.object(name, "", spec)).Timeout(callTimeout).Do(ctx).Error()
}

func (r restStore) Update(ctx context.Context, name, rv string, spec kubesource.ClusterEndpointSpec) error {
	return r.c.Put().Namespace(r.ns).Resource(resource).Name(name).Body(r.object(name, rv, spec)).Timeout(callTimeout).Do(ctx).Error()
}

func (r restStore) Delete(ctx context.Context, name string) error {
	return r.c.Delete().Namespace(r.ns).Resource(resource).Name(name).Timeout(callTimeout).Do(ctx).Error()
}

func (r restStore) Watch(ctx context.Context) (watch.Interface, error) {
	return r.c.Get().Namespace(r.ns).Resource(resource).
		VersionedParams(&metav1.ListOptions{Watch: true}, metav1.ParameterCodec).Watch(ctx)
}
