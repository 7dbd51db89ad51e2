// Package gatewayelect elects a cluster's gateway (kubernetes.endpoints:
// weft): the Nodes labelled as gateway candidates run client-go leader
// election on one Lease, identity = node name, and the holder is the
// gateway. A candidate whose label is removed releases the Lease at once
// (a handover, not an expiry); a weftd that stops (SIGTERM, a rolling
// upgrade) does not release it, so that its successor re-takes it as the
// same identity before it expires and nothing moves. The package only
// elects: what the leader does is the Lead callback's business, and the
// agent sees the result only through the topology.
package gatewayelect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaseName is the Lease every cluster's candidates compete for.
const LeaseName = "weft-gateway"

// Options configure an Elector.
type Options struct {
	Rest *rest.Config
	// Leases and Nodes are the clients; nil = built from Rest.
	Leases    coordinationv1client.LeasesGetter
	Nodes     corev1client.NodesGetter
	Namespace string // of the Lease
	Node      string // this node's name: the identity
	// Label is the candidate label's key; a Node is a candidate when its
	// value is "true".
	Label                                string
	Duration, RenewDeadline, RetryPeriod time.Duration
	Log                                  *slog.Logger
	// Lead runs while this node holds the Lease, with the node's first
	// InternalIP of each family (either invalid when the Node has none);
	// its ctx ends when leadership ends (lost, released, or weftd
	// stopping).
	Lead func(ctx context.Context, nodeIP, nodeIP6 netip.Addr)
}

// Status is the election as this node sees it.
type Status struct {
	Candidate   bool      `json:"candidate"`
	Leading     bool      `json:"leading"`
	Holder      string    `json:"holder,omitempty"`
	RenewTime   time.Time `json:"renewTime,omitzero"`
	Transitions int       `json:"leadershipChanges"` // holder changes this weftd saw
	Message     string    `json:"message,omitempty"`
	lastLeader  string
}

// Elector runs the election for one node.
type Elector struct {
	o    Options
	lock *resourcelock.LeaseLock
	node corev1client.NodesGetter

	candidate chan bool // the label's value, each time it changes

	mu  sync.Mutex
	st  Status
	ip  netip.Addr
	ip6 netip.Addr
}

// New prepares the election.
func New(o Options) (*Elector, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Lead == nil {
		return nil, errors.New("gatewayelect: Lead is required")
	}
	lc, nc := o.Leases, o.Nodes
	if lc == nil || nc == nil {
		if o.Rest == nil {
			return nil, errors.New("gatewayelect: Rest or both clients are required")
		}
		rc := rest.CopyConfig(o.Rest)
		if rc.UserAgent == "" {
			rc.UserAgent = "weftd"
		}
		var err error
		if lc == nil {
			if lc, err = coordinationv1client.NewForConfig(rc); err != nil {
				return nil, fmt.Errorf("Lease client: %w", err)
			}
		}
		if nc == nil {
			if nc, err = corev1client.NewForConfig(rc); err != nil {
				return nil, fmt.Errorf("Node client: %w", err)
			}
		}
	}
	return &Elector{
		o: o,
		lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: o.Namespace, Name: LeaseName},
			Client:     lc,
			LockConfig: resourcelock.ResourceLockConfig{Identity: o.Node},
		},
		node:      nc,
		candidate: make(chan bool, 1),
	}, nil
}

// Status returns the election's state as last observed (no API call).
func (e *Elector) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st
}

// observingLock is the Lease lock with every record the election reads or
// writes kept for Status: the candidates read the Lease every retryPeriod
// anyway.
type observingLock struct {
	*resourcelock.LeaseLock
	e *Elector
}

func (l observingLock) seen(r *resourcelock.LeaderElectionRecord) {
	l.e.set(func(s *Status) { s.Holder, s.RenewTime = r.HolderIdentity, r.RenewTime.Time })
}

func (l observingLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	r, raw, err := l.LeaseLock.Get(ctx)
	if err == nil {
		l.seen(r)
	}
	return r, raw, err
}

func (l observingLock) Create(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	err := l.LeaseLock.Create(ctx, r)
	if err == nil {
		l.seen(&r)
	}
	return err
}

func (l observingLock) Update(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	err := l.LeaseLock.Update(ctx, r)
	if err == nil {
		l.seen(&r)
	}
	return err
}

// Run watches this node's label and runs the election while it is a
// candidate, until ctx ends. Ending ctx does not release the Lease.
func (e *Elector) Run(ctx context.Context) {
	go e.watchNode(ctx)
	want := false
	for {
		for !want {
			select {
			case <-ctx.Done():
				return
			case want = <-e.candidate:
			}
		}
		e.set(func(s *Status) { s.Candidate = true })
		e.o.Log.Info("gateway candidate: joining the election", "lease", e.o.Namespace+"/"+LeaseName, "identity", e.o.Node)
		ectx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ectx.Err() == nil {
				e.elect(ectx)
			}
		}()
		for want {
			select {
			case <-ctx.Done():
				cancel()
				<-done
				return // weftd stops: the Lease stays ours until it expires
			case want = <-e.candidate:
			}
		}
		cancel()
		<-done
		e.set(func(s *Status) { s.Candidate = false })
		e.release()
	}
}

