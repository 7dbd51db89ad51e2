// Package kubesource is the Kubernetes topology source (topology:
// kubernetes): the cluster's nodes from Node objects, its gateway and the
// remote clusters from Submariner's Endpoint objects, each through a
// client-go reflector (a list, then a watch; never a poll). The last topology seen is
// persisted in stateDir; while the API server is unreachable the source
// keeps serving it, marked stale, so the data plane is never torn down
// because the API is gone. It is the only package of weftd that imports
// client-go.
package kubesource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/weft-net/weft/pkg/toposource"
)

// Sync reasons.
const (
	ReasonWatching      = "Watching"      // both watches are up: the live view
	ReasonStale         = "Stale"         // serving the last topology seen
	ReasonWaitingForAPI = "WaitingForAPI" // nothing seen yet, nothing persisted
)

// Options configure the source.
type Options struct {
	// Rest is the API client configuration; nil = RestConfig(Kubeconfig),
	// retried by Run until it succeeds (a kubeconfig mounted late, a pod
	// without its token yet).
	Rest         *rest.Config
	Kubeconfig   string
	ClusterID    string // the local cluster: its Endpoint names the gateway
	NodeSelector string // label selector on member Nodes; "" = all
	Namespace    string // of the Endpoint (or ClusterEndpoint) objects
	// Weft: the gateway and the remotes come from weft's own
	// ClusterEndpoints (kubernetes.endpoints: weft), not Submariner's.
	Weft     bool
	StateDir string // where the last topology is persisted
	Log      *slog.Logger
	Now      func() time.Time
}

// RestConfig builds the client configuration: in-cluster (the pod's
// service account token) when kubeconfig is "", else from that file.
func RestConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster Kubernetes configuration: %w", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return c, nil
}

// Source is the Kubernetes topology source.
type Source struct {
	o       Options
	changed chan struct{}
	poke    chan struct{}

	nodes, endpoints *watched

	mu      sync.Mutex
	cur     toposource.Topology
	have    bool // cur is from the API or from stateDir
	live    bool // cur was built from synced informers
	watchOK map[string]error
}

// watch names, for sync tracking.
const (
	watchNodes     = "nodes"
	watchEndpoints = "endpoints"
)

