package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/discovery"
	"github.com/weft-net/weft/pkg/errsum"
)

// A pass in which every one of 20,000 routes fails (its device is missing)
// must leave status and CHECK answers of bounded size that still say how
// many failed and quote the first few: the API client refuses answers over
// 1 MiB, and joined in full these messages are several megabytes.
func TestTwentyThousandRouteErrorsStayBounded(t *testing.T) {
	ctx := context.Background()
	a, k, rec, _ := newTestAgent(t)
	k.set(discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})
	const n = 20000
	errs := make([]error, n)
	for i := range errs {
		errs[i] = fmt.Errorf("route 10.%d.%d.0/24 via 240.168.10.11 dev vx-weft: device: Link not found", 200+2*i/256, 2*i%256)
	}
	// What the data plane returned before it summarised: errors.Join.
	rec.fail = errors.Join(errs...)
	if err := a.Add(ctx, api.Event{Verb: api.VerbAdd, ContainerID: "c1", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Reconcile(ctx); err == nil {
		t.Fatal("pass with 20,000 failing routes succeeded")
	}
	st := a.Status()
	doc, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	const budget = 4 * errsum.MaxText // the whole status document
	if len(doc) > budget {
		t.Errorf("status document is %d bytes, want <= %d", len(doc), budget)
	}
	check := a.Check(ctx, api.CheckRequest{ContainerID: "c1", IfName: "eth0"})
	for _, f := range []struct{ what, msg string }{
		{"DataplaneReady message", cond(st, CondDataplaneReady).Message},
		{"lastReconcile.error", st.LastReconcile.Error},
		{"CHECK reason", check.Reason},
	} {
		if len(f.msg) > errsum.MaxText+64 {
			t.Errorf("%s is %d bytes, want <= %d", f.what, len(f.msg), errsum.MaxText+64)
		}
		// A count and the first errors, not only a cut.
		if !strings.Contains(f.msg, "20000 problems; first 5: route 10.200.0.0/24") || !strings.Contains(f.msg, "(19995 more)") {
			t.Errorf("%s does not give the count and the first errors: %.300q", f.what, f.msg)
		}
	}
	if check.Ready || !strings.HasPrefix(check.Reason, "node not ready: last reconcile failed: ") {
		t.Errorf("CHECK = %+v, want not ready with the reconcile's reason", check)
	}
}
