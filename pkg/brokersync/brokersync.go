// Package brokersync is the elected gateway's work with weft's own
// control plane (kubernetes.endpoints: weft): it publishes the cluster's
// ClusterEndpoint in the local namespace and, with a broker, pushes it
// there and copies every other cluster's into the local namespace, where
// every node's topology source watches them. Only the leader runs it, so
// the broker's load does not grow with the number of nodes. The broker
// unreachable, the copies stay as they are and the state says so.
package brokersync

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/weft-net/weft/pkg/kubesource"
)

// Options configure a Syncer.
type Options struct {
	Local          *rest.Config
	LocalNamespace string
	// Broker is nil without a broker (the cluster publishes only locally).
	Broker          *rest.Config
	BrokerNamespace string
	Interval        time.Duration // between broker passes
	Log             *slog.Logger
}

// State is the broker sync as the leader last saw it.
type State struct {
	Leading  bool      `json:"leading"`
	Broker   bool      `json:"broker"` // a broker is configured
	Synced   bool      `json:"synced"`
	Message  string    `json:"message,omitempty"`
	LastSync time.Time `json:"lastSync,omitzero"`
	Remotes  int       `json:"remotes"`
	Errors   uint64    `json:"errors"` // failed passes, total
}

// Syncer publishes and syncs ClusterEndpoints while Run runs.
type Syncer struct {
	o             Options
	local, broker *rest.RESTClient

	mu sync.Mutex
	st State
}

// New builds the clients.
func New(o Options) (*Syncer, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	s := &Syncer{o: o}
	var err error
	if s.local, err = kubesource.ClusterEndpointClient(o.Local); err != nil {
		return nil, err
	}
	if o.Broker != nil {
		if s.broker, err = kubesource.ClusterEndpointClient(o.Broker); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
	}
	s.st.Broker = o.Broker != nil
	return s, nil
}

