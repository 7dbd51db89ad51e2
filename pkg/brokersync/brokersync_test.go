package brokersync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/weft-net/weft/pkg/kubesource"
)

var gr = schema.GroupResource{Group: "weft.dev", Resource: "clusterendpoints"}

// memStore is a namespace of ClusterEndpoints in memory, with the API's
// optimistic concurrency (resourceVersion) and its error kinds. conflicts
// makes that many next writes fail with a conflict, as if someone else
// had written first; down makes every call fail as a broker that is away.
type memStore struct {
	mu        sync.Mutex
	objs      map[string]kubesource.ClusterEndpoint
	rv        int
	conflicts int
	down      error
	writes    int
	reads     int // GETs and LISTs
}

func newMem(es ...kubesource.ClusterEndpointSpec) *memStore {
	m := &memStore{objs: map[string]kubesource.ClusterEndpoint{}}
	for _, e := range es {
		m.put(e.ClusterID, e)
	}
	m.writes = 0
	return m
}

func (m *memStore) put(name string, spec kubesource.ClusterEndpointSpec) {
	m.rv++
	e := kubesource.ClusterEndpoint{Spec: spec}
	e.Name, e.ResourceVersion = name, strconv.Itoa(m.rv)
	m.objs[name] = e
	m.writes++
}

func (m *memStore) Get(_ context.Context, name string) (*kubesource.ClusterEndpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	if m.down != nil {
		return nil, m.down
	}
	e, ok := m.objs[name]
	if !ok {
		return nil, apierrors.NewNotFound(gr, name)
	}
	return &e, nil
}

func (m *memStore) List(context.Context) ([]kubesource.ClusterEndpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	if m.down != nil {
		return nil, m.down
	}
	return slices.Collect(maps.Values(m.objs)), nil
}

func (m *memStore) Create(_ context.Context, name string, spec kubesource.ClusterEndpointSpec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down != nil {
		return m.down
	}
	if _, ok := m.objs[name]; ok {
		return apierrors.NewAlreadyExists(gr, name)
	}
	if m.conflicts > 0 {
		m.conflicts--
		m.put(name, kubesource.ClusterEndpointSpec{ClusterID: name, GatewayNode: "someone-else"})
		return apierrors.NewAlreadyExists(gr, name)
	}
	m.put(name, spec)
	return nil
}

func (m *memStore) Update(_ context.Context, name, rv string, spec kubesource.ClusterEndpointSpec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down != nil {
		return m.down
	}
	cur, ok := m.objs[name]
	if !ok {
		return apierrors.NewNotFound(gr, name)
	}
	if m.conflicts > 0 {
		m.conflicts--
		m.put(name, cur.Spec) // someone else wrote: a new resourceVersion
		return apierrors.NewConflict(gr, name, errors.New("the object has been modified"))
	}
	if cur.ResourceVersion != rv {
		return apierrors.NewConflict(gr, name, errors.New("the object has been modified"))
	}
	m.put(name, spec)
	return nil
}

func (m *memStore) Delete(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down != nil {
		return m.down
	}
	if _, ok := m.objs[name]; !ok {
		return apierrors.NewNotFound(gr, name)
	}
	delete(m.objs, name)
	m.writes++
	return nil
}

func (m *memStore) Watch(context.Context) (watch.Interface, error) { return watch.NewFake(), nil }

// specs is the store's content: name -> gateway node.
func (m *memStore) specs() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]string{}
	for n, e := range m.objs {
		out[n] = e.Spec.GatewayNode
	}
	return out
}

