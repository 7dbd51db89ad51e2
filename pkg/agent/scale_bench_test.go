package agent

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/discovery"
)

// BenchmarkConfigChangePass20000 is the agent's share of one CIDR added to
// a file of 20,000 (kernel managers are recorders): topology, model
// comparison and status, without parsing.
func BenchmarkConfigChangePass20000(b *testing.B) {
	var list strings.Builder
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(&list, ", 20.%d.%d.0/24", (2*i)>>8, (2*i)&255)
	}
	doc := strings.Replace(testConfig, "podCIDRs: [10.2.0.0/16]", "podCIDRs: [10.2.0.0/16"+list.String()+"]", 1)
	base, err := config.Parse([]byte(doc))
	if err != nil {
		b.Fatal(err)
	}
	plus, err := config.Parse([]byte(strings.Replace(doc, "podCIDRs: [10.2.0.0/16", "podCIDRs: [10.2.0.0/16, 30.0.0.0/24", 1)))
	if err != nil {
		b.Fatal(err)
	}
	a, k, _, _ := newTestAgent(b)
	k.set(discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})
	a.SetConfig(base)
	ctx := context.Background()
	_ = a.reconcile(ctx, true)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := plus
		if i%2 == 1 {
			c = base
		}
		a.SetConfig(c)
		if err := a.reconcile(ctx, false); err != nil {
			b.Fatal(err)
		}
	}
}
