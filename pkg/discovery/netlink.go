package discovery

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Interfaces lists the host's interfaces with their IPv4 addresses, in the
// calling thread's network namespace.
func Interfaces() ([]Iface, error) { return InterfacesWith(false) }

// InterfacesWith is Interfaces that, with ipv6, also lists each
// interface's IPv6 addresses other than link-local ones (every interface
// has one; none is a CNI address). IPv4-only clusters skip that dump.
func InterfacesWith(ipv6 bool) ([]Iface, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	fam := netlink.FAMILY_V4
	if ipv6 {
		fam = netlink.FAMILY_ALL
	}
	addrs, err := netlink.AddrList(nil, fam)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	byIndex, unusable := map[int][]netip.Addr{}, map[int][]netip.Addr{}
	for _, a := range addrs {
		if ip, ok := cniCandidate(a.IP); ok {
			if ip.Is6() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
				// Its completed detection is an address event too.
				unusable[a.LinkIndex] = append(unusable[a.LinkIndex], ip)
				continue
			}
			byIndex[a.LinkIndex] = append(byIndex[a.LinkIndex], ip)
		}
	}
	out := make([]Iface, 0, len(links))
	for _, l := range links {
		at := l.Attrs()
		out = append(out, Iface{Name: at.Name, Index: at.Index, Kind: l.Type(), Addrs: byIndex[at.Index], Unusable: unusable[at.Index]})
	}
	return out, nil
}

// Event is one change Watch saw.
type Event struct {
	// Kind is link, address, route-deleted, rule-deleted or
	// netlink-resubscribe (events may have been missed).
	Kind string
	// Link is the name of the link of a link event; Index the ifindex of
	// a link or address event; LinkKind its type (veth, bridge, vxlan…),
	// "" when unknown (an address on a link already gone).
	Link     string
	Index    int
	LinkKind string
	// Deleted marks a link event that removes the link; Port one about a
	// link's bridge port (AF_BRIDGE), not the link itself.
	Deleted, Port bool
	// Addr is the address of an address event: IPv4, or IPv6 other than
	// link-local.
	Addr netip.Addr
}

// cniCandidate converts a netlink address; link-local IPv6 addresses
// (one on every interface, every pod's veth included) are never a CNI
// interface's and are dropped.
func cniCandidate(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	if a.Is6() && (a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast()) {
		return netip.Addr{}, false
	}
	return a, true
}

// Watch calls notify (which must not block) on every link and address
// change (IPv4, and IPv6 other than link-local), every route of either
// family deleted from table() (read at each event: a reload may move
// weft's table; 0 = none yet) and every ip rule of either family deleted, until
// ctx ends. A broken subscription (the kernel dropped it, or
// the socket overran) is re-established after a short pause, and notify is
// called then too, since events may have been missed.
func Watch(ctx context.Context, log *slog.Logger, table func() int, notify func(reason string)) {
	WatchEvents(ctx, log, table, func(ev Event) { notify(ev.Kind) })
}

// WatchEvents is Watch that says which link or address changed, so that
// the caller can tell a pod's veth from the CNI interface.
func WatchEvents(ctx context.Context, log *slog.Logger, table func() int, notify func(Event)) {
	for ctx.Err() == nil {
		err := watchOnce(ctx, table, notify)
		if ctx.Err() != nil {
			return
		}
		log.Warn("netlink subscription ended, resubscribing", "err", err)
		notify(Event{Kind: "netlink-resubscribe"})
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func watchOnce(ctx context.Context, table func() int, notify func(Event)) error {
	done := make(chan struct{})
	defer close(done)
	errs := make(chan error, 3)
	onErr := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	links, err := subscribeLinks(done, onErr)
	if err != nil {
		return err
	}
	addrs := make(chan netlink.AddrUpdate, 256)
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribe addresses: %w", err)
	}
	// Only deletions in weft's table matter: they are drift. weft's own
	// 20,000 route additions at start are seen and dropped by the message
	// type alone: decoding each (the library's subscription does) would
	// cost the start-up pass a core.
	inTable := func(data []byte) bool { return routeTable(data) == table() }
	routes, err := subscribeDeletions(unix.RTNLGRP_IPV4_ROUTE, unix.RTM_DELROUTE, "routes", inTable, done, onErr)
	if err != nil {
		return err
	}
	routes6, err := subscribeDeletions(unix.RTNLGRP_IPV6_ROUTE, unix.RTM_DELROUTE, "IPv6 routes", inTable, done, onErr)
	if err != nil {
		return err
	}
	rules, err := subscribeDeletions(unix.RTNLGRP_IPV4_RULE, unix.RTM_DELRULE, "ip rules", nil, done, onErr)
	if err != nil {
		return err
	}
	rules6, err := subscribeDeletions(unix.RTNLGRP_IPV6_RULE, unix.RTM_DELRULE, "ip -6 rules", nil, done, onErr)
	if err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return err
		case <-rules:
			// A deleted ip rule may be weft's; the library has no rule
			// subscription, so this is a raw one.
			notify(Event{Kind: "rule-deleted"})
		case <-rules6:
			notify(Event{Kind: "rule-deleted"})
		case ev := <-links:
			notify(ev)
		case u, ok := <-addrs:
			if !ok {
				return fmt.Errorf("address subscription closed")
			}
			if ip, ok := cniCandidate(u.LinkAddress.IP); ok {
				ev := Event{Kind: "address", Index: u.LinkIndex, Addr: ip}
				// One request, so that the receiver can tell a pod's
				// veth (never a CNI interface) from a candidate.
				if l, err := netlink.LinkByIndex(u.LinkIndex); err == nil {
					ev.LinkKind = l.Type()
				}
				notify(ev)
			}
		case <-routes:
			notify(Event{Kind: "route-deleted"})
		case <-routes6:
			notify(Event{Kind: "route-deleted"})
		}
	}
}