func spec(id, gw string) kubesource.ClusterEndpointSpec {
	return kubesource.ClusterEndpointSpec{ClusterID: id, PodCIDRs: []string{"10.9.0.0/16"}, GatewayNode: gw, GatewayIP: "192.168.9.12", Cable: "vxlan", Port: 4801, VNI: 101}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestPass(t *testing.T) {
	own := spec("c1", "c1-n2")
	for _, tc := range []struct {
		name         string
		local        []kubesource.ClusterEndpointSpec
		broker       []kubesource.ClusterEndpointSpec
		noBroker     bool
		conflicts    int // on the local store
		brokerDown   error
		wantLocal    map[string]string
		wantBroker   map[string]string
		wantSynced   bool
		wantReason   string
		wantRemotes  int
		localWrites  int // -1: not checked
		brokerWrites int
		// steady: one read (the LIST) in each store, as every pass in
		// which nothing changed: the passes run every retryPeriod and
		// must stay under client-go's rate limit.
		steady bool
	}{
		{name: "first pass: publish, push, copy the others",
			broker:    []kubesource.ClusterEndpointSpec{spec("c2", "c2-n2"), spec("c3", "c3-n2")},
			wantLocal: map[string]string{"c1": "c1-n2", "c2": "c2-n2", "c3": "c3-n2"}, wantBroker: map[string]string{"c1": "c1-n2", "c2": "c2-n2", "c3": "c3-n2"},
			wantSynced: true, wantReason: ReasonSynced, wantRemotes: 2, localWrites: 3, brokerWrites: 1},
		{name: "nothing changed: no write",
			local:     []kubesource.ClusterEndpointSpec{own, spec("c2", "c2-n2")},
			broker:    []kubesource.ClusterEndpointSpec{own, spec("c2", "c2-n2")},
			wantLocal: map[string]string{"c1": "c1-n2", "c2": "c2-n2"}, wantBroker: map[string]string{"c1": "c1-n2", "c2": "c2-n2"},
			wantSynced: true, wantReason: ReasonSynced, wantRemotes: 1, localWrites: 0, brokerWrites: 0, steady: true},
		{name: "a remote's gateway moved: the copy follows",
			local:     []kubesource.ClusterEndpointSpec{own, spec("c2", "c2-n2")},
			broker:    []kubesource.ClusterEndpointSpec{own, spec("c2", "c2-n3")},
			wantLocal: map[string]string{"c1": "c1-n2", "c2": "c2-n3"}, wantBroker: map[string]string{"c1": "c1-n2", "c2": "c2-n3"},
			wantSynced: true, wantReason: ReasonSynced, wantRemotes: 1, localWrites: 1, brokerWrites: 0},
		{name: "a cluster left the broker: its copy is deleted",
			local:     []kubesource.ClusterEndpointSpec{own, spec("c2", "c2-n2"), spec("c3", "c3-n2")},
			broker:    []kubesource.ClusterEndpointSpec{own, spec("c2", "c2-n2")},
			wantLocal: map[string]string{"c1": "c1-n2", "c2": "c2-n2"}, wantBroker: map[string]string{"c1": "c1-n2", "c2": "c2-n2"},
			wantSynced: true, wantReason: ReasonSynced, wantRemotes: 1, localWrites: 1, brokerWrites: 0},
		{name: "own object deleted from the broker: pushed again (the cluster still runs)",
			local:     []kubesource.ClusterEndpointSpec{own, spec("c2", "c2-n2")},
			broker:    []kubesource.ClusterEndpointSpec{spec("c2", "c2-n2")},
			wantLocal: map[string]string{"c1": "c1-n2", "c2": "c2-n2"}, wantBroker: map[string]string{"c1": "c1-n2", "c2": "c2-n2"},
			wantSynced: true, wantReason: ReasonSynced, wantRemotes: 1, localWrites: 0, brokerWrites: 1},
		{name: "own cluster's object on the broker from an old leader: overwritten, never copied as a remote",
			local:     []kubesource.ClusterEndpointSpec{spec("c1", "c1-n3")},
			broker:    []kubesource.ClusterEndpointSpec{spec("c1", "c1-n3"), spec("c2", "c2-n2")},
			wantLocal: map[string]string{"c1": "c1-n2", "c2": "c2-n2"}, wantBroker: map[string]string{"c1": "c1-n2", "c2": "c2-n2"},
			wantSynced: true, wantReason: ReasonSynced, wantRemotes: 1, localWrites: 2, brokerWrites: 1},
		{name: "a conflict on the local write is retried on the current object",
			local: []kubesource.ClusterEndpointSpec{spec("c1", "c1-n3")}, conflicts: 2,
			broker:    []kubesource.ClusterEndpointSpec{own},
			wantLocal: map[string]string{"c1": "c1-n2"}, wantBroker: map[string]string{"c1": "c1-n2"},
			wantSynced: true, wantReason: ReasonSynced, localWrites: -1},
		{name: "a create that lost the race is retried as an update",
			conflicts: 1, noBroker: true,
			wantLocal: map[string]string{"c1": "c1-n2"}, wantSynced: true, wantReason: ReasonSynced, localWrites: -1},
		{name: "conflicts that do not stop fail the pass, which the next one retries",
			local: []kubesource.ClusterEndpointSpec{spec("c1", "c1-n3")}, conflicts: 10,
			broker:    []kubesource.ClusterEndpointSpec{spec("c2", "c2-n2")},
			wantLocal: map[string]string{"c1": "c1-n3"}, wantBroker: map[string]string{"c2": "c2-n2"},
			wantReason: ReasonPublishFailed, localWrites: -1},
		{name: "broker unreachable: the copies stay",
			local:      []kubesource.ClusterEndpointSpec{own, spec("c2", "c2-n2")},
			broker:     []kubesource.ClusterEndpointSpec{own, spec("c2", "c2-n2")},
			brokerDown: fmt.Errorf("dial tcp 10.0.0.1:6443: connect: connection refused"),
			wantLocal:  map[string]string{"c1": "c1-n2", "c2": "c2-n2"}, wantBroker: map[string]string{"c1": "c1-n2", "c2": "c2-n2"},
			wantReason: ReasonBrokerUnreachable, localWrites: 0, brokerWrites: 0},
		{name: "broker refuses: the copies stay",
			local:      []kubesource.ClusterEndpointSpec{own, spec("c2", "c2-n2")},
			broker:     []kubesource.ClusterEndpointSpec{own, spec("c2", "c2-n2")},
			brokerDown: apierrors.NewForbidden(gr, "c1", errors.New("weft-member may not")),
			wantLocal:  map[string]string{"c1": "c1-n2", "c2": "c2-n2"}, wantBroker: map[string]string{"c1": "c1-n2", "c2": "c2-n2"},
			wantReason: ReasonBrokerRefused, localWrites: 0, brokerWrites: 0},
		{name: "no broker: publish only",
			noBroker: true, local: []kubesource.ClusterEndpointSpec{spec("c2", "c2-n2")},
			wantLocal: map[string]string{"c1": "c1-n2", "c2": "c2-n2"}, wantSynced: true, wantReason: ReasonSynced, localWrites: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local, broker := newMem(tc.local...), newMem(tc.broker...)
			local.conflicts, broker.down = tc.conflicts, tc.brokerDown
			var b Store = broker
			if tc.noBroker {
				b = nil
			}
			s := NewWith(Options{LocalNamespace: "weft-system", Log: quiet()}, local, b)
			e := kubesource.ClusterEndpoint{Spec: own}
			published := false
			if err := s.Pass(context.Background(), &e, &published); err != nil {
				s.fail(err)
			}
			st := s.State()
			if got := local.specs(); !maps.Equal(got, tc.wantLocal) {
				t.Errorf("local %v, want %v", got, tc.wantLocal)
			}
			if !tc.noBroker {
				broker.down = nil
				if got := broker.specs(); !maps.Equal(got, tc.wantBroker) {
					t.Errorf("broker %v, want %v", got, tc.wantBroker)
				}
			}
			if st.Synced != tc.wantSynced || st.Reason != tc.wantReason || (st.Synced && st.Remotes != tc.wantRemotes) {
				t.Errorf("state %+v, want synced %v reason %s remotes %d", st, tc.wantSynced, tc.wantReason, tc.wantRemotes)
			}
			if !st.Synced && (st.Message == "" || st.Errors != 1 || st.Since.IsZero()) {
				t.Errorf("failed pass: state %+v lacks the message, the error count or since", st)
			}
			if tc.localWrites >= 0 && local.writes != tc.localWrites {
				t.Errorf("%d local writes, want %d", local.writes, tc.localWrites)
			}
			if !tc.noBroker && tc.localWrites >= 0 && broker.writes != tc.brokerWrites {
				t.Errorf("%d broker writes, want %d", broker.writes, tc.brokerWrites)
			}
			if tc.steady && (local.reads != 1 || broker.reads != 1) {
				t.Errorf("a pass with nothing to do read %d times locally and %d times on the broker, want one LIST each", local.reads, broker.reads)
			}
		})
	}
}