// elect runs one client-go election until leadership is lost or ctx ends,
// and returns only once Lead has returned: client-go runs the callback in
// a goroutine of its own and does not wait for it, and a Lead still
// writing after the release (or while weftd exits) could overwrite the
// next leader's ClusterEndpoint.
func (e *Elector) elect(ctx context.Context) {
	var (
		leading sync.WaitGroup
		mu      sync.Mutex
		ended   bool // a Lead that starts after this does not run
	)
	defer func() {
		mu.Lock()
		ended = true
		mu.Unlock()
		leading.Wait()
	}()
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:          observingLock{e.lock, e},
		Name:          LeaseName,
		LeaseDuration: e.o.Duration,
		RenewDeadline: e.o.RenewDeadline,
		RetryPeriod:   e.o.RetryPeriod,
		// Not on cancel: a stopping weftd keeps the Lease for its
		// successor; the label's removal releases it (release).
		ReleaseOnCancel: false,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				mu.Lock()
				if ended {
					mu.Unlock()
					return
				}
				leading.Add(1)
				mu.Unlock()
				defer leading.Done()
				e.set(func(s *Status) { s.Leading = true })
				e.o.Log.Info("holding the gateway Lease: this node is the gateway", "identity", e.o.Node)
				e.mu.Lock()
				ip, ip6 := e.ip, e.ip6
				e.mu.Unlock()
				e.o.Lead(lctx, ip, ip6)
			},
			OnStoppedLeading: func() {
				e.set(func(s *Status) { s.Leading = false })
			},
			OnNewLeader: func(id string) {
				e.set(func(s *Status) {
					if s.lastLeader != "" && s.lastLeader != id {
						s.Transitions++
					}
					s.lastLeader = id
				})
				e.o.Log.Info("gateway Lease holder", "holder", id)
			},
		},
	})
	if err != nil {
		e.set(func(s *Status) { s.Message = err.Error() })
		e.o.Log.Error("gateway election", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(e.o.RetryPeriod):
		}
		return
	}
	le.Run(ctx)
}

// release gives the Lease up if this node holds it, as client-go's own
// release does (holder "", duration 1 s): another candidate takes it on its
// next retry instead of waiting for the expiry.
func (e *Elector) release() {
	ctx, cancel := context.WithTimeout(context.Background(), e.o.RenewDeadline)
	defer cancel()
	for ctx.Err() == nil {
		rec, _, err := e.lock.Get(ctx)
		if apierrors.IsNotFound(err) {
			return
		}
		if err == nil {
			if rec.HolderIdentity != e.o.Node {
				return
			}
			now := metav1.Now()
			err = e.lock.Update(ctx, resourcelock.LeaderElectionRecord{
				LeaderTransitions: rec.LeaderTransitions, LeaseDurationSeconds: 1, RenewTime: now, AcquireTime: now,
			})
			if err == nil {
				e.o.Log.Info("gateway label removed: Lease released", "identity", e.o.Node)
				return
			}
		}
		e.o.Log.Warn("release the gateway Lease", "err", err)
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *Elector) set(f func(*Status)) {
	e.mu.Lock()
	f(&e.st)
	e.mu.Unlock()
}

// watchNode follows this node's Node object: its candidate label and its
// InternalIP (the gateway's underlay address).
func (e *Elector) watchNode(ctx context.Context) {
	sel := fields.OneTermEqualSelector("metadata.name", e.o.Node).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return e.node.Nodes().List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return e.node.Nodes().Watch(ctx, o)
		},
	}
	last := false
	seen := func(obj any, deleted bool) {
		n, ok := obj.(*corev1.Node)
		if !ok {
			return
		}
		want := !deleted && n.Labels[e.o.Label] == "true"
		e.mu.Lock()
		var ip, ip6 netip.Addr
		for _, na := range n.Status.Addresses {
			a, err := netip.ParseAddr(na.Address)
			switch {
			case err != nil || na.Type != corev1.NodeInternalIP:
			case a.Is4() && !ip.IsValid():
				ip = a
			case a.Is6() && !a.Is4In6() && a.IsGlobalUnicast() && a.Zone() == "" && !ip6.IsValid():
				ip6 = a
			}
		}
		e.ip, e.ip6 = ip, ip6
		e.mu.Unlock()
		if want == last {
			return
		}
		last = want
		select {
		case <-e.candidate: // drop a value Run has not read: this one is newer
		default:
		}
		e.candidate <- want
	}
	_, inf := cache.NewInformerWithOptions(cache.InformerOptions{
		// A client may say it cannot stream lists (a fake one): the
		// reflector then lists and watches.
		ListerWatcher: cache.ToListWatcherWithWatchListSemantics(lw, e.node),
		ObjectType:    &corev1.Node{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { seen(o, false) },
			UpdateFunc: func(_, o any) { seen(o, false) },
			DeleteFunc: func(o any) { seen(o, true) },
		},
	})
	inf.RunWithContext(ctx)
}
