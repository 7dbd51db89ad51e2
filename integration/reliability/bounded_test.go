package reliability

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
)

// statusCap is the API client's cap on one answer (pkg/client).
const statusCap = 1 << 20

// Promise 4, at scale: with 20,000 remote CIDRs and vx-weft-cable deleted
// and unable to come back up (its UDP port taken), every route fails. `weftd status --json` (the real binary) and a CNI
// CHECK must still answer, with a count and the first few errors rather
// than 20,000 of them (joined in full: several MiB, past the client's cap).
func TestStatusBoundedWithTwentyThousandFailingRoutes(t *testing.T) {
	defer run.sum.Track(t, PFaults)()
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 240*time.Second)
	const cidrs = 20000
	n, cfg := oneNode(t, env, nodeSpec{cni: harness.CNIOptions{CNIVersion: "1.0.0"}, backend: "nftables", remoteCIDRs: spreadCIDRs(cidrs)})
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	pod, err := n.RunPod(ctx, "default", "anchor")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.CheckLibcni(ctx, pod); err != nil {
		t.Fatalf("CHECK while ready: %v", err)
	}

	// The node is its cluster's gateway: the remote routes go through
	// vx-weft-cable. weftd stops (the data plane stays), the device is
	// deleted and a process takes its UDP port: the next weftd creates the
	// device but the kernel cannot bring it up (address in use), so each
	// of the 20,000 routes through it fails on its own (nexthop device not
	// up). A foreign VXLAN device on the same VNI and port would not do:
	// weft reports that one conflict and wants no routes through it.
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := n.Exec("ip", "link", "del", "vx-weft-cable"); err != nil {
		t.Fatalf("delete vx-weft-cable: %v: %s", err, out)
	}
	var squat net.PacketConn
	if err := n.NS.Do(func(ns.NetNS) error {
		var err error
		squat, err = net.ListenPacket("udp4", ":4801")
		return err
	}); err != nil {
		t.Fatalf("take UDP port 4801: %v", err)
	}
	defer squat.Close()
	if w, err = n.StartWeftd(ctx, cfg.MustYAML()); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	var st api.Status
	var raw []byte
	deadline := time.Now().Add(60 * time.Second)
	for {
		// The real binary, its JSON answer measured.
		out, stderr, err := n.WeftdCommand(ctx, "status", "--json", "--socket", w.Socket)
		raw = out
		if len(out) == 0 {
			t.Fatalf("weftd status --json gave no answer (%v): %s", err, strings.TrimSpace(stderr))
		}
		st, err = w.Status(ctx)
		if err != nil {
			t.Fatalf("weftd status --json: %v", err)
		}
		// The pass has ended (lastReconcile is set at its end).
		if c, ok := cond(st, "DataplaneReady"); ok && !c.Status && strings.Contains(c.Message, "device vx-weft-cable: set up") && st.LastReconcile != nil && st.LastReconcile.Error != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the failing pass never showed: %+v", st.LastReconcile)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("failure reported %v after the device went; status answer %d bytes", time.Since(t0).Round(time.Millisecond), len(raw))
	if len(raw) >= statusCap {
		t.Fatalf("status answer is %d bytes, at or past the client's cap %d", len(raw), statusCap)
	}
	dp, _ := cond(st, "DataplaneReady")
	for _, f := range []struct{ what, msg string }{
		{"lastReconcile.error", st.LastReconcile.Error},
		{"DataplaneReady message", dp.Message},
	} {
		// Route errors are counted and only the first few quoted.
		if !strings.Contains(f.msg, " errors; first 5: ") || strings.Count(f.msg, "route 10.") > 5 || len(f.msg) > 16<<10 {
			t.Errorf("%s (%d bytes) is not a bounded summary: %.400q", f.what, len(f.msg), f.msg)
		}
	}
	// The device, the 20,000 pod CIDRs and the service CIDR.
	var counted int
	if _, err := fmt.Sscanf(dp.Message, "%d errors; ", &counted); err != nil || counted < cidrs {
		t.Errorf("DataplaneReady message does not count the %d failing routes: %.300q", cidrs, dp.Message)
	}

	// CHECK answers too: not ready (11, try again later) with the bounded
	// reason, not "weftd rejected the CHECK request" for an answer too big.
	err = n.CheckLibcni(ctx, pod)
	var ce *harness.CNIError
	if !errors.As(err, &ce) || ce.Code != 11 || !strings.Contains(err.Error(), "not ready") || len(err.Error()) > 16<<10 {
		t.Fatalf("CHECK with 20,000 failing routes = %.400v, want code 11 with a bounded not-ready reason", err)
	}
	human, _, _ := n.WeftdCommand(ctx, "status", "--socket", w.Socket)
	if !strings.Contains(string(human), "NOT READY") {
		t.Errorf("weftd status (human) did not answer: %.300q", human)
	}

	// And it repairs once the port is free.
	squat.Close()
	rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if _, err := w.WaitReady(rctx); err != nil {
		t.Fatal(err)
	}
	run.sum.Figure(PFaults, "%d CIDRs, vx-weft-cable cannot come up: %d errors, status answer %d bytes (cap %d), CHECK code 11", cidrs, counted, len(raw), statusCap)
}

// spreadCIDRs returns n non-adjacent /24s (every other one) from
// 11.0.0.0, clear of the test clusters' 10.x ranges; manyCIDRs stays
// inside 10.200/13 and runs out past 14,000.
func spreadCIDRs(n int) []string {
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		k := 2 * i
		out = append(out, fmt.Sprintf("%d.%d.%d.0/24", 11+k/65536, k/256%256, k%256))
	}
	return out
}