// TestStateSince: Since marks the start of a run of failures (not each
// failure) and the first success after it.
func TestStateSince(t *testing.T) {
	local, broker := newMem(), newMem()
	s := NewWith(Options{Log: quiet()}, local, broker)
	clock := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return clock }
	e := kubesource.ClusterEndpoint{Spec: spec("c1", "c1-n2")}
	published := false
	step := func(down bool) State {
		clock = clock.Add(time.Second)
		broker.down = nil
		if down {
			broker.down = errors.New("connection refused")
		}
		if err := s.Pass(context.Background(), &e, &published); err != nil {
			s.fail(err)
		}
		return s.State()
	}
	t0 := clock
	if st := step(false); !st.Synced || !st.Since.Equal(t0.Add(time.Second)) {
		t.Fatalf("first success: %+v", st)
	}
	step(false)
	if st := step(true); st.Synced || !st.Since.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("first failure: %+v", st)
	}
	if st := step(true); st.Since != t0.Add(3*time.Second) || st.Errors != 2 {
		t.Fatalf("second failure moved since or did not count: %+v", st)
	}
	if st := step(false); !st.Synced || !st.Since.Equal(t0.Add(5*time.Second)) || st.Errors != 2 {
		t.Fatalf("back: %+v", st)
	}
}

// TestRunLeadership: Run marks the state leading (Pending until the first
// pass) and not leading when its ctx ends; it deletes nothing then.
func TestRunLeadership(t *testing.T) {
	local, broker := newMem(), newMem(spec("c2", "c2-n2"))
	s := NewWith(Options{Interval: 10 * time.Millisecond, Log: quiet()}, local, broker)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx, func() kubesource.ClusterEndpoint { return kubesource.ClusterEndpoint{Spec: spec("c1", "c1-n2")} })
	}()
	deadline := time.Now().Add(5 * time.Second)
	for st := s.State(); !st.Synced; st = s.State() {
		if st.Reason != "" && (!st.Leading || st.Reason != ReasonPending) { // "": Run has not started yet
			t.Fatalf("before the first pass: %+v", st)
		}
		if time.Now().After(deadline) {
			t.Fatal("no successful pass in 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if st := s.State(); st.Leading {
		t.Errorf("Run ended, still leading: %+v", st)
	}
	if got := local.specs(); !maps.Equal(got, map[string]string{"c1": "c1-n2", "c2": "c2-n2"}) {
		t.Errorf("local after Run ended: %v", got)
	}
}
