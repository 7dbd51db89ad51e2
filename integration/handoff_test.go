package integration

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/client"
)

// handoffNode builds a one-node cluster (the node is its own gateway) with
// one remote cluster in the config, and the given primary-CNI layout with
// weft last in the chain.
func handoffNode(t *testing.T, env *harness.Env, cni harness.CNIOptions) (*harness.Node, harness.WeftdConfig) {
	t.Helper()
	u, err := harness.NewUnderlay(env)
	if err != nil {
		t.Fatal(err)
	}
	cni.Weft = true
	c, err := harness.NewCluster(env, u, harness.ClusterSpec{
		ID: "c1", Nodes: 1, PodCIDR: "10.1.0.0/16", ServiceCIDR: "10.101.0.0/16", NodeIPBase: "192.168.10.0", CNI: cni,
	})
	if err != nil {
		t.Fatal(err)
	}
	n := c.Nodes[0]
	cfg := c.WeftdConfig(n, n, nil, nil)
	cfg["remotes"] = []any{map[string]any{
		"id": "c2", "podCIDRs": []string{"10.2.0.0/16"}, "serviceCIDRs": []string{"10.102.0.0/16"}, "gatewayIP": "192.168.20.11",
	}}
	cfg["resyncInterval"] = "5s"
	return n, cfg
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// (a) The daemon learns the CNI interface through a real chain, for the
// flannel-like and the Calico-like layouts, and says how it learned it.
func TestHandoffLayouts(t *testing.T) {
	cases := []struct {
		name       string
		cni        harness.CNIOptions
		calico     bool
		wantName   string
		wantSource string
	}{
		{"flannel-bridge-0.3.1", harness.CNIOptions{Layout: harness.LayoutFlannel}, false, "cni0", "plugin"},
		{"calico-ptp-1.0.0", harness.CNIOptions{Layout: harness.LayoutCalico}, true, "vxlan.calico", "well-known"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := harness.NewTestEnv(t)
			ctx := ctxFor(t, 60*time.Second)
			n, cfg := handoffNode(t, env, tc.cni)
			w, err := n.StartWeftd(ctx, cfg.MustYAML())
			if err != nil {
				t.Fatal(err)
			}
			var wantIP netip.Addr
			if tc.calico {
				if wantIP, err = n.CreateCalicoDevice(); err != nil {
					t.Fatal(err)
				}
			}
			var pods []*harness.Pod
			for i := 0; i < 3; i++ {
				p, err := n.RunPod(ctx, "default", fmt.Sprintf("web-%d", i))
				if err != nil {
					t.Fatalf("ADD through the chain: %v\n%s", err, w.LogTail(20))
				}
				pods = append(pods, p)
			}
			if !tc.calico {
				wantIP = pods[0].Gateway // the bridge's address
			}
			st, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Ready && s.Attachments == 3 })
			if err != nil {
				t.Fatalf("not ready with 3 attachments: %v\n%s", err, w.LogTail(30))
			}
			c := st.CNIInterface
			if c == nil || c.Name != tc.wantName || c.IP != wantIP.String() || c.Source != tc.wantSource {
				t.Fatalf("cniInterface = %+v, want %s %s via %s", c, tc.wantName, wantIP, tc.wantSource)
			}
			if st.Node != "c1-n1" || st.Cluster != "c1" || st.Role != "gateway" || st.LastReconcile == nil || st.LastReconcile.Error != "" {
				t.Fatalf("status = %+v", st)
			}
			// CHECK through the real chain reaches the daemon (1.0.0 only:
			// CHECK does not exist before 0.4.0).
			if tc.calico {
				if err := n.CheckCNITool(ctx, pods[0]); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			if err := n.DetachCNITool(ctx, pods[2]); err != nil {
				t.Fatal(err)
			}
			if err := n.DetachCNITool(ctx, pods[2]); err != nil {
				t.Fatalf("second DEL: %v", err)
			}
			if _, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Attachments == 2 }); err != nil {
				t.Fatalf("DEL not recorded: %v", err)
			}
		})
	}
}

