package reliability

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
)

// Promise 1: Pods pods attached and detached through libcni on one node,
// InFlight at a time: no verb fails, the attachment count is exact, and a
// cross-cluster TCP probe keeps passing throughout the churn.
func TestLoadChurn(t *testing.T) {
	defer run.sum.Track(t, PLoad)()
	env := harness.NewTestEnv(t)
	needBins(t, env)
	ctx := ctxFor(t, 300*time.Second)
	tc, err := harness.NewTwoClusters(env, harness.TwoClustersSpec{NodesPerCluster: 1, CNI: harness.CNIOptions{Layout: harness.LayoutFlannel, Weft: true}})
	if err != nil {
		t.Fatal(err)
	}
	n1, n2 := tc.C1.Nodes[0], tc.C2.Nodes[0]
	var ws []*harness.Weftd
	for _, x := range []struct {
		c, r *harness.Cluster
		n    *harness.Node
	}{{tc.C1, tc.C2, n1}, {tc.C2, tc.C1, n2}} {
		w, err := x.n.StartWeftd(ctx, x.c.WeftdConfig(x.n, x.n, []*harness.Cluster{x.r}, nil).MustYAML())
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	client, err := n1.RunPod(ctx, "default", "probe-client")
	if err != nil {
		t.Fatal(err)
	}
	server, err := n2.RunPod(ctx, "default", "probe-server")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if _, err := w.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := harness.ServeTCPEcho(env, server.NS, netip.AddrPortFrom(server.IP, 7100).String())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	probe := func() error {
		src, err := harness.DialTCP(ctx, client.NS, srv.Addr.String(), []byte("weft"))
		if err == nil && src != client.IP {
			err = fmt.Errorf("server saw %s, want the pod IP %s", src, client.IP)
		}
		return err
	}
	if err := probe(); err != nil {
		t.Fatalf("cross-cluster probe before the churn: %v", err)
	}

	// The probe runs throughout the churn.
	var probes, probeFails atomic.Int64
	var probeErr atomic.Value
	stop := make(chan struct{})
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			probes.Add(1)
			if err := probe(); err != nil {
				probeFails.Add(1)
				probeErr.Store(err)
			}
		}
	}()

	type sample struct {
		verb string
		d    time.Duration
		err  error
	}
	var mu sync.Mutex
	var samples []sample
	keep := 0
	work := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range run.size.InFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				p, err := n1.NewPod("default", fmt.Sprintf("load-%d", i))
				if err != nil {
					mu.Lock()
					samples = append(samples, sample{"ADD", 0, err})
					mu.Unlock()
					continue
				}
				t0 := time.Now()
				_, err = n1.AttachLibcni(ctx, p)
				d := time.Since(t0)
				mu.Lock()
				samples = append(samples, sample{"ADD", d, err})
				mu.Unlock()
				if err != nil || i%5 == 0 { // one in five stays attached
					continue
				}
				t0 = time.Now()
				err = n1.DetachLibcni(ctx, p)
				d = time.Since(t0)
				mu.Lock()
				samples = append(samples, sample{"DEL", d, err})
				mu.Unlock()
				if err == nil {
					p.NS.Delete()
				}
			}
		}()
	}
	for i := 0; i < run.size.Pods; i++ {
		if i%5 == 0 {
			keep++
		}
		work <- i
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	<-probeDone

	var lat []time.Duration
	failed := 0
	for _, s := range samples {
		if s.err != nil {
			failed++
			t.Errorf("%s failed: %v", s.verb, s.err)
			continue
		}
		lat = append(lat, s.d)
	}
	if failed > 0 {
		t.Fatalf("%d of %d verbs failed", failed, len(samples))
	}
	want := keep + 1 // + the probe client
	if _, err := ws[0].WaitFor(ctx, func(s api.Status) bool { return s.Ready && s.Attachments == want }); err != nil {
		t.Fatalf("attachment count not exact: %v", err)
	}
	st, _ := ws[0].Status(ctx)
	if st.Attachments != want {
		t.Fatalf("attachments = %d, want %d", st.Attachments, want)
	}
	if f := probeFails.Load(); f > 0 {
		t.Fatalf("%d of %d cross-cluster probes failed during the churn (last: %v)", f, probes.Load(), probeErr.Load())
	}
	if probes.Load() == 0 {
		t.Fatal("no probe ran during the churn")
	}
	if err := probe(); err != nil {
		t.Fatalf("cross-cluster probe after the churn: %v", err)
	}
	rate := float64(len(samples)) / elapsed.Seconds()
	t.Logf("%d verbs in %v: %.1f verbs/s, p50 %s, p99 %s; %d probes passed", len(samples), elapsed.Round(time.Millisecond), rate, Ms(Percentile(lat, 50)), Ms(Percentile(lat, 99)), probes.Load())
	run.sum.Figure(PLoad, "%d pods/%d in flight: %d verbs, %.1f verbs/s, p50 %s, p99 %s, %d/%d probes ok",
		run.size.Pods, run.size.InFlight, len(samples), rate, Ms(Percentile(lat, 50)), Ms(Percentile(lat, 99)), probes.Load(), probes.Load())
}
