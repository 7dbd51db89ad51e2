package gatewayelect

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/utils/ptr"
)

const (
	ns    = "weft-system"
	label = "weft.dev/gateway"
)

func node(name string, candidate bool) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "fe80::12"}, {Type: corev1.NodeExternalIP, Address: "2001:db8::12"},
			{Type: corev1.NodeInternalIP, Address: "fd00:10::12"}, {Type: corev1.NodeInternalIP, Address: "192.168.10.12"},
		}}}
	if candidate {
		n.Labels[label] = "true"
	}
	return n
}

func lease(holder string, renew time.Time, seconds int32) *coordinationv1.Lease {
	return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: LeaseName}, Spec: coordinationv1.LeaseSpec{
		HolderIdentity: ptr.To(holder), LeaseDurationSeconds: ptr.To(seconds),
		AcquireTime: &metav1.MicroTime{Time: renew}, RenewTime: &metav1.MicroTime{Time: renew}, LeaseTransitions: ptr.To[int32](3),
	}}
}

// run is one weftd's elector on the fake API: Lead records its calls and
// blocks until its ctx ends.
type run struct {
	e      *Elector
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	leads   int
	ip, ip6 netip.Addr
	leading bool
}

func start(t *testing.T, cs *fake.Clientset, name string) *run {
	t.Helper()
	r := &run{done: make(chan struct{})}
	e, err := New(Options{
		Leases: cs.CoordinationV1(), Nodes: noWatchList{cs.CoreV1()}, Namespace: ns, Node: name, Label: label,
		Duration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 100 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(testOut, nil)),
		Lead: func(ctx context.Context, ip, ip6 netip.Addr) {
			r.mu.Lock()
			r.leads++
			r.ip, r.ip6, r.leading = ip, ip6, true
			r.mu.Unlock()
			<-ctx.Done()
			r.mu.Lock()
			r.leading = false
			r.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.e = e
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { defer close(r.done); e.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *run) stop() {
	r.cancel()
	<-r.done
}

func (r *run) isLeading() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leading
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func getLease(t *testing.T, cs *fake.Clientset) *coordinationv1.Lease {
	t.Helper()
	l, err := cs.CoordinationV1().Leases(ns).Get(context.Background(), LeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func holder(l *coordinationv1.Lease) string { return ptr.Deref(l.Spec.HolderIdentity, "") }

func setLabel(t *testing.T, cs *fake.Clientset, name string, on bool) {
	t.Helper()
	if _, err := cs.CoreV1().Nodes().Update(context.Background(), node(name, on), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestElection(t *testing.T) {
	for _, tc := range []struct {
		name string
		objs func() []any
		run  func(t *testing.T, cs *fake.Clientset)
	}{
		{name: "candidate takes a free Lease and leads with its InternalIP",
			run: func(t *testing.T, cs *fake.Clientset) {
				r := start(t, cs, "c1-n2")
				eventually(t, "leading", r.isLeading)
				if r.ip != netip.MustParseAddr("192.168.10.12") || r.ip6 != netip.MustParseAddr("fd00:10::12") {
					t.Errorf("Lead got %s %s, want the Node's InternalIP of each family (not the link-local or external one)", r.ip, r.ip6)
				}
				if h := holder(getLease(t, cs)); h != "c1-n2" {
					t.Errorf("holder %q", h)
				}
				st := r.e.Status()
				if !st.Candidate || !st.Leading || st.Holder != "c1-n2" || st.RenewTime.IsZero() {
					t.Errorf("status %+v", st)
				}
			}},
		{name: "no label: never joins, no Lease written",
			objs: func() []any { return []any{node("c1-n2", false)} },
			run: func(t *testing.T, cs *fake.Clientset) {
				r := start(t, cs, "c1-n2")
				time.Sleep(500 * time.Millisecond)
				if _, err := cs.CoordinationV1().Leases(ns).Get(context.Background(), LeaseName, metav1.GetOptions{}); err == nil {
					t.Error("a non-candidate wrote the Lease")
				}
				if st := r.e.Status(); st.Candidate || st.Leading {
					t.Errorf("status %+v", st)
				}
			}},
		{name: "label removed: Lead ends and the Lease is released (not left to expire)",
			run: func(t *testing.T, cs *fake.Clientset) {
				r := start(t, cs, "c1-n2")
				eventually(t, "leading", r.isLeading)
				setLabel(t, cs, "c1-n2", false)
				eventually(t, "Lead's ctx ended", func() bool { return !r.isLeading() })
				eventually(t, "released", func() bool { return holder(getLease(t, cs)) == "" })
				if d := ptr.Deref(getLease(t, cs).Spec.LeaseDurationSeconds, 0); d != 1 {
					t.Errorf("released Lease duration %d s, want 1 (the next candidate takes it on its next retry)", d)
				}
				eventually(t, "status not a candidate", func() bool { st := r.e.Status(); return !st.Candidate && !st.Leading })
			}},
		{name: "label back: joins again and leads again",
			run: func(t *testing.T, cs *fake.Clientset) {
				r := start(t, cs, "c1-n2")
				eventually(t, "leading", r.isLeading)
				setLabel(t, cs, "c1-n2", false)
				eventually(t, "released", func() bool { return holder(getLease(t, cs)) == "" })
				setLabel(t, cs, "c1-n2", true)
				eventually(t, "leading again", r.isLeading)
				if r.leads != 2 {
					t.Errorf("Lead ran %d times, want 2", r.leads)
				}
			}},
		{name: "weftd stops (SIGTERM): the Lease stays held; the successor re-takes it as the same identity",
			run: func(t *testing.T, cs *fake.Clientset) {
				r := start(t, cs, "c1-n2")
				eventually(t, "leading", r.isLeading)
				before := getLease(t, cs)
				r.stop()
				if r.isLeading() {
					t.Fatal("Lead still running after Run returned")
				}
				after := getLease(t, cs)
				if holder(after) != "c1-n2" || ptr.Deref(after.Spec.LeaseDurationSeconds, 0) != 1 {
					t.Fatalf("after SIGTERM the Lease is %+v: released", after.Spec)
				}
				r2 := start(t, cs, "c1-n2")
				eventually(t, "successor leading", r2.isLeading)
				l := getLease(t, cs)
				if holder(l) != "c1-n2" || ptr.Deref(l.Spec.LeaseTransitions, -1) != ptr.Deref(before.Spec.LeaseTransitions, -2) ||
					!l.Spec.AcquireTime.Equal(before.Spec.AcquireTime) {
					t.Errorf("successor changed the leadership: before %+v, after %+v", before.Spec, l.Spec)
				}
				if st := r2.e.Status(); st.Transitions != 0 {
					t.Errorf("successor counted %d leadership changes", st.Transitions)
				}
			}},
		{name: "held by another candidate, not expired: follows, does not lead",
			objs: func() []any { return []any{node("c1-n2", true), lease("c1-n3", time.Now().Add(time.Hour), 3600)} },
			run: func(t *testing.T, cs *fake.Clientset) {
				r := start(t, cs, "c1-n2")
				eventually(t, "holder seen", func() bool { return r.e.Status().Holder == "c1-n3" })
				time.Sleep(300 * time.Millisecond)
				if r.isLeading() || holder(getLease(t, cs)) != "c1-n3" {
					t.Errorf("took a held Lease: leading %v, holder %s", r.isLeading(), holder(getLease(t, cs)))
				}
			}},
		{name: "held by another whose Lease expired: takes over, a leadership change",
			objs: func() []any { return []any{node("c1-n2", true), lease("c1-n3", time.Now().Add(-time.Minute), 1)} },
			run: func(t *testing.T, cs *fake.Clientset) {
				r := start(t, cs, "c1-n2")
				eventually(t, "leading", r.isLeading)
				l := getLease(t, cs)
				if holder(l) != "c1-n2" || ptr.Deref(l.Spec.LeaseTransitions, 0) != 4 {
					t.Errorf("Lease %+v: want holder c1-n2, transitions 4", l.Spec)
				}
			}},
		{name: "label removed while another holds the Lease: the release leaves it alone",
			objs: func() []any { return []any{node("c1-n2", true), lease("c1-n3", time.Now().Add(time.Hour), 3600)} },
			run: func(t *testing.T, cs *fake.Clientset) {
				r := start(t, cs, "c1-n2")
				eventually(t, "holder seen", func() bool { return r.e.Status().Holder == "c1-n3" })
				setLabel(t, cs, "c1-n2", false)
				eventually(t, "not a candidate", func() bool { return !r.e.Status().Candidate })
				if l := getLease(t, cs); holder(l) != "c1-n3" || ptr.Deref(l.Spec.LeaseDurationSeconds, 0) != 3600 {
					t.Errorf("another's Lease changed: %+v", l.Spec)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := []any{node("c1-n2", true)}
			if tc.objs != nil {
				objs = tc.objs()
			}
			cs := fake.NewClientset()
			for _, o := range objs {
				var err error
				switch o := o.(type) {
				case *corev1.Node:
					_, err = cs.CoreV1().Nodes().Create(context.Background(), o, metav1.CreateOptions{})
				case *coordinationv1.Lease:
					_, err = cs.CoordinationV1().Leases(ns).Create(context.Background(), o, metav1.CreateOptions{})
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			tc.run(t, cs)
		})
	}
}

func TestNewNeedsClients(t *testing.T) {
	if _, err := New(Options{Lead: func(context.Context, netip.Addr, netip.Addr) {}}); err == nil {
		t.Error("New without Rest or clients: no error")
	}
	if _, err := New(Options{Rest: nil, Leases: fake.NewClientset().CoordinationV1(), Nodes: fake.NewClientset().CoreV1()}); err == nil {
		t.Error("New without Lead: no error")
	}
}

var testOut io.Writer = io.Discard

// noWatchList is the fake's Node client saying, as the fake clientset
// does, that it cannot stream lists (the reflector then lists and
// watches).
type noWatchList struct{ corev1client.NodesGetter }

func (noWatchList) IsWatchListSemanticsUnSupported() bool { return true }
