// Package brokersync is the elected gateway's work with weft's own
// control plane (kubernetes.endpoints: weft): it publishes the cluster's
// ClusterEndpoint in the local namespace and, with a broker, pushes it
// there and copies every other cluster's into the local namespace, where
// every node's topology source watches them. Only the leader runs it, so
// the broker's load does not grow with the number of nodes. The broker
// unreachable, the copies stay as they are and the state says so.
//
// A cluster leaves when its ClusterEndpoint is deleted from the broker:
// every other leader deletes its copy. The leaving cluster's own leader,
// if it still runs, pushes the object again on its next pass: the broker's
// object is the cluster's registration, re-asserted like the local one
// (a broker that lost its data heals the same way). Removing a cluster is
// therefore: stop weft there (or take broker.kubeconfig away), then delete
// its object from the broker.
package brokersync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"

	"github.com/weft-net/weft/pkg/kubesource"
	"github.com/weft-net/weft/pkg/toposource"
)

// Reasons of the state (State.Reason), toposource's.
const (
	ReasonSynced            = toposource.BrokerSynced
	ReasonPending           = toposource.BrokerPending
	ReasonPublishFailed     = toposource.BrokerPublish
	ReasonBrokerUnreachable = toposource.BrokerUnreachable
	ReasonBrokerRefused     = toposource.BrokerRefused
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
	Leading bool   `json:"leading"`
	Broker  bool   `json:"broker"` // a broker is configured
	Synced  bool   `json:"synced"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// Since is when Synced last changed (the first failure of a run of
	// failures, the first success after them).
	Since    time.Time `json:"since,omitzero"`
	LastSync time.Time `json:"lastSync,omitzero"`
	Remotes  int       `json:"remotes"`
	Errors   uint64    `json:"errors"` // failed passes, total
}

// Syncer publishes and syncs ClusterEndpoints while Run runs.
type Syncer struct {
	o             Options
	local, broker Store
	now           func() time.Time

	mu sync.Mutex
	st State
}

// New builds the clients.
func New(o Options) (*Syncer, error) {
	local, err := kubesource.ClusterEndpointClient(o.Local)
	if err != nil {
		return nil, err
	}
	var broker Store
	if o.Broker != nil {
		bc, err := kubesource.ClusterEndpointClient(o.Broker)
		if err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		broker = RESTStore(bc, o.BrokerNamespace)
	}
	return NewWith(o, RESTStore(local, o.LocalNamespace), broker), nil
}

// NewWith is New with the stores given (broker nil: no broker); o's REST
// configurations are not used.
func NewWith(o Options, local, broker Store) *Syncer {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	s := &Syncer{o: o, local: local, broker: broker, now: time.Now}
	s.st.Broker = broker != nil
	return s
}

// State returns the sync state.
func (s *Syncer) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Run publishes ownOf() (the local ClusterEndpoint, named after its
// cluster ID) and syncs with the broker until ctx ends; ownOf is asked
// again on every pass, so what the leader learns later is published
// without a new election. It deletes nothing when it stops: the next
// leader overwrites the object.
func (s *Syncer) Run(ctx context.Context, ownOf func() kubesource.ClusterEndpoint) {
	s.set(func(st *State) {
		st.Leading = true
		if !st.Synced && st.Reason == "" {
			st.Reason, st.Since = ReasonPending, s.now().UTC()
		}
	})
	defer s.set(func(st *State) { st.Leading = false })
	t := time.NewTicker(s.o.Interval)
	defer t.Stop()
	kick := make(chan struct{}, 1)
	if s.broker != nil {
		go s.watchBroker(ctx, kick)
	}
	published := false
	for {
		own := ownOf()
		own.Namespace = s.o.LocalNamespace
		err := s.Pass(ctx, &own, &published)
		if err != nil && ctx.Err() == nil {
			s.fail(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
	}
}

// Pass is one pass: own is (re)published locally (an object edited or
// deleted by hand comes back) and, with a broker, synced there. When
// nothing changed a pass is one LIST in each API server, written against
// the lists: the passes run every retryPeriod, and per-object GETs
// exhausted client-go's default rate limit (5/s), which then delayed the
// copy of a remote failover by about a second. published tracks the local
// publication across passes, for the log.
func (s *Syncer) Pass(ctx context.Context, own *kubesource.ClusterEndpoint, published *bool) error {
	own.Name = own.Spec.ClusterID
	local, err := s.local.List(ctx)
	if err == nil {
		err = ensure(ctx, s.local, find(local, own.Name), own)
	}
	if err != nil {
		*published = false
		return failure{ReasonPublishFailed, fmt.Errorf("publish locally: %w", err)}
	}
	if !*published {
		*published = true
		s.o.Log.Info("ClusterEndpoint published", "cluster", own.Spec.ClusterID, "gateway", own.Spec.GatewayNode, "ip", own.Spec.GatewayIP)
	}
	if s.broker == nil {
		s.set(func(st *State) { st.Synced, st.Reason, st.Message = true, ReasonSynced, "" })
		return nil
	}
	return s.pass(ctx, own, local)
}

// find returns the item named name, or nil.
func find(l []kubesource.ClusterEndpoint, name string) *kubesource.ClusterEndpoint {
	for i := range l {
		if l[i].Name == name {
			return &l[i]
		}
	}
	return nil
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
		w, err := s.broker.Watch(ctx)
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

// failure is a pass's error with the State reason it gives.
type failure struct {
	reason string
	err    error
}

func (f failure) Error() string { return f.err.Error() }
func (f failure) Unwrap() error { return f.err }

// brokerFailure classifies an error of a broker call: an answer (a status
// error) is a refusal, anything else means the broker was not reached.
func brokerFailure(err error) failure {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return failure{ReasonBrokerRefused, err}
	}
	return failure{ReasonBrokerUnreachable, err}
}

func (s *Syncer) fail(err error) {
	reason := ReasonBrokerUnreachable
	var f failure
	if errors.As(err, &f) {
		reason = f.reason
	}
	s.set(func(st *State) {
		if st.Synced || st.Message != err.Error() {
			s.o.Log.Warn("broker sync failed; keeping the ClusterEndpoints copied so far", "err", err)
		}
		if st.Synced || st.Since.IsZero() || st.Reason == ReasonPending {
			st.Since = s.now().UTC()
		}
		st.Synced, st.Reason, st.Message = false, reason, err.Error()
		st.Errors++
	})
}

// pass pushes own to the broker and mirrors the broker's other
// ClusterEndpoints into the local namespace (listed as local): copies of
// clusters gone from the broker are deleted, and so is anything else there
// that is neither own nor on the broker.
func (s *Syncer) pass(ctx context.Context, own *kubesource.ClusterEndpoint, local []kubesource.ClusterEndpoint) error {
	remote, err := s.broker.List(ctx)
	if err != nil {
		return brokerFailure(fmt.Errorf("list the broker's ClusterEndpoints: %w", err))
	}
	if err := ensure(ctx, s.broker, find(remote, own.Name), own); err != nil {
		return brokerFailure(fmt.Errorf("push to the broker: %w", err))
	}
	want := map[string]bool{own.Name: true}
	n := 0
	for i := range remote {
		e := &remote[i]
		// A name that is not its cluster ID would be copied under a name
		// that no node looks for (kubesource skips it): not copied.
		if e.Spec.ClusterID == own.Spec.ClusterID || e.Name != e.Spec.ClusterID {
			continue
		}
		want[e.Name] = true
		n++
		if err := ensure(ctx, s.local, find(local, e.Name), e); err != nil {
			return failure{ReasonPublishFailed, fmt.Errorf("copy %s: %w", e.Name, err)}
		}
	}
	for _, e := range local {
		if want[e.Name] {
			continue
		}
		if err := s.local.Delete(ctx, e.Name); err != nil && !apierrors.IsNotFound(err) {
			return failure{ReasonPublishFailed, fmt.Errorf("delete %s (gone from the broker): %w", e.Name, err)}
		}
		s.o.Log.Info("cluster left the broker: its ClusterEndpoint deleted", "cluster", e.Name)
	}
	s.set(func(st *State) {
		if !st.Synced {
			s.o.Log.Info("broker sync established", "remotes", n)
			st.Since = s.now().UTC()
		}
		st.Synced, st.Reason, st.Message, st.LastSync, st.Remotes = true, ReasonSynced, "", s.now().UTC(), n
	})
	return nil
}

// conflictRetries bounds upsert's retries after a write lost a race (two
// leaders for a moment, an administrator's edit): the next pass retries
// anyway.
const conflictRetries = 3

// ensure makes the store's e.Name have e's spec given cur, the object as
// listed (nil: absent), writing only when it differs; a write that lost a
// race goes on as upsert.
func ensure(ctx context.Context, st Store, cur, e *kubesource.ClusterEndpoint) error {
	var err error
	switch {
	case cur == nil:
		err = st.Create(ctx, e.Name, e.Spec)
	case reflect.DeepEqual(cur.Spec, e.Spec):
		return nil
	default:
		err = st.Update(ctx, e.Name, cur.ResourceVersion, e.Spec)
	}
	if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err) {
		return upsert(ctx, st, e)
	}
	return err
}

// upsert makes the store's e.Name have e's spec, writing only when it
// differs; a write that lost a race (conflict, already exists) is retried
// on the object as it is now.
func upsert(ctx context.Context, st Store, e *kubesource.ClusterEndpoint) error {
	var err error
	for range conflictRetries {
		var cur *kubesource.ClusterEndpoint
		cur, err = st.Get(ctx, e.Name)
		switch {
		case apierrors.IsNotFound(err):
			err = st.Create(ctx, e.Name, e.Spec)
		case err != nil:
			return err
		case reflect.DeepEqual(cur.Spec, e.Spec):
			return nil
		default:
			err = st.Update(ctx, e.Name, cur.ResourceVersion, e.Spec)
		}
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return fmt.Errorf("ClusterEndpoint %s changed under %d writes in a row: %w", e.Name, conflictRetries, err)
}

func (s *Syncer) set(f func(*State)) {
	s.mu.Lock()
	f(&s.st)
	s.mu.Unlock()
}