// (b) weftd starts before the CNI interface exists, becomes ready within
// 1 s of the interface appearing, and follows an IP change — no restart.
func TestHandoffOrdering(t *testing.T) {
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	n, cfg := handoffNode(t, env, harness.CNIOptions{Layout: harness.LayoutCalico})
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	pid := w.PID
	time.Sleep(3 * time.Second)
	st, err := w.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ready || st.CNIInterface != nil {
		t.Fatalf("ready before the CNI interface exists: %+v", st)
	}
	appeared := time.Now()
	ip, err := n.CreateCalicoDevice()
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	st, err = w.WaitFor(wctx, func(s api.Status) bool { return s.Ready && s.CNIInterface != nil && s.CNIInterface.IP == ip.String() })
	cancel()
	if err != nil {
		t.Fatalf("not ready within 1 s of the CNI interface appearing: %v\n%s", err, w.LogTail(20))
	}
	t.Logf("ready %v after vxlan.calico appeared", time.Since(appeared).Round(time.Millisecond))

	// The CNI interface's IP changes.
	newIP := "10.1.1.64"
	changed := time.Now()
	if _, err := n.Exec("sh", "-c", fmt.Sprintf("ip addr flush dev %s && ip addr add %s/32 dev %s", harness.CalicoDevice, newIP, harness.CalicoDevice)); err != nil {
		t.Fatal(err)
	}
	wctx, cancel = context.WithTimeout(ctx, time.Second)
	_, err = w.WaitFor(wctx, func(s api.Status) bool { return s.Ready && s.CNIInterface != nil && s.CNIInterface.IP == newIP })
	cancel()
	if err != nil {
		t.Fatalf("new CNI IP not shown within 1 s: %v", err)
	}
	t.Logf("new IP shown %v after the change", time.Since(changed).Round(time.Millisecond))
	if w.PID != pid || !w.Running() {
		t.Fatal("weftd was restarted")
	}
}

// (c) With weftd stopped, 50 ADDs and 10 DELs succeed (fail open, spooled);
// once weftd starts it records exactly the 40 live attachments. With
// failPolicy closed the ADD fails with code 11.
func TestHandoffDaemonAway(t *testing.T) {
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 120*time.Second)
	n, cfg := handoffNode(t, env, harness.CNIOptions{Layout: harness.LayoutFlannel})
	var pods []*harness.Pod
	for i := 0; i < 50; i++ {
		p, err := n.NewPod("default", fmt.Sprintf("away-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		attach := n.AttachLibcni
		if i%10 == 0 {
			attach = n.AttachCNITool
		}
		if _, err := attach(ctx, p); err != nil {
			t.Fatalf("ADD %d with the daemon away: %v", i, err)
		}
		pods = append(pods, p)
	}
	for i := 0; i < 10; i++ {
		if err := n.DetachLibcni(ctx, pods[i*5]); err != nil {
			t.Fatalf("DEL with the daemon away: %v", err)
		}
	}
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	st, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Ready && s.Spool.Replayed >= 60 })
	if err != nil {
		t.Fatalf("spool not replayed: %v\n%s", err, w.LogTail(20))
	}
	if st.Attachments != 40 || st.Spool.Replayed != 60 || st.Spool.Dropped != 0 {
		t.Fatalf("attachments=%d replayed=%d dropped=%d, want 40/60/0", st.Attachments, st.Spool.Replayed, st.Spool.Dropped)
	}

	// failPolicy closed: stop the daemon, the ADD must fail with code 11.
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := n.SetWeftOption("failPolicy", "closed"); err != nil {
		t.Fatal(err)
	}
	p, err := n.NewPod("default", "closed")
	if err != nil {
		t.Fatal(err)
	}
	_, err = n.AttachLibcni(ctx, p)
	var ce *harness.CNIError
	if !errors.As(err, &ce) || ce.Code != 11 {
		t.Fatalf("ADD with failPolicy closed and the daemon away: err=%v, want CNI code 11", err)
	}
}

