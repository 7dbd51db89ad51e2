package kubesource

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
)

// JSONClient is a REST client for one API group whose scheme holds only
// the types add registers (the path health publisher writes Submariner's
// RouteAgent and weft's NodePath with it).
func JSONClient(rc *rest.Config, gv schema.GroupVersion, add func(*runtime.Scheme) error) (*rest.RESTClient, error) {
	return restClient(rc, gv, "/apis", add, false)
}

// RemoteEndpoint returns the spec of the Endpoint the topology uses for
// clusterID (the newest of that cluster's, as build picks it), from the
// watch cache: no API call. False before the Endpoints are listed, for an
// unknown cluster, and with endpoints: weft.
func (s *Source) RemoteEndpoint(clusterID string) (EndpointSpec, bool) {
	s.mu.Lock()
	eps := s.endpoints
	s.mu.Unlock()
	if eps == nil || s.o.Weft {
		return EndpointSpec{}, false
	}
	e, ok := newest(endpointsOf(eps.List()))[clusterID]
	if !ok {
		return EndpointSpec{}, false
	}
	return e.Spec, true
}