// subscribeLinks reports every link message as an Event, read only as far
// as Event goes: the header, the name and the kind. The library's
// subscription decodes every attribute of every message (statistics, XDP,
// protinfo… into a new Link each): with pods starting, a dozen messages
// per veth, that was a quarter of weftd's CPU.
func subscribeLinks(done <-chan struct{}, onErr func(error)) (<-chan Event, error) {
	sock, err := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_LINK)
	if err != nil {
		return nil, fmt.Errorf("subscribe links: %w", err)
	}
	out := make(chan Event, 256)
	go func() {
		<-done
		sock.Close() // unblocks Receive
	}()
	go func() {
		for {
			msgs, from, err := sock.Receive()
			if err != nil {
				select {
				case <-done:
				default:
					onErr(fmt.Errorf("receive link events: %w", err))
				}
				return
			}
			if from.Pid != nl.PidKernel {
				continue // only the kernel speaks for the links
			}
			for _, m := range msgs {
				if m.Header.Type != unix.RTM_NEWLINK && m.Header.Type != unix.RTM_DELLINK {
					continue
				}
				select {
				case out <- linkEvent(m.Header.Type, m.Data):
				case <-done:
					return
				}
			}
		}
	}()
	return out, nil
}

// linkEvent reads an RTM_NEWLINK/RTM_DELLINK message. LinkKind is what the
// netlink library's Link.Type says for the same message: IFLA_INFO_KIND,
// "device" without one, "tuntap" for "tun". A message too short for its
// header is still an event (of an unknown link): something changed.
func linkEvent(typ uint16, data []byte) Event {
	ev := Event{Kind: "link", Deleted: typ == unix.RTM_DELLINK}
	if len(data) < unix.SizeofIfInfomsg {
		return ev
	}
	ev.Port = data[0] == unix.AF_BRIDGE
	ev.Index = int(int32(binary.NativeEndian.Uint32(data[4:8])))
	kind := ""
	eachAttr(data[unix.SizeofIfInfomsg:], func(typ uint16, v []byte) {
		switch typ {
		case unix.IFLA_IFNAME:
			ev.Link = cString(v)
		case unix.IFLA_LINKINFO:
			eachAttr(v, func(typ uint16, v []byte) {
				if typ == unix.IFLA_INFO_KIND {
					kind = cString(v)
				}
			})
		}
	})
	switch kind {
	case "":
		ev.LinkKind = "device"
	case "tun":
		ev.LinkKind = "tuntap"
	default:
		ev.LinkKind = kind
	}
	return ev
}

// eachAttr calls f with the type and value of each netlink attribute in b,
// in place (nl.ParseRouteAttr copies every attribute of the message into a
// new slice, most of a link message's cost); it stops at a malformed one.
func eachAttr(b []byte, f func(typ uint16, v []byte)) {
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		if l < unix.SizeofRtAttr || l > len(b) {
			return
		}
		f(binary.NativeEndian.Uint16(b[2:4])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER), b[unix.SizeofRtAttr:l])
		next := (l + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1)
		if next >= len(b) {
			return
		}
		b = b[next:]
	}
}

// cString is a netlink string attribute without its NUL.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// subscribeDeletions reports every message of type del in the
// multicast group (that match accepts, when given) until done is closed.
// Reports coalesce: a burst is one signal.
func subscribeDeletions(group uint, del uint16, what string, match func(data []byte) bool, done <-chan struct{}, onErr func(error)) (<-chan struct{}, error) {
	sock, err := nl.Subscribe(unix.NETLINK_ROUTE, group)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", what, err)
	}
	out := make(chan struct{}, 1)
	go func() {
		<-done
		sock.Close() // unblocks Receive
	}()
	go func() {
		for {
			msgs, _, err := sock.Receive()
			if err != nil {
				select {
				case <-done:
				default:
					onErr(fmt.Errorf("receive %s events: %w", what, err))
				}
				return
			}
			for _, m := range msgs {
				if m.Header.Type == del && (match == nil || match(m.Data)) {
					select {
					case out <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	return out, nil
}

// routeTable is the table of an rtmsg: its RTA_TABLE attribute, else the
// header's 8-bit field (tables above 255 are only in the attribute).
func routeTable(data []byte) int {
	if len(data) < unix.SizeofRtMsg {
		return -1
	}
	table := int(data[4])
	attrs, err := nl.ParseRouteAttr(data[unix.SizeofRtMsg:])
	if err != nil {
		return table
	}
	for _, a := range attrs {
		if a.Attr.Type == unix.RTA_TABLE && len(a.Value) >= 4 {
			return int(binary.NativeEndian.Uint32(a.Value))
		}
	}
	return table
}