// (d) kill -9 between ADDs loses and duplicates nothing.
func TestHandoffKill9(t *testing.T) {
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 120*time.Second)
	n, cfg := handoffNode(t, env, harness.CNIOptions{Layout: harness.LayoutFlannel})
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	const total = 30
	for i := 0; i < total; i++ {
		p, err := n.NewPod("default", fmt.Sprintf("k9-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.AttachLibcni(ctx, p); err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
		switch i {
		case 9, 19: // killed right after an acknowledged ADD; restarted later
			if err := w.Kill(); err != nil {
				t.Fatal(err)
			}
		case 14, 24:
			if w, err = n.StartWeftd(ctx, cfg.MustYAML()); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Ready && s.Attachments >= total })
	if err != nil {
		t.Fatalf("after restarts: %v\n%s", err, w.LogTail(20))
	}
	if st.Attachments != total {
		t.Fatalf("attachments = %d after kill -9 restarts, want exactly %d", st.Attachments, total)
	}
	// A final kill -9 and restart: the durable record alone must hold all.
	if err := w.Kill(); err != nil {
		t.Fatal(err)
	}
	w, err = n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	if st, err = w.Status(ctx); err != nil || st.Attachments != total {
		t.Fatalf("after the last restart attachments = %d (%v), want %d", st.Attachments, err, total)
	}
}

// (e) cniVersion 1.1.0: STATUS and GC through cnitool and libcni; GC
// removes the records the runtime no longer has.
func TestHandoffStatusAndGC(t *testing.T) {
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 90*time.Second)
	n, cfg := handoffNode(t, env, harness.CNIOptions{Layout: harness.LayoutFlannel, CNIVersion: "1.1.0"})
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.StatusCNITool(ctx); err != nil {
		t.Fatalf("cnitool status: %v", err)
	}
	var pods []*harness.Pod
	for i := 0; i < 3; i++ {
		p, err := n.NewPod("default", fmt.Sprintf("gc-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.AttachLibcni(ctx, p); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	// A record the runtime never had (as if a DEL was lost before weft
	// existed): only GC can remove it.
	cl := client.New(n.Socket, 2*time.Second)
	if err := cl.Add(ctx, api.Event{Verb: api.VerbAdd, ContainerID: "stale-1", IfName: "eth0", Network: n.NetName(), Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Attachments == 4 }); err != nil {
		t.Fatal(err)
	}
	if err := n.GCLibcni(ctx, pods[0], pods[1]); err != nil {
		t.Fatalf("libcni GC: %v", err)
	}
	st, err := w.Status(ctx)
	if err != nil || st.Attachments != 2 {
		t.Fatalf("after GC keeping 2 pods: attachments=%d (%v), want 2", st.Attachments, err)
	}
	for _, p := range pods[:2] {
		r, err := cl.Check(ctx, api.CheckRequest{ContainerID: p.ContainerID, IfName: "eth0"})
		if err != nil || !r.Known {
			t.Fatalf("kept pod %s unknown after GC: %+v %v", p.Name, r, err)
		}
	}
	if err := n.GCCNITool(ctx); err != nil {
		t.Fatalf("cnitool gc: %v", err)
	}
	if st, err = w.Status(ctx); err != nil || st.Attachments != 0 {
		t.Fatalf("after cnitool gc (no valid attachments): attachments=%d (%v), want 0", st.Attachments, err)
	}

	// STATUS with failPolicy closed fails while the daemon is away.
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := n.SetWeftOption("failPolicy", "closed"); err != nil {
		t.Fatal(err)
	}
	err = n.StatusLibcni(ctx)
	var ce *harness.CNIError
	if !errors.As(err, &ce) || ce.Code != 50 {
		t.Fatalf("STATUS with failPolicy closed and the daemon away: %v, want code 50", err)
	}
	if !strings.Contains(err.Error(), "weft") {
		t.Logf("status error: %v", err)
	}
}
