package agent

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/discovery"
)

func TestPacerDelay(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name    string
		min     time.Duration
		lastEnd time.Time
		now     time.Time
		want    time.Duration
	}{
		{"before any pass", time.Second, time.Time{}, t0, 0},
		{"right after a pass", time.Second, t0, t0, time.Second},
		{"within the interval", time.Second, t0, t0.Add(300 * time.Millisecond), 700 * time.Millisecond},
		{"after a quiet period", time.Second, t0, t0.Add(time.Second), 0},
		{"long after", time.Second, t0, t0.Add(time.Hour), 0},
		{"disabled", -1, t0, t0, 0},
	}
	for _, tt := range tests {
		p := pacer{min: tt.min, lastEnd: tt.lastEnd}
		if got := p.delay(tt.now); got != tt.want {
			t.Errorf("%s: delay = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// A burst of triggers (200 pods starting: a plugin event and a veth event
// each) costs at most 1 + burst/MinSyncPeriod (+1 for a pass that straddles
// the end) passes, and the first trigger after a quiet period, like a
// config change at any time, is served at once.
func TestBurstOfTriggersCoalesced(t *testing.T) {
	const minSync = 400 * time.Millisecond
	a, k, rec, _ := newTestAgent(t)
	k.set(discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})
	a.d.MinSyncPeriod = minSync
	passes := func() int { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.calls }
	waitPass := func(after int, within time.Duration) time.Duration {
		t.Helper()
		t0 := time.Now()
		for passes() <= after {
			if time.Since(t0) > within {
				t.Fatalf("no pass %v after the trigger (passes %d)", within, passes())
			}
			time.Sleep(time.Millisecond)
		}
		return time.Since(t0)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx)
	waitPass(0, 5*time.Second)

	// The first trigger after a quiet period runs at once.
	time.Sleep(minSync + 100*time.Millisecond)
	quietLatency := waitPassAfter(t, a.Trigger, passes, waitPass)
	t.Logf("first trigger after a quiet period: pass started after %v", quietLatency)
	if quietLatency > minSync/2 {
		t.Errorf("first pass after a quiet period waited %v, want at once (MinSyncPeriod %v)", quietLatency, minSync)
	}
	// A config change right after a pass is not held back either.
	nowLatency := waitPassAfter(t, a.TriggerNow, passes, waitPass)
	if nowLatency > minSync/2 {
		t.Errorf("config-change pass waited %v, want at once", nowLatency)
	}

	// The burst: 200 pods starting within 1.2 s, each a plugin event and a
	// veth event.
	time.Sleep(minSync + 100*time.Millisecond)
	const burst = 1200 * time.Millisecond
	before := passes()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 9))
			time.Sleep(time.Duration(r.Int64N(int64(burst))))
			a.Trigger()
			a.Trigger()
		}()
	}
	wg.Wait()
	took := time.Since(start)
	time.Sleep(minSync + 200*time.Millisecond) // the last, coalesced pass
	got := passes() - before
	bound := 2 + int(took/minSync)
	t.Logf("400 triggers over %v: %d passes (bound %d)", took.Round(time.Millisecond), got, bound)
	if got > bound {
		t.Fatalf("400 triggers over %v cost %d passes, want <= %d", took, got, bound)
	}
	if got < 1 {
		t.Fatal("the burst was not served at all")
	}
	st := a.Status()
	if st.LastReconcile == nil || st.LastReconcile.Passes != uint64(passes()) || st.LastReconcile.Triggers < 402 {
		t.Fatalf("status does not count passes (%d run) and triggers (>= 402): %+v", passes(), st.LastReconcile)
	}
}

// waitPassAfter calls trigger and returns how long the next pass took to
// start.
func waitPassAfter(t *testing.T, trigger func(), passes func() int, waitPass func(int, time.Duration) time.Duration) time.Duration {
	t.Helper()
	n := passes()
	trigger()
	return waitPass(n, 5*time.Second)
}