// New prepares the source; it loads the persisted topology, if any, so
// that Current answers before the API does. Run starts the informers.
func New(o Options) (*Source, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	s := &Source{
		o:       o,
		changed: make(chan struct{}, 1),
		poke:    make(chan struct{}, 1),
		watchOK: map[string]error{watchNodes: errNotStarted, watchEndpoints: errNotStarted},
	}
	now := o.Now().UTC()
	t, err := toposource.LoadPersisted(o.StateDir)
	switch {
	case err == nil:
		t.Sync = toposource.Sync{Reason: ReasonStale, Message: "running with the topology persisted in " + o.StateDir + " until the API server answers", Since: now}
		s.cur, s.have = t, true
		o.Log.Info("topology loaded from stateDir; waiting for the API server", "nodes", len(t.Nodes), "gateway", t.Gateway.Name, "remotes", len(t.Remotes))
	case errors.Is(err, toposource.ErrNotPersisted):
		s.cur = toposource.Topology{Source: toposource.Kubernetes, Sync: toposource.Sync{Reason: ReasonWaitingForAPI, Message: "no answer from the API server yet and no persisted topology", Since: now}}
	default:
		o.Log.Warn("persisted topology unusable; waiting for the API server", "err", err)
		s.cur = toposource.Topology{Source: toposource.Kubernetes, Sync: toposource.Sync{Reason: ReasonWaitingForAPI, Message: err.Error(), Since: now}}
	}
	if o.Rest != nil {
		if err := s.setup(o.Rest); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// setup builds the two reflectors.
func (s *Source) setup(rc *rest.Config) error {
	nodeClient, err := restClient(rc, corev1.SchemeGroupVersion, "/api", corev1.AddToScheme, true)
	if err != nil {
		return err
	}
	nodes := s.informer(watchNodes, nodeClient, "nodes", "", s.o.NodeSelector, &corev1.Node{}, stripNode)
	var eps *watched
	if s.o.Weft {
		ceClient, err := ClusterEndpointClient(rc)
		if err != nil {
			return err
		}
		eps = s.informer(watchEndpoints, ceClient, "clusterendpoints", s.o.Namespace, "", &ClusterEndpoint{}, stripClusterEndpoint)
	} else {
		epClient, err := restClient(rc, SubmarinerGroupVersion, "/apis", addEndpointTypes, false)
		if err != nil {
			return err
		}
		eps = s.informer(watchEndpoints, epClient, "endpoints", s.o.Namespace, "", &Endpoint{}, stripEndpoint)
	}
	s.mu.Lock()
	s.nodes, s.endpoints = nodes, eps
	s.mu.Unlock()
	return nil
}

// connect builds the client configuration until it succeeds or ctx ends,
// reporting each failure in the sync state.
func (s *Source) connect(ctx context.Context) bool {
	const retry = 5 * time.Second
	for s.nodes == nil {
		rc, err := RestConfig(s.o.Kubeconfig)
		if err == nil {
			err = s.setup(rc)
		}
		if err == nil {
			return true
		}
		s.watchState(watchNodes, err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(retry):
		}
	}
	return true
}

var errNotStarted = errors.New("watch not started yet")

// restClient is a REST client for one API group with a scheme holding only
// that group's types: the generated clientset would register every
// built-in API group, which weft never reads.
func restClient(base *rest.Config, gv schema.GroupVersion, apiPath string, add func(*runtime.Scheme) error, protobuf bool) (*rest.RESTClient, error) {
	scheme := runtime.NewScheme()
	if err := add(scheme); err != nil {
		return nil, fmt.Errorf("register %s types: %w", gv, err)
	}
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	c := rest.CopyConfig(base)
	c.GroupVersion = &gv
	c.APIPath = apiPath
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if protobuf {
		// Protobuf decodes Nodes with a fraction of JSON's garbage.
		c.ContentType = runtime.ContentTypeProtobuf
		c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	}
	if c.UserAgent == "" {
		c.UserAgent = "weftd"
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("API client for %s: %w", gv, err)
	}
	return rc, nil
}

// reconnectBackoff is how the watches retry an unreachable API server:
// client-go's default (0.8 s doubling to 30 s, with as much jitter) would
// keep a node stale for up to a minute after a 30 s outage. Capped at 5 s
// (plus jitter) it is back within seconds and still spreads a cluster's
// nodes over a recovering API server.
var reconnectBackoff = wait.Backoff{Duration: 250 * time.Millisecond, Factor: 2, Jitter: 1, Steps: 5, Cap: 5 * time.Second}

func (s *Source) informer(name string, rc *rest.RESTClient, resource, namespace, selector string, example runtime.Object, strip cache.TransformFunc) *watched {
	req := func(o *metav1.ListOptions) *rest.Request {
		if selector != "" {
			o.LabelSelector = selector
		}
		return rc.Get().Namespace(namespace).Resource(resource).VersionedParams(o, metav1.ParameterCodec)
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			obj, err := req(&o).Timeout(listTimeout).Do(ctx).Get()
			if err != nil {
				s.watchState(name, fmt.Errorf("list %s: %w", resource, err))
			}
			return obj, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.Watch = true
			w, err := req(&o).Watch(ctx)
			if err != nil {
				err = fmt.Errorf("watch %s: %w", resource, err)
			}
			s.watchState(name, err)
			return w, err
		},
	}
	st := &trackingStore{Store: cache.NewStore(cache.DeletionHandlingMetaNamespaceKeyFunc), strip: strip, changed: s.kick}
	r := cache.NewReflectorWithOptions(lw, example, st, cache.ReflectorOptions{Name: "weft " + resource, Backoff: &reconnectBackoff})
	return &watched{store: st, reflector: r}
}

// listTimeout bounds one list call (a watch has the server's own timeout
// and HTTP/2 pings).
const listTimeout = 30 * time.Second

// watched is one resource's reflector and the store it fills.
type watched struct {
	store     *trackingStore
	reflector *cache.Reflector
}

func (w *watched) HasSynced() bool { return w.store.synced.Load() }
func (w *watched) List() []any     { return w.store.List() }

// trackingStore is the reflector's store: it strips each object before
// keeping it (also in the reflector's own temporary store of a streamed
// initial list, through Transformer) and calls changed when what weft
// keeps of the cache changed; Node heartbeats change nothing weft keeps.
type trackingStore struct {
	cache.Store
	strip   cache.TransformFunc
	changed func()
	synced  atomic.Bool
}

// Transformer implements cache.TransformingStore.
func (t *trackingStore) Transformer() cache.TransformFunc { return t.strip }

func (t *trackingStore) put(obj any) error {
	obj, err := t.strip(obj)
	if err != nil {
		return err
	}
	old, exists, _ := t.Store.Get(obj)
	if err := t.Store.Update(obj); err != nil {
		return err
	}
	if !exists || !reflect.DeepEqual(specOf(old), specOf(obj)) {
		t.changed()
	}
	return nil
}

func (t *trackingStore) Add(obj any) error    { return t.put(obj) }
func (t *trackingStore) Update(obj any) error { return t.put(obj) }

func (t *trackingStore) Delete(obj any) error {
	if err := t.Store.Delete(obj); err != nil {
		return err
	}
	t.changed()
	return nil
}

func (t *trackingStore) Replace(list []any, rv string) error {
	for i, o := range list {
		var err error
		if list[i], err = t.strip(o); err != nil {
			return err
		}
	}
	if err := t.Store.Replace(list, rv); err != nil {
		return err
	}
	t.synced.Store(true)
	t.changed()
	return nil
}

func (t *trackingStore) Resync() error { return nil }

func (s *Source) kick() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// watchState records the outcome of a list or watch call of one informer.
func (s *Source) watchState(name string, err error) {
	s.mu.Lock()
	prev := s.watchOK[name]
	s.watchOK[name] = err
	s.mu.Unlock()
	if (prev == nil) != (err == nil) {
		if err != nil {
			s.o.Log.Warn("Kubernetes watch lost; keeping the last topology", "watch", name, "err", err)
		} else {
			s.o.Log.Info("Kubernetes watch established", "watch", name)
		}
		s.kick()
	}
}

// Run runs the informers until ctx ends.
func (s *Source) Run(ctx context.Context) {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.poke:
				s.rebuild()
			}
		}
	}()
	if !s.connect(ctx) {
		return
	}
	go s.nodes.reflector.RunWithContext(ctx)
	go s.endpoints.reflector.RunWithContext(ctx)
	<-ctx.Done()
}