// State returns the sync state.
func (s *Syncer) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Run publishes own (the local ClusterEndpoint, named after its cluster
// ID) and syncs with the broker until ctx ends. It deletes nothing when
// it stops: the next leader overwrites the object.
func (s *Syncer) Run(ctx context.Context, own kubesource.ClusterEndpoint) {
	s.set(func(st *State) { st.Leading = true })
	defer s.set(func(st *State) { st.Leading = false })
	own.Name, own.Namespace = own.Spec.ClusterID, s.o.LocalNamespace
	published := false
	t := time.NewTicker(s.o.Interval)
	defer t.Stop()
	kick := make(chan struct{}, 1)
	if s.broker != nil {
		go s.watchBroker(ctx, kick)
	}
	for {
		// Re-asserted on every pass (one GET when nothing changed): an
		// object edited or deleted by hand comes back.
		if err := upsert(ctx, s.local, s.o.LocalNamespace, &own); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.o.Log.Warn("publish the ClusterEndpoint", "err", err)
			s.fail(fmt.Errorf("publish locally: %w", err))
			published = false
		} else if !published {
			published = true
			s.o.Log.Info("ClusterEndpoint published", "cluster", own.Spec.ClusterID, "gateway", own.Spec.GatewayNode, "ip", own.Spec.GatewayIP)
		}
		if published && s.broker != nil {
			if err := s.pass(ctx, &own); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.fail(err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
	}
}

// watchBroker signals kick whenever the broker's ClusterEndpoints change,
// so that a remote gateway's failover is copied at once; the periodic pass
// covers a watch that is down.
func (s *Syncer) watchBroker(ctx context.Context, kick chan<- struct{}) {
	signal := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	for ctx.Err() == nil {
		w, err := s.broker.Get().Namespace(s.o.BrokerNamespace).Resource("clusterendpoints").
			VersionedParams(&metav1.ListOptions{Watch: true}, metav1.ParameterCodec).Watch(ctx)
		if err == nil {
			for range w.ResultChan() {
				signal()
			}
			w.Stop()
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (s *Syncer) fail(err error) {
	s.set(func(st *State) {
		if st.Synced || st.Message != err.Error() {
			s.o.Log.Warn("broker sync failed; keeping the ClusterEndpoints copied so far", "err", err)
		}
		st.Synced, st.Message = false, err.Error()
		st.Errors++
	})
}

// pass pushes own to the broker and mirrors the broker's other
// ClusterEndpoints into the local namespace.
func (s *Syncer) pass(ctx context.Context, own *kubesource.ClusterEndpoint) error {
	if err := upsert(ctx, s.broker, s.o.BrokerNamespace, own); err != nil {
		return fmt.Errorf("push to the broker: %w", err)
	}
	var remote kubesource.ClusterEndpointList
	if err := s.broker.Get().Namespace(s.o.BrokerNamespace).Resource("clusterendpoints").Timeout(10 * time.Second).Do(ctx).Into(&remote); err != nil {
		return fmt.Errorf("list the broker's ClusterEndpoints: %w", err)
	}
	var local kubesource.ClusterEndpointList
	if err := s.local.Get().Namespace(s.o.LocalNamespace).Resource("clusterendpoints").Timeout(10 * time.Second).Do(ctx).Into(&local); err != nil {
		return fmt.Errorf("list the local ClusterEndpoints: %w", err)
	}
	want := map[string]bool{own.Name: true}
	n := 0
	for i := range remote.Items {
		e := &remote.Items[i]
		if e.Spec.ClusterID == own.Spec.ClusterID || e.Name != e.Spec.ClusterID {
			continue
		}
		want[e.Name] = true
		n++
		if err := upsert(ctx, s.local, s.o.LocalNamespace, e); err != nil {
			return fmt.Errorf("copy %s: %w", e.Name, err)
		}
	}
	for _, e := range local.Items {
		if want[e.Name] {
			continue
		}
		err := s.local.Delete().Namespace(s.o.LocalNamespace).Resource("clusterendpoints").Name(e.Name).Do(ctx).Error()
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete %s (gone from the broker): %w", e.Name, err)
		}
		s.o.Log.Info("cluster left the broker: its ClusterEndpoint deleted", "cluster", e.Name)
	}
	s.set(func(st *State) {
		if !st.Synced {
			s.o.Log.Info("broker sync established", "remotes", n)
		}
		st.Synced, st.Message, st.LastSync, st.Remotes = true, "", time.Now().UTC(), n
	})
	return nil
}

// upsert makes ns/e.Name's spec e.Spec, writing only when it differs.
func upsert(ctx context.Context, c *rest.RESTClient, ns string, e *kubesource.ClusterEndpoint) error {
	var cur kubesource.ClusterEndpoint
	err := c.Get().Namespace(ns).Resource("clusterendpoints").Name(e.Name).Timeout(10 * time.Second).Do(ctx).Into(&cur)
	obj := &kubesource.ClusterEndpoint{
		TypeMeta:   metav1.TypeMeta{APIVersion: kubesource.WeftGroupVersion.String(), Kind: "ClusterEndpoint"},
		ObjectMeta: metav1.ObjectMeta{Name: e.Name, Namespace: ns},
		Spec:       e.Spec,
	}
	switch {
	case apierrors.IsNotFound(err):
		return c.Post().Namespace(ns).Resource("clusterendpoints").Body(obj).Timeout(10 * time.Second).Do(ctx).Error()
	case err != nil:
		return err
	case reflect.DeepEqual(cur.Spec, e.Spec):
		return nil
	}
	obj.ResourceVersion = cur.ResourceVersion
	return c.Put().Namespace(ns).Resource("clusterendpoints").Name(e.Name).Body(obj).Timeout(10 * time.Second).Do(ctx).Error()
}

func (s *Syncer) set(f func(*State)) {
	s.mu.Lock()
	f(&s.st)
	s.mu.Unlock()
}
