package agent

import (
	"net/netip"
	"slices"

	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/discovery"
)

// Events that can change the desired state are served at once (TriggerNow);
// the flood a pod start brings, which cannot, waits for MinSyncPeriod
// (Trigger). A pod start is a plugin ADD naming a gateway weft already
// knows and a handful of link (and, with ptp, address) events on a new
// veth; none of them changes the CNI interface, the underlay or weft's
// devices, so none changes what a pass would write.

// watched is what the last pass saw of the interfaces whose changes matter:
// weft's devices, the underlay, a pinned or well-known CNI interface (any
// change), and the CNI interface (its removal, renaming or addresses: a
// pod joining the bridge changes the bridge's link attributes, which do not
// matter). Only the Run goroutine writes it, under a.mu.
type watched struct {
	names   map[string]bool
	index   map[int]bool
	cniName string
	cniIdx  int
	cniIP   netip.Addr
	pods    []netip.Prefix
}

// noteWatched records the interfaces to watch after a pass's discovery.
// cni6 is the interface holding the CNI IPv6 address when it is not the
// CNI interface (vxlan-v6.calico): any change of it matters.
func (a *Agent) noteWatched(cfg *config.Config, ifaces []discovery.Iface, cniName string, cniIP netip.Addr, underlay, cni6 string) {
	w := &watched{names: map[string]bool{}, index: map[int]bool{}, pods: cfg.Parsed.PodCIDRs, cniName: cniName, cniIP: cniIP}
	for _, n := range append([]string{cfg.VXLAN.Name, cfg.CableVXLAN.Name, cfg.CNIInterface, underlay, cni6}, discovery.WellKnown...) {
		if n != "" && n != cniName {
			w.names[n] = true
		}
	}
	for _, i := range ifaces {
		switch {
		case cniName != "" && i.Name == cniName:
			w.cniIdx = i.Index
		case w.names[i.Name]:
			w.index[i.Index] = true
		}
	}
	a.mu.Lock()
	a.watch = w
	a.mu.Unlock()
}

// NetlinkEvent asks for a pass for a kernel event: at once when it may
// change the desired state, else coalesced.
func (a *Agent) NetlinkEvent(ev discovery.Event) {
	if a.relevant(ev) {
		// The kernel may have dropped weft's routes without telling (a
		// device down, an address gone, a route deleted): the pass
		// re-reads the route table. Pod veths do not touch it.
		a.kernelChanged.Store(true)
		a.TriggerNow()
		return
	}
	a.Trigger()
}

func (a *Agent) relevant(ev discovery.Event) bool {
	a.mu.Lock()
	w := a.watch
	a.mu.Unlock()
	if w == nil {
		return true // no pass yet: nothing known
	}
	switch ev.Kind {
	case "link":
		switch {
		case ev.Port:
			return false // bridge port attributes: a pod's veth joining
		case w.cniIdx != 0 && ev.Index == w.cniIdx:
			return ev.Deleted || ev.Link != w.cniName
		case w.names[ev.Link] || w.index[ev.Index]:
			return true
		}
		// Only pods' veths flood; any other device may be a candidate or,
		// for a VXLAN one, hold (or release) weft's VNI and port.
		return ev.LinkKind != "veth"
	case "address":
		if w.index[ev.Index] || (w.cniIdx != 0 && ev.Index == w.cniIdx) {
			return true
		}
		if ev.LinkKind == "veth" {
			return false // discovery never picks a veth (a pod's host side)
		}
		if !slices.ContainsFunc(w.pods, func(p netip.Prefix) bool { return p.Contains(ev.Addr) }) {
			return false // not a CNI interface candidate
		}
		// Another holder of the CNI IP ranks after the current one if its
		// ifindex is higher; any other address in the pod CIDRs may make a
		// better candidate.
		return !w.cniIP.IsValid() || ev.Addr != w.cniIP || ev.Index < w.cniIdx
	}
	return true // route or rule deleted, resubscribed: drift to repair
}