// rebuild recomputes the topology from the informers' caches and the
// watch states, persists a changed live view and signals Changed.
func (s *Source) rebuild() {
	s.mu.Lock()
	nodes, eps := s.nodes, s.endpoints
	s.mu.Unlock()
	synced := nodes != nil && nodes.HasSynced() && eps.HasSynced()
	var next toposource.Topology
	switch {
	case synced && s.o.Weft:
		next = buildWeft(s.o.ClusterID, nodesOf(nodes.List()), clusterEndpointsOf(eps.List()))
	case synced:
		next = build(s.o.ClusterID, nodesOf(nodes.List()), endpointsOf(eps.List()))
	}

	s.mu.Lock()
	var why error
	for _, name := range []string{watchNodes, watchEndpoints} {
		if err := s.watchOK[name]; err != nil {
			why = err
			break
		}
	}
	prev := s.cur
	if synced {
		s.cur.Nodes, s.cur.Gateway, s.cur.Remotes, s.cur.Problems = next.Nodes, next.Gateway, next.Remotes, next.Problems
		s.cur.Source = toposource.Kubernetes
		s.have, s.live = true, true
	}
	sync := s.cur.Sync
	switch {
	case synced && why == nil:
		sync.Synced, sync.Reason, sync.Message = true, ReasonWatching, ""
	case s.have:
		sync.Synced, sync.Reason = false, ReasonStale
		if why != nil {
			sync.Message = "the API server is unreachable or refuses weft: " + why.Error() + "; running with the last topology seen"
		}
	default:
		sync.Synced, sync.Reason = false, ReasonWaitingForAPI
		if why != nil {
			sync.Message = why.Error()
		}
	}
	if sync.Synced != prev.Sync.Synced || sync.Reason != prev.Sync.Reason {
		sync.Since = s.o.Now().UTC()
	}
	s.cur.Sync = sync
	cur := s.cur
	contentChanged := synced && !sameContent(prev, cur)
	changed := contentChanged || !reflect.DeepEqual(prev.Sync, cur.Sync)
	s.mu.Unlock()

	if contentChanged {
		if err := toposource.Persist(s.o.StateDir, cur); err != nil {
			s.o.Log.Warn("persist topology", "err", err)
		}
		s.o.Log.Info("topology from the Kubernetes API", "nodes", len(cur.Nodes), "gateway", cur.Gateway.Name, "remotes", len(cur.Remotes), "problems", len(cur.Problems))
	}
	if changed {
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
}

func sameContent(a, b toposource.Topology) bool {
	return reflect.DeepEqual(a.Nodes, b.Nodes) && a.Gateway == b.Gateway &&
		reflect.DeepEqual(a.Remotes, b.Remotes) && reflect.DeepEqual(a.Problems, b.Problems)
}

func nodesOf(objs []any) []*corev1.Node {
	out := make([]*corev1.Node, 0, len(objs))
	for _, o := range objs {
		if n, ok := o.(*corev1.Node); ok {
			out = append(out, n)
		}
	}
	return out
}

func clusterEndpointsOf(objs []any) []*ClusterEndpoint {
	out := make([]*ClusterEndpoint, 0, len(objs))
	for _, o := range objs {
		if e, ok := o.(*ClusterEndpoint); ok {
			out = append(out, e)
		}
	}
	return out
}

func endpointsOf(objs []any) []*Endpoint {
	out := make([]*Endpoint, 0, len(objs))
	for _, o := range objs {
		if e, ok := o.(*Endpoint); ok {
			out = append(out, e)
		}
	}
	return out
}

// Current implements toposource.Source.
func (s *Source) Current() (toposource.Topology, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.have
}

// Changed implements toposource.Source.
func (s *Source) Changed() <-chan struct{} { return s.changed }

// specOf is what of a cached object matters to the topology.
func specOf(obj any) any {
	switch o := obj.(type) {
	case *corev1.Node:
		return o.Status.Addresses
	case *Endpoint:
		return []any{o.Spec, o.CreationTimestamp}
	case *ClusterEndpoint:
		return o.Spec
	}
	return obj
}

// RouteClientLogs sends client-go's own log lines (klog: a watch that
// failed, a relist) to log as structured records, instead of klog's text
// format on stderr. klog's logger is process-wide: the daemon's
// composition root calls this once.
func RouteClientLogs(log *slog.Logger) { klog.SetSlogLogger(log) }
