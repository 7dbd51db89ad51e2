package nlbatch

import (
	"errors"
	"net"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/pkg/netnstest"
)

// routeAdd is `ip route add 10.a.b.c/32 dev lo table 100`, with NLM_F_EXCL.
func routeAdd(i int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	msg := nl.NewRtMsg()
	msg.Family, msg.Dst_len, msg.Table, msg.Scope = unix.AF_INET, 32, 100, unix.RT_SCOPE_LINK
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.RTA_DST, net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)).To4()))
	req.AddData(nl.NewRtAttr(unix.RTA_OIF, nl.Uint32Attr(1))) // lo
	return req
}

// 600 requests span three batches; each result lands on its own request:
// the one duplicate, and only it, fails with EEXIST.
func TestSendResultsPerRequest(t *testing.T) {
	n := netnstest.New(t)
	n.MustExec(t, "ip", "link", "set", "lo", "up")
	var reqs []*nl.NetlinkRequest
	for i := 0; i < 600; i++ {
		reqs = append(reqs, routeAdd(i))
	}
	reqs = append(reqs[:400], append([]*nl.NetlinkRequest{routeAdd(7)}, reqs[400:]...)...)
	var errs []error
	var err error
	var routes []netlink.Route
	if derr := n.Do(func(ns.NetNS) error {
		errs, err = Send(unix.NETLINK_ROUTE, reqs)
		routes, _ = netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: 100}, netlink.RT_FILTER_TABLE)
		return nil
	}); derr != nil {
		t.Fatal(derr)
	}
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range errs {
		if (i == 400) != (e != nil) {
			t.Errorf("request %d: %v", i, e)
		}
	}
	if !errors.Is(errs[400], unix.EEXIST) {
		t.Errorf("duplicate: %v, want EEXIST", errs[400])
	}
	if len(routes) != 600 {
		t.Errorf("%d routes in table 100, want 600", len(routes))
	}
	if errs, err := Send(unix.NETLINK_ROUTE, nil); err != nil || len(errs) != 0 {
		t.Errorf("empty: %v %v", errs, err)
	}
}
