package weftd

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/controlplane"
	"github.com/weft-net/weft/pkg/healthpublish"
	"github.com/weft-net/weft/pkg/kubesource"
	"github.com/weft-net/weft/pkg/pathhealth"
	"github.com/weft-net/weft/pkg/toposource"
)

// topologySources hands the agent its Kubernetes topology source. The
// source starts with the first valid configuration that says topology:
// kubernetes (a file invalid at start, fixed later, needs no restart); it
// serves the topology persisted in stateDir until the API server answers,
// so an unreachable API never stops weftd. What it was started with (the
// cluster, the kubeconfig, the selector, the namespace) needs a restart
// to change.
type topologySources struct {
	ctx      context.Context
	log      *slog.Logger
	stateDir string // weftd's, fixed for the process
	goRun    func(func())
	cniIP    func() (v4, v6 netip.Addr) // this node's CNI interface IPs (invalid while unknown)
	changed  chan struct{}
	health   healthDeps

	mu      sync.Mutex
	src     *kubesource.Source
	with    kubesource.Options
	control *controlplane.ControlPlane // endpoints: weft
	publish healthSink                 // nil until the Kubernetes source starts
}

// healthDeps is what the path health publisher needs from weftd.
type healthDeps struct {
	Version  string
	Observer healthpublish.Observer
}

// healthSink takes the prober's snapshots to the cluster (the node's
// RouteAgent or NodePath); Publish never blocks.
type healthSink interface {
	Publish(pathhealth.Snapshot)
}

func newTopologySources(ctx context.Context, log *slog.Logger, stateDir string, goRun func(func()), cniIP func() (v4, v6 netip.Addr), health healthDeps) *topologySources {
	return &topologySources{ctx: ctx, log: log, stateDir: stateDir, goRun: goRun, cniIP: cniIP, changed: make(chan struct{}, 1), health: health}
}

// PublishHealth hands a path health snapshot to the cluster publisher;
// with topology: file (no publisher) it is dropped. Safe from any
// goroutine, never blocks: the prober's hook.
func (t *topologySources) PublishHealth(s pathhealth.Snapshot) {
	t.mu.Lock()
	p := t.publish
	t.mu.Unlock()
	if p != nil {
		p.Publish(s)
	}
}

// For returns the Kubernetes source for cfg (topology: kubernetes).
func (t *topologySources) For(cfg *config.Config) (toposource.Source, error) {
	k := cfg.Kubernetes
	want := kubesource.Options{Kubeconfig: k.Kubeconfig, ClusterID: cfg.Cluster.ID, NodeSelector: k.NodeSelector, Namespace: k.Namespace, StateDir: t.stateDir, Weft: k.Endpoints == config.EndpointsWeft}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.src != nil {
		w := t.with
		if w.Kubeconfig != want.Kubeconfig || w.ClusterID != want.ClusterID || w.NodeSelector != want.NodeSelector || w.Namespace != want.Namespace || w.Weft != want.Weft {
			return t.source(), fmt.Errorf("cluster.id or kubernetes.{kubeconfig,nodeSelector,namespace,endpoints} changed since the Kubernetes source started: restart weftd to apply (the topology in force stays)")
		}
		return t.source(), nil
	}
	kubesource.RouteClientLogs(t.log.With("component", "client-go"))
	o := want
	o.Log = t.log.With("component", "topology")
	s, err := kubesource.New(o)
	if err != nil {
		return nil, fmt.Errorf("kubernetes topology source: %w", err)
	}
	t.src, t.with = s, want
	t.goRun(func() { s.Run(t.ctx) })
	if want.Weft {
		t.control = controlplane.New(cfg, t.log, t.cniIP)
		t.goRun(func() { t.control.Run(t.ctx) })
	}
	kind := healthpublish.KindRouteAgent
	if want.Weft {
		kind = healthpublish.KindNodePath
	}
	p, err := healthpublish.New(healthpublish.Options{
		Kind: kind, Kubeconfig: k.Kubeconfig, Namespace: k.Namespace, Node: cfg.NodeName, Version: t.health.Version,
		Endpoints: s.RemoteEndpoint, Observer: t.health.Observer, Log: t.log.With("component", "path-report"),
	})
	if err != nil {
		// The topology does not depend on it: weftd runs without the report.
		t.log.Warn("path health is not written to the cluster", "err", err)
	} else {
		t.publish = p
		t.goRun(func() { p.Run(t.ctx) })
	}
	t.goRun(func() {
		for {
			select {
			case <-t.ctx.Done():
				return
			case <-s.Changed():
				select {
				case t.changed <- struct{}{}:
				default:
				}
			}
		}
	})
	return t.source(), nil
}

// source is the Kubernetes source, with the control plane's state added
// to each topology for status. Caller holds t.mu.
func (t *topologySources) source() toposource.Source {
	if t.control == nil {
		return t.src
	}
	return controlled{t.src, t.control}
}

// controlled is a topology source whose topologies carry the control
// plane's state.
type controlled struct {
	*kubesource.Source
	cp *controlplane.ControlPlane
}

func (c controlled) Current() (toposource.Topology, bool) {
	t, ok := c.Source.Current()
	st := c.cp.Status()
	e, b := st.Election, st.Broker
	t.Control = &toposource.Control{
		Candidate: e.Candidate, Leading: e.Leading, LeaseHolder: e.Holder, LeaseRenewTime: e.RenewTime, LeadershipChanges: e.Transitions,
		Broker: b.Broker, BrokerSynced: b.Synced, BrokerReason: b.Reason, BrokerMessage: b.Message, BrokerSince: b.Since, BrokerLastSync: b.LastSync, BrokerRemotes: b.Remotes, BrokerSyncErrors: b.Errors,
		Message: st.Message,
	}
	return t, ok
}

// Changed is signalled when the source's topology changed.
func (t *topologySources) Changed() <-chan struct{} { return t.changed }
