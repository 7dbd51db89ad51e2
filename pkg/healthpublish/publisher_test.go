package healthpublish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"

	"github.com/weft-net/weft/pkg/pathhealth"
)

// fakeTarget records what Run writes; fail makes writes fail.
type fakeTarget struct {
	mu     sync.Mutex
	next   pathhealth.Snapshot
	writes []pathhealth.Snapshot
	tries  int
	fail   bool
}

func (f *fakeTarget) prepare(s pathhealth.Snapshot) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next = s
	return routeAgentShape(routeAgentStatus(s, "", nil))
}

func (f *fakeTarget) write(context.Context, time.Time) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tries++
	if f.fail {
		return ResultError, errors.New("connection refused")
	}
	f.writes = append(f.writes, f.next)
	return ResultUpdated, nil
}

func (f *fakeTarget) written() {}

func (f *fakeTarget) count() (writes, tries int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.writes), f.tries
}

// The loop itself, with a short interval: jitter is not written, a change
// is at once, the refresh comes after the interval, the bucket defers a
// flapping node, and a failed write is retried with the latest snapshot.
func TestRunLoop(t *testing.T) {
	const interval = 400 * time.Millisecond
	f := &fakeTarget{}
	p, err := New(Options{Kind: KindRouteAgent, Namespace: "ns", Node: "c1-n1", Interval: interval, Burst: 3, Rest: &rest.Config{}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	p.newTarget = func(*rest.Config) (target, error) { return f, nil }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)

	rc2 := tgt("remote/c2", pathhealth.HopRemote, "c2", "c2-n2", "10.2.0.1:4803", true, time.Millisecond)
	waitWithin := func(n int, d time.Duration) bool {
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			if w, _ := f.count(); w >= n {
				return true
			}
			time.Sleep(5 * time.Millisecond)
		}
		return false
	}
	wait := func(n int) bool { return waitWithin(n, 2*time.Second) }
	p.Publish(snap(rc2))
	if !wait(1) {
		t.Fatal("the first snapshot is not written")
	}
	start := time.Now()
	// RTT jitter for less than the interval: no write.
	for i := range 20 {
		j := rc2
		j.RTT.Last += time.Duration(i) * time.Microsecond
		p.Publish(snap(j))
		time.Sleep(10 * time.Millisecond)
	}
	if w, _ := f.count(); w != 1 && time.Since(start) < interval {
		t.Errorf("%d writes after RTT jitter only, want 1", w)
	}
	// The refresh, one interval after the write.
	if !wait(2) {
		t.Fatal("no refresh after the interval")
	}
	if d := time.Since(start); d < interval/2 {
		t.Errorf("refresh after %s, want about %s", d, interval)
	}
	// A change: at once (the refresh took one token, the bucket refilled).
	down := rc2
	down.Up, down.Message = false, "no answer"
	t0 := time.Now()
	p.Publish(snap(down))
	if !wait(3) || time.Since(t0) > 300*time.Millisecond {
		t.Errorf("a change written after %s, want at once", time.Since(t0))
	}
	// Flapping: the bucket (3, one per interval) holds it to about one
	// write per interval; the latest state is what is written.
	t0 = time.Now()
	for i := range 40 {
		s := rc2
		if i%2 == 0 {
			s = down
		}
		p.Publish(snap(s))
		time.Sleep(10 * time.Millisecond)
	}
	p.Publish(snap(rc2))
	elapsed := time.Since(t0)
	w, _ := f.count()
	if max := 3 + 3 + int(elapsed/interval) + 1; w > max {
		t.Errorf("%d writes while flapping for %s, want at most %d", w, elapsed, max)
	}
	if !wait(w + 1) {
		t.Fatal("the last state is never written")
	}
	f.mu.Lock()
	last := f.writes[len(f.writes)-1]
	f.mu.Unlock()
	if !last.Targets[0].Up {
		t.Error("the write after the flapping is not the latest snapshot")
	}
	// The API away: retried with backoff, the latest snapshot kept.
	f.mu.Lock()
	f.fail = true
	f.mu.Unlock()
	p.Publish(snap(down))
	time.Sleep(1500 * time.Millisecond)
	_, tries := f.count()
	if st := p.Stats(); st.Errors == 0 || st.LastError == "" {
		t.Errorf("stats while failing: %+v", st)
	}
	f.mu.Lock()
	f.fail = false
	f.mu.Unlock()
	w, _ = f.count()
	// The retry comes when the backoff says: at most three failures fit in
	// those 1.5 s (delays of at least 0.25, 0.5, 1 s), and the retry after
	// the third is drawn from 1–3 s (retryDelay); a 2 s wait missed it now
	// and then.
	if !waitWithin(w+1, 10*time.Second) {
		t.Fatalf("not written after the API came back (%d tries)", tries)
	}
	f.mu.Lock()
	last = f.writes[len(f.writes)-1]
	f.mu.Unlock()
	if last.Targets[0].Up {
		t.Error("the change made while the API was away is lost")
	}
}

func TestRetryDelay(t *testing.T) {
	away := errors.New("dial tcp 192.168.250.1:6443: connect: connection refused")
	forbidden := apierrors.NewForbidden(schema.GroupResource{Group: "weft.dev", Resource: "nodepaths"}, "c1-n1", errors.New("RBAC"))
	missing := fmt.Errorf("create routeagents: %w", apierrors.NewNotFound(schema.GroupResource{Group: "submariner.io", Resource: "routeagents"}, ""))
	for _, c := range []struct {
		name     string
		err      error
		n        int
		min, max time.Duration
	}{
		{"away, first", away, 1, 250 * time.Millisecond, 750 * time.Millisecond},
		{"away, long", away, 20, 7500 * time.Millisecond, 22500 * time.Millisecond},
		{"forbidden, first (a restarting API server)", forbidden, 1, 250 * time.Millisecond, 750 * time.Millisecond},
		{"forbidden, long", forbidden, 20, 30 * time.Second, 90 * time.Second},
		{"no CRD, long", missing, 20, 30 * time.Second, 90 * time.Second},
	} {
		for range 50 {
			if d := retryDelay(c.err, c.n, time.Minute); d < c.min || d > c.max {
				t.Errorf("%s: %s, want %s..%s", c.name, d, c.min, c.max)
				break
			}
		}
	}
}
