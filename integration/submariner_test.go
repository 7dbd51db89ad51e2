package integration

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

// TestSubmarinerRouteAgentOnTheNode is Submariner's route agent left running
// on a node where weft starts, with both at their defaults (vx-submariner:
// UDP 4800, VNI 100, as weft's vx-weft). weft must not fight: it creates
// neither its device nor its routes, leaves vx-submariner exactly as it
// was, and says why and what to do in a condition; the other nodes are not
// affected. Once the route agent's device is gone, weft converges at once
// (the link event triggers a pass). And with vx-weft in place first, the
// kernel refuses Submariner's device while weft stays ready; on another
// port both run, and a condition says so.
func TestSubmarinerRouteAgentOnTheNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w := dpNew(t, "nftables")
	w.calicoDevices(t)
	n := w.tc.C1.Nodes[1] // a non-gateway node
	// vx-submariner as Submariner's route agent makes it: VNI 100, port
	// 4800 on the underlay interface, a VTEP address in 240.0.0.0/8 from
	// the node IP, an FDB entry towards its gateway.
	for _, c := range [][]string{
		{"ip", "link", "add", "vx-submariner", "type", "vxlan", "id", "100", "dstport", "4800", "dev", "eth0"},
		{"ip", "addr", "add", "240.168.10.12/8", "dev", "vx-submariner"},
		{"ip", "link", "set", "vx-submariner", "up"},
		{"bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx-submariner", "dst", w.tc.C1.Nodes[0].IP.String()},
	} {
		dpExec(t, n, c[0], c[1:]...)
	}
	// The kernel clears "tentative" on the device's IPv6 link-local address
	// when its duplicate-address check ends, which under load can fall
	// between the two snapshots: that is not weft touching the device.
	tentative := regexp.MustCompile(` tentative\b`)
	snapshot := func() string {
		addr := tentative.ReplaceAllString(dpExec(t, n, "ip", "-d", "addr", "show", "dev", "vx-submariner"), "")
		return addr + dpExec(t, n, "bridge", "fdb", "show", "dev", "vx-submariner")
	}
	before := snapshot()

	for _, m := range w.nodes() {
		w.start(t, ctx, m)
	}
	// Everyone else gets ready as usual.
	for _, m := range w.nodes() {
		if m == n {
			continue
		}
		if _, err := w.weftd[m.Name].WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wd := w.weftd[n.Name]
	st, err := wd.WaitFor(ctx, func(s api.Status) bool {
		c := cxCond(s, "DataplaneReady", "")
		return c != nil && c.Reason == "VXLANConflict"
	})
	if err != nil {
		t.Fatalf("%v\nlog tail:\n%s", err, wd.LogTail(3000))
	}
	c := cxCond(st, "DataplaneReady", "")
	if c.Status || st.Ready || !strings.Contains(c.Message, "vx-submariner") || !strings.Contains(c.Fix, "stop Submariner's route agent") || !strings.Contains(c.Fix, "vxlan.port") {
		t.Errorf("ready %v, condition %+v", st.Ready, *c)
	}
	t.Logf("condition: %s: %s; fix: %s", c.Reason, c.Message, c.Fix)
	// A few passes later: still nothing created, nothing touched.
	time.Sleep(500 * time.Millisecond)
	if _, err := n.Exec("ip", "link", "show", "dev", "vx-weft"); err == nil {
		t.Error("vx-weft created next to vx-submariner")
	}
	if routes, _ := dpRoutes(n); len(routes) != 0 {
		t.Errorf("routes through a device weft did not create: %v", routes)
	}
	if got := snapshot(); got != before {
		t.Errorf("vx-submariner changed:\n%s\nwas:\n%s", got, before)
	}

	// The route agent goes (its device with it): weft converges without
	// a restart, at once.
	dpExec(t, n, "ip", "link", "del", "vx-submariner")
	start := time.Now()
	if _, err := wd.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("ready %s after vx-submariner was deleted", time.Since(start).Round(time.Millisecond))
	if ok, routes := dpRoutesHaveSrc(n, n.CalicoDeviceAddr()); !ok {
		t.Errorf("routes after the conflict: %v", routes)
	}

	// The other order: vx-weft first. The kernel refuses Submariner's
	// device, and weft stays ready.
	out, err := n.Exec("ip", "link", "add", "vx-submariner", "type", "vxlan", "id", "100", "dstport", "4800", "dev", "eth0")
	if err == nil || !strings.Contains(out, "VNI already exists") {
		t.Errorf("vx-submariner next to vx-weft: %v %s", err, out)
	}
	time.Sleep(300 * time.Millisecond)
	if st, err := wd.Status(ctx); err != nil || !st.Ready {
		t.Errorf("weft after Submariner's attempt: ready %v, %v", st.Ready, err)
	}

	// Submariner's route agent on another port: no collision, both run,
	// weft stays ready and says that two route agents serve this node.
	dpExec(t, n, "ip", "link", "add", "vx-submariner", "type", "vxlan", "id", "100", "dstport", "4805", "dev", "eth0")
	st, err = wd.WaitFor(ctx, func(s api.Status) bool { return cxCond(s, "SubmarinerRouteAgent", "") != nil })
	if err != nil {
		t.Fatal(err)
	}
	if c := cxCond(st, "SubmarinerRouteAgent", ""); c.Status || !strings.Contains(c.Message, "UDP port 4805") || !st.Ready {
		t.Errorf("ready %v, condition %+v", st.Ready, *c)
	}
	dpExec(t, n, "ip", "link", "del", "vx-submariner")
	if _, err := wd.WaitFor(ctx, func(s api.Status) bool { return s.Ready && cxCond(s, "SubmarinerRouteAgent", "") == nil }); err != nil {
		t.Error(err)
	}
}
