package reliability

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
)

// minSyncPeriod is weftd's least time between reconcile passes
// (agent.DefaultMinSyncPeriod).
const minSyncPeriod = time.Second

// Promise 1, burst form: Pods pods (200 in the full run) started at once on
// one node. Each ADD is a plugin event and a veth netlink event, and each
// used to cost a full pass (two link dumps and a table dump); passes are
// now at least minSyncPeriod apart, so the burst costs at most
// 2 + duration/minSyncPeriod passes whatever the number of pods.
func TestAddBurstPasses(t *testing.T) {
	defer run.sum.Track(t, PLoad)()
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 300*time.Second)
	n, cfg := oneNode(t, env, nodeSpec{})
	cfg["resyncInterval"] = "1h" // only the burst triggers passes
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.RunPod(ctx, "default", "anchor"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Ready && s.Attachments == 1 }); err != nil {
		t.Fatal(err)
	}
	count := run.size.Pods
	pods := make([]*harness.Pod, count)
	for i := range pods {
		if pods[i], err = n.NewPod("default", fmt.Sprintf("burst-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(minSyncPeriod + 500*time.Millisecond) // quiet: the first pass of the burst runs at once
	st0, err := w.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}

	start := make(chan struct{})
	errs := make([]error, count)
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = n.AttachLibcni(ctx, p)
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(t0)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ADD %d of %d: %v", i, count, err)
		}
	}
	st, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Ready && s.Attachments == count+1 })
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(minSyncPeriod + 500*time.Millisecond) // the last, coalesced pass
	if st, err = w.Status(ctx); err != nil {
		t.Fatal(err)
	}
	passes := st.LastReconcile.Passes - st0.LastReconcile.Passes
	triggers := st.LastReconcile.Triggers - st0.LastReconcile.Triggers
	bound := 3 + uint64(took/minSyncPeriod) // + one for the veth events that trail the last ADD
	t.Logf("%d concurrent ADDs in %v: %d reconcile passes for %d triggers (bound %d)", count, took.Round(time.Millisecond), passes, triggers, bound)
	run.sum.Figure(PLoad, "%d concurrent ADDs: %d reconcile passes for %d triggers in %v (bound %d)", count, passes, triggers, took.Round(time.Millisecond), bound)
	if triggers < uint64(count) {
		t.Errorf("%d triggers for %d ADDs: the plugin events were not counted", triggers, count)
	}
	if passes > bound || passes == 0 {
		t.Fatalf("%d concurrent ADDs in %v cost %d passes, want 1..%d", count, took, passes, bound)
	}
}
