package agent

import (
	"context"
	"net/netip"
	"testing"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/discovery"
)

// Which kernel events skip the MinSyncPeriod wait: those that can change
// the desired state. A pod's veth cannot.
func TestNetlinkEventRelevance(t *testing.T) {
	ctx := context.Background()
	a, k, _, _ := newTestAgent(t)
	if !a.relevant(discovery.Event{Kind: "link", Link: "veth1", Index: 40, LinkKind: "veth"}) {
		t.Fatal("before any pass every event must count")
	}
	k.set(
		discovery.Iface{Name: "eth0", Index: 2, Kind: "veth", Addrs: []netip.Addr{netip.MustParseAddr("192.168.10.12")}},
		discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}},
		discovery.Iface{Name: "vx-weft", Index: 7, Kind: "vxlan"},
	)
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr
	tests := []struct {
		name string
		ev   discovery.Event
		want bool
	}{
		{"pod veth created", discovery.Event{Kind: "link", Link: "veth1234", Index: 40, LinkKind: "veth"}, false},
		{"pod veth address (ptp)", discovery.Event{Kind: "address", Index: 40, LinkKind: "veth", Addr: ip("10.1.2.1")}, false},
		{"CNI bridge changes as a pod joins", discovery.Event{Kind: "link", Link: "cni0", Index: 5, LinkKind: "bridge"}, false},
		{"pod veth as a bridge port", discovery.Event{Kind: "link", Link: "veth1234", Index: 40, LinkKind: "device", Port: true}, false},
		{"CNI interface deleted", discovery.Event{Kind: "link", Link: "cni0", Index: 5, LinkKind: "bridge", Deleted: true}, true},
		{"CNI interface renamed", discovery.Event{Kind: "link", Link: "cni1", Index: 5, LinkKind: "bridge"}, true},
		{"CNI interface address", discovery.Event{Kind: "address", Index: 5, LinkKind: "bridge", Addr: ip("10.1.2.200")}, true},
		{"weft device deleted", discovery.Event{Kind: "link", Link: "vx-weft", Index: 7, LinkKind: "vxlan"}, true},
		{"underlay", discovery.Event{Kind: "link", Link: "eth0", Index: 2, LinkKind: "veth"}, true},
		{"well-known name appears", discovery.Event{Kind: "link", Link: "vxlan.calico", Index: 50, LinkKind: "vxlan"}, true},
		{"foreign VXLAN device goes", discovery.Event{Kind: "link", Link: "vx-submariner", Index: 60, LinkKind: "vxlan"}, true},
		{"a new bridge", discovery.Event{Kind: "link", Link: "br-pods", Index: 61, LinkKind: "bridge"}, true},
		{"unknown kind", discovery.Event{Kind: "link", Index: 62}, true},
		{"new candidate address", discovery.Event{Kind: "address", Index: 51, LinkKind: "bridge", Addr: ip("10.1.9.1")}, true},
		{"same IP, later ifindex", discovery.Event{Kind: "address", Index: 52, LinkKind: "bridge", Addr: ip("10.1.2.1")}, false},
		{"same IP, earlier ifindex", discovery.Event{Kind: "address", Index: 3, LinkKind: "bridge", Addr: ip("10.1.2.1")}, true},
		{"address outside the pod CIDRs", discovery.Event{Kind: "address", Index: 53, LinkKind: "dummy", Addr: ip("172.16.0.1")}, false},
		{"route deleted", discovery.Event{Kind: "route-deleted"}, true},
		{"rule deleted", discovery.Event{Kind: "rule-deleted"}, true},
		{"resubscribed", discovery.Event{Kind: "netlink-resubscribe"}, true},
	}
	for _, tt := range tests {
		if got := a.relevant(tt.ev); got != tt.want {
			t.Errorf("%s: relevant = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// A plugin ADD skips the wait when it can change the CNI interface: the
// first one (the CNI network is up) and one naming a new gateway. Any
// other ADD, and every DEL, asks for no pass at all: nothing in the kernel
// depends on an attachment, and a pass per pod would compete with the
// plugin waiting for its answer (issue 9, point 10).
func TestPluginAddUrgency(t *testing.T) {
	ctx := context.Background()
	a, k, _, _ := newTestAgent(t)
	urgent := func() bool {
		select {
		case <-a.urgent:
			return true
		default:
			return false
		}
	}
	coalesced := func() bool {
		select {
		case <-a.trigger:
			return true
		default:
			return false
		}
	}
	add := func(id, gw string) {
		t.Helper()
		if err := a.Add(ctx, api.Event{Verb: api.VerbAdd, ContainerID: id, IfName: "eth0", IPs: []api.PodIP{{Address: "10.1.2.9/24", Gateway: gw}}}); err != nil {
			t.Fatal(err)
		}
	}
	add("first", "10.1.2.1")
	if !urgent() {
		t.Fatal("the first ADD (no CNI interface yet) must not wait")
	}
	k.set(discovery.Iface{Name: "cni0", Index: 5, Kind: "bridge", Addrs: []netip.Addr{netip.MustParseAddr("10.1.2.1")}})
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	coalesced() // what the first ADD may have left
	add("second", "10.1.2.1")
	if urgent() || coalesced() {
		t.Fatal("an ADD behind the known gateway asked for a pass")
	}
	add("third", "10.1.3.1")
	if !urgent() {
		t.Fatal("an ADD naming a new gateway must not wait")
	}
	add("fourth", "")
	if urgent() || coalesced() {
		t.Fatal("an ADD without a gateway asked for a pass")
	}
	if err := a.Del(ctx, api.Event{Verb: api.VerbDel, ContainerID: "second", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if urgent() || coalesced() {
		t.Fatal("a DEL asked for a pass")
	}
}
