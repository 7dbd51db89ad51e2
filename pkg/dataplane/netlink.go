package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/pkg/errsum"
)

// RouteProtocol marks weft's routes and its ip rule (`proto 247` in ip
// route / ip rule output). 247 is not assigned in iproute2's rt_protos nor
// used by the common routing daemons, so a route or rule carrying it is
// weft's, and only those are ever replaced or removed.
const RouteProtocol = 247

// DeviceAlias is written as the IFLA_IFALIAS of every device weft creates, so
// a weft device that is no longer desired (e.g. vx-weft-cable after a
// gateway handover) is recognised and removed by the next Apply.
const DeviceAlias = "weft-managed"

// vxlanOverhead is what VXLAN over IPv4 adds to a frame: outer IPv4 (20) +
// UDP (8) + VXLAN (8) + inner Ethernet (14); over IPv6 the outer header is
// 40 bytes.
const (
	vxlanOverhead  = 50
	vxlanOverhead6 = 70
)

// ipv6RoutePriority is the metric the kernel gives an IPv6 route added
// without one (IP6_RT_PRIO_USER). It is written explicitly so that a
// dumped route compares equal to the desired one.
const ipv6RoutePriority = 1024

// Stats counts what one Apply or Cleanup changed in the kernel. Listing
// (dumps) is not counted: only netlink writes and sysctl writes are.
type Stats struct {
	Changes int
}

// Netlink is the Manager backed by the kernel through rtnetlink and
// /proc/sys. It works in the network namespace of the calling OS thread:
// callers that want another namespace lock the thread into it first (as
// ns.NetNS.Do does). Calls are serialised.
type Netlink struct {
	log *slog.Logger

	mu   sync.Mutex
	last Stats
	// verified is, per device name, what the last Apply left in place,
	// for Applies without State.Verify.
	verified map[string]*verified
	// submariner is Submariner's route agent's device as the last Apply
	// listed it, or nil.
	submariner *ForeignVXLAN
	// routes is weft's routes as the last Apply left them, for Applies
	// that need not re-read the table; nil = unknown.
	routes *routeCache
	// noIPv6 says the last Apply wanted no IPv6 object and left none
	// (its IPv6 sweep succeeded): an IPv4-only Apply without Verify then
	// skips the sweep (an IPv6 address listing per device and an ip -6
	// rule dump), so an IPv4-only node's steady-state pass costs what it
	// did before weft knew IPv6. Verify passes always sweep.
	noIPv6 bool
}

// routeCache is weft's routes in one table of one namespace, confirmed by
// a dump or written without error, with the device indexes they were
// written with. With it, one CIDR added costs one route write instead of a
// dump of 20,000 routes.
type routeCache struct {
	ns     nsID
	table  int
	idx    map[string]int
	routes []routeEntry // sorted by destination
}

// routeEntry is one desired route, its device resolved.
type routeEntry struct {
	dst netip.Prefix
	key routeKey
}

// routeKey is what makes a route weft's route as desired.
type routeKey struct {
	link     int
	via, src netip.Addr
}

// nsID identifies a network namespace (device and inode of its nsfs file).
type nsID struct{ dev, ino uint64 }

func currentNS() (nsID, bool) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return nsID{}, false
	}
	return nsID{dev: st.Dev, ino: st.Ino}, true
}

// verified is the FDB and neighbour state of one device as the last Apply
// left it: confirmed by a dump or written without error. It is valid only
// for the device with that ifindex (a recreated device has a new one and
// starts empty). A nil map means "unknown: dump it".
type verified struct {
	ifindex int
	fdb     map[macKey]netip.Addr // MAC -> underlay
	neigh   map[netip.Addr]macKey // VTEP -> MAC
}

var _ Manager = (*Netlink)(nil)

// New returns a Netlink manager that logs through logger (nil = discard).
func New(logger *slog.Logger) *Netlink {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Netlink{log: logger, verified: map[string]*verified{}}
}

// LastApplyStats reports the changes made by the most recent Apply or
// Cleanup.
func (m *Netlink) LastApplyStats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// run is one Apply or Cleanup: a netlink handle whose sockets live in the
// calling thread's namespace, a change counter and the collected errors.
type run struct {
	h       *netlink.Handle
	log     *slog.Logger
	changes int
	errs    []error
}

func (r *run) fail(err error) { r.errs = append(r.errs, err) }

// changed counts one successful kernel write.
func (r *run) changed(what string, attrs ...any) {
	r.changes++
	r.log.Debug(what, attrs...)
}

// Apply makes weft's netlink objects equal to s. Only what differs is
// written. Errors do not stop it: every object is tried and the failures
// come back joined (errsum: a count and the first few), each naming its
// object.
func (m *Netlink) Apply(ctx context.Context, s State) error {
	_, err := m.ApplyStats(ctx, s)
	return err
}

// ApplyStats is Apply that also returns what it changed.
func (m *Netlink) ApplyStats(ctx context.Context, s State) (Stats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.startLocked(ctx)
	if err != nil {
		return Stats{}, err
	}
	idx := map[string]int{} // weft device name -> ifindex, for routes
	wanted := map[string]bool{}
	for _, d := range s.Devices {
		wanted[d.Name] = true
	}
	for name := range m.verified {
		if !wanted[name] {
			delete(m.verified, name)
		}
	}
	// One dump serves the conflict check and the stale-device sweep.
	links, err := r.h.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		r.fail(fmt.Errorf("list devices: %w", err))
		links = nil
	}
	if links != nil {
		m.submariner = findSubmariner(links)
	}
	blocked := map[string]bool{} // weft devices not created: routes through them are not wanted either
	want6 := s.hasIPv6()
	sweep6 := want6 || s.Verify || !m.noIPv6
	// A device created, changed, brought up or readdressed may have lost
	// its routes without a notification: then the table is re-read.
	devicesChanged := false
	for _, d := range s.Devices {
		if ctx.Err() != nil {
			break
		}
		if c := conflict(links, d); c != nil {
			r.fail(c)
			blocked[d.Name] = true
			delete(m.verified, d.Name)
			continue
		}
		before := r.changes
		link := r.device(d)
		if link == nil {
			delete(m.verified, d.Name)
			devicesChanged = true
			continue
		}
		idx[d.Name] = link.Attrs().Index
		r.address(d, link)
		if sweep6 || d.Addr6.IsValid() {
			r.address6(d, link)
		}
		devicesChanged = devicesChanged || r.changes != before
		v := m.verified[d.Name]
		if v == nil || v.ifindex != link.Attrs().Index || r.changes != before {
			// New, recreated, brought up again or readdressed: taking a
			// device down or removing its last address flushes its
			// neighbours, permanent ones too. Nothing is known.
			v = &verified{ifindex: link.Attrs().Index}
			m.verified[d.Name] = v
		}
		if s.Verify {
			v.fdb, v.neigh = nil, nil
		}
		r.fdb(d, link, v)
		r.neighbours(d, link, v)
	}
	if ctx.Err() == nil && links != nil {
		before := r.changes
		r.staleDevices(links, wanted)
		devicesChanged = devicesChanged || r.changes != before
	}
	// A changed table or priority moves make-before-break: the routes
	// are filled in the new table, the rule to it is added before the
	// old one goes, and only then are weft's routes in any other table
	// removed, so traffic always finds a full table.
	var elsewhere []netlink.Route
	if ctx.Err() == nil {
		ns, nsOK := currentNS()
		trusted := m.routes
		if s.Verify || s.RereadRoutes || devicesChanged || !nsOK || trusted == nil ||
			trusted.ns != ns || trusted.table != s.Table || !maps.Equal(trusted.idx, idx) {
			trusted = nil
		}
		m.routes, elsewhere = r.routes(s, idx, blocked, trusted)
		if m.routes != nil {
			m.routes.ns = ns
			if !nsOK {
				m.routes = nil
			}
		}
	} else {
		m.routes = nil
	}
	if ctx.Err() == nil {
		ok := r.rule(unix.AF_INET, s.Table, s.RulePriority)
		if want6 {
			ok = r.rule(unix.AF_INET6, s.Table, s.RulePriority) && ok
		} else if sweep6 {
			r.removeRules(unix.AF_INET6, s.Table, s.RulePriority) // weft's IPv6 rule of an earlier state
		}
		if ok {
			r.deleteRoutes(elsewhere)
		}
	}
	if ctx.Err() == nil {
		r.sysctls(s, idx)
	}
	if err := ctx.Err(); err != nil {
		r.fail(fmt.Errorf("apply interrupted: %w", err))
	}
	// Routes and neighbours of an earlier IPv6 state go by their caches;
	// addresses and the rule by the sweep, which ran unless the last
	// Apply was clean already. Any error: sweep again next time.
	m.noIPv6 = !want6 && len(r.errs) == 0
	return m.finishLocked(r)
}

// startLocked begins an Apply or Cleanup; m.mu is held.
func (m *Netlink) startLocked(ctx context.Context) (*run, error) {
	m.last = Stats{}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// A handle opens its sockets now, in this thread's namespace, and
	// reuses them for every request; the package-level functions would
	// open one socket per request, which shows with thousands of peers.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	return &run{h: h, log: m.log}, nil
}

func (m *Netlink) finishLocked(r *run) (Stats, error) {
	r.h.Close()
	m.last = Stats{Changes: r.changes}
	// One failure per object: summarised, so that a missing device
	// (one error per route) does not make a megabyte message.
	return m.last, errsum.Join(r.errs...)
}

// Cleanup removes weft's devices (their FDB, neighbour and connected routes
// go with them), weft's routes in table and weft's rule. Sysctls are left as
// they are: forwarding may be needed by others and the values before weft
// are not known. Idempotent.
func (m *Netlink) Cleanup(ctx context.Context, names []string, table, priority int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.verified)
	m.routes = nil
	m.noIPv6 = false
	r, err := m.startLocked(ctx)
	if err != nil {
		return err
	}
	for _, name := range names {
		link, err := r.h.LinkByName(name)
		if err != nil {
			if !isNotFound(err) {
				r.fail(fmt.Errorf("device %s: look up: %w", name, err))
			}
			continue
		}
		r.deleteLink(link)
	}
	// Devices weft created under a name no longer configured.
	if links, err := r.h.LinkList(); err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		r.fail(fmt.Errorf("list devices: %w", err))
	} else {
		r.staleDevices(links, nil)
	}
	_, elsewhere := r.routes(State{Table: table}, nil, nil, nil)
	r.deleteRoutes(elsewhere)
	r.removeRules(unix.AF_INET, table, priority)
	r.removeRules(unix.AF_INET6, table, priority)
	_, err = m.finishLocked(r)
	return err
}

func (r *run) deleteLink(link netlink.Link) {
	name := link.Attrs().Name
	if err := r.h.LinkDel(link); err != nil && !isNotFound(err) {
		r.fail(fmt.Errorf("device %s: delete: %w", name, err))
		return
	}
	r.changed("deleted device", "device", name)
}

// staleDevices deletes devices tagged with DeviceAlias that are not wanted.
func (r *run) staleDevices(links []netlink.Link, wanted map[string]bool) {
	for _, l := range links {
		if l.Attrs().Alias == DeviceAlias && !wanted[l.Attrs().Name] {
			r.deleteLink(l)
		}
	}
}

// ---- VXLAN device ----

// device makes the VXLAN device d exist with the right attributes and
// returns it, or nil after recording why it could not.
func (r *run) device(d VXLAN) netlink.Link {
	fail := func(what string, err error) netlink.Link {
		r.fail(fmt.Errorf("device %s: %s: %w", d.Name, what, err))
		return nil
	}
	parent, mtu := 0, d.MTU
	if d.Underlay != "" {
		ul, err := r.h.LinkByName(d.Underlay)
		if err != nil {
			return fail("underlay "+d.Underlay, err)
		}
		parent = ul.Attrs().Index
		if mtu == 0 {
			mtu = ul.Attrs().MTU - vxlanOverhead
			if d.LocalIP.Is6() {
				mtu = ul.Attrs().MTU - vxlanOverhead6
			}
		}
	}
	mac := deviceMAC(d)
	want := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{
			Name:         d.Name,
			MTU:          mtu,
			HardwareAddr: mac,
			Alias:        DeviceAlias,
		},
		VxlanId:      int(d.VNI),
		VtepDevIndex: parent,
		Learning:     false,
		Port:         int(d.Port),
	}
	if d.LocalIP.IsValid() {
		want.SrcAddr = net.IP(d.LocalIP.AsSlice())
	}

	cur, err := r.h.LinkByName(d.Name)
	switch {
	case isNotFound(err):
		cur = nil
	case err != nil:
		return fail("look up", err)
	}
	if cur != nil {
		if why := immutableDiff(cur, want); why != "" {
			r.log.Info("recreating device", "device", d.Name, "reason", why)
			if err := r.h.LinkDel(cur); err != nil && !isNotFound(err) {
				return fail("delete for recreate ("+why+")", err)
			}
			r.changed("deleted device", "device", d.Name)
			cur = nil
		}
	}
	if cur == nil {
		if err := r.h.LinkAdd(want); err != nil {
			return fail("create", err)
		}
		r.changed("created device", "device", d.Name, "vni", d.VNI)
		if cur, err = r.h.LinkByName(d.Name); err != nil {
			return fail("look up after create", err)
		}
	}
	r.mutable(d.Name, cur, want)
	return cur
}

// immutableDiff names the first attribute of cur that cannot be changed in
// place to match want, or "" when cur can be kept.
func immutableDiff(cur netlink.Link, want *netlink.Vxlan) string {
	v, ok := cur.(*netlink.Vxlan)
	if !ok {
		return "not a vxlan device (" + cur.Type() + ")"
	}
	switch {
	case v.VxlanId != want.VxlanId:
		return fmt.Sprintf("vni %d, want %d", v.VxlanId, want.VxlanId)
	case want.Port != 0 && v.Port != want.Port:
		return fmt.Sprintf("port %d, want %d", v.Port, want.Port)
	case !ipEqual(v.SrcAddr, want.SrcAddr):
		return fmt.Sprintf("local %v, want %v", v.SrcAddr, want.SrcAddr)
	case v.VtepDevIndex != want.VtepDevIndex:
		return fmt.Sprintf("parent ifindex %d, want %d", v.VtepDevIndex, want.VtepDevIndex)
	case v.Learning:
		return "learning on"
	case v.FlowBased:
		return "external (flow based)"
	case len(v.Group) > 0 && !v.Group.IsUnspecified():
		return fmt.Sprintf("remote/group %v (would flood)", v.Group)
	}
	return ""
}

// mutable fixes MTU, MAC, alias and the up state in place.
func (r *run) mutable(name string, cur netlink.Link, want *netlink.Vxlan) {
	a := cur.Attrs()
	if want.MTU != 0 && a.MTU != want.MTU {
		if err := r.h.LinkSetMTU(cur, want.MTU); err != nil {
			r.fail(fmt.Errorf("device %s: set mtu %d: %w", name, want.MTU, err))
		} else {
			r.changed("set mtu", "device", name, "mtu", want.MTU)
		}
	}
	if len(want.HardwareAddr) > 0 && a.HardwareAddr.String() != want.HardwareAddr.String() {
		r.setMAC(name, cur, want.HardwareAddr)
	}
	if a.Alias != DeviceAlias {
		if err := r.h.LinkSetAlias(cur, DeviceAlias); err != nil {
			r.fail(fmt.Errorf("device %s: set alias: %w", name, err))
		} else {
			r.changed("set alias", "device", name)
		}
	}
	// Re-read: setMAC may have taken the device down.
	if l, err := r.h.LinkByIndex(a.Index); err == nil {
		a = l.Attrs()
	}
	if a.Flags&net.FlagUp == 0 {
		if err := r.h.LinkSetUp(cur); err != nil {
			r.fail(fmt.Errorf("device %s: set up: %w", name, err))
		} else {
			r.changed("set up", "device", name)
		}
	}
}

func (r *run) setMAC(name string, cur netlink.Link, mac net.HardwareAddr) {
	err := r.h.LinkSetHardwareAddr(cur, mac)
	if errors.Is(err, unix.EBUSY) {
		// Devices without live address change need to be down; the
		// caller brings it up again.
		if err = r.h.LinkSetDown(cur); err == nil {
			r.changed("set down for mac change", "device", name)
			err = r.h.LinkSetHardwareAddr(cur, mac)
		}
	}
	if err != nil {
		r.fail(fmt.Errorf("device %s: set mac %s: %w", name, mac, err))
		return
	}
	r.changed("set mac", "device", name, "mac", mac.String())
}

// address makes d.Addr the only IPv4 address of the device.
func (r *run) address(d VXLAN, link netlink.Link) {
	addrs, err := r.h.AddrList(link, unix.AF_INET)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		r.fail(fmt.Errorf("device %s: list addresses: %w", d.Name, err))
		return
	}
	have := false
	for _, a := range addrs {
		p, ok := prefixOf(a.IPNet)
		if ok && d.Addr.IsValid() && p == d.Addr {
			have = true
			continue
		}
		if err := r.h.AddrDel(link, &a); err != nil && !isNotFound(err) {
			r.fail(fmt.Errorf("device %s: delete stale address %s: %w", d.Name, a.IPNet, err))
			continue
		}
		r.changed("deleted stale address", "device", d.Name, "addr", a.IPNet.String())
	}
	if have || !d.Addr.IsValid() {
		return
	}
	if err := r.h.AddrAdd(link, &netlink.Addr{IPNet: ipNet(d.Addr)}); err != nil {
		r.fail(fmt.Errorf("device %s: add address %s: %w", d.Name, d.Addr, err))
		return
	}
	r.changed("added address", "device", d.Name, "addr", d.Addr.String())
}

// address6 makes d.Addr6 the only global IPv6 address of the device (the
// kernel's link-local fe80::/64 address is left alone), after the
// device's IPv6 sysctls allow it. Without Addr6 it only removes a global
// IPv6 address an earlier state left.
func (r *run) address6(d VXLAN, link netlink.Link) {
	if d.Addr6.IsValid() {
		r.deviceSysctls6(d.Name)
	}
	addrs, err := r.h.AddrList(link, unix.AF_INET6)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		r.fail(fmt.Errorf("device %s: list IPv6 addresses: %w", d.Name, err))
		return
	}
	have := false
	for _, a := range addrs {
		p, ok := prefixOf(a.IPNet)
		if !ok || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		// A tentative (DAD) or dadfailed address is not usable as a route
		// source or neighbour target: re-added with nodad.
		if d.Addr6.IsValid() && p == d.Addr6 && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
			have = true
			continue
		}
		if err := r.h.AddrDel(link, &a); err != nil && !isNotFound(err) {
			r.fail(fmt.Errorf("device %s: delete stale IPv6 address %s: %w", d.Name, a.IPNet, err))
			continue
		}
		r.changed("deleted stale address", "device", d.Name, "addr", a.IPNet.String())
	}
	if have || !d.Addr6.IsValid() {
		return
	}
	// No duplicate address detection: the address is derived and unique
	// by construction, and DAD would leave it tentative (unusable) for a
	// second or more after every (re)creation.
	if err := r.h.AddrAdd(link, &netlink.Addr{IPNet: ipNet(d.Addr6), Flags: unix.IFA_F_NODAD}); err != nil {
		r.fail(fmt.Errorf("device %s: add IPv6 address %s: %w", d.Name, d.Addr6, err))
		return
	}
	r.changed("added address", "device", d.Name, "addr", d.Addr6.String())
}

// ---- FDB and neighbours ----

// macKey is an Ethernet MAC as a comparable value: maps keyed by it cost
// far less than by the text form, which shows with thousands of peers.
type macKey [6]byte

// keyOf returns hw as a key; ok is false unless it is 6 bytes long.
func keyOf(hw net.HardwareAddr) (k macKey, ok bool) {
	if len(hw) != len(k) {
		return k, false
	}
	return macKey(hw), true
}

func (k macKey) hw() net.HardwareAddr { return net.HardwareAddr(k[:]) }

func (k macKey) String() string { return k.hw().String() }

// fdbEntry is the desired FDB entry of one peer: its MAC to its underlay.
type fdbEntry struct {
	MAC macKey
	Dst netip.Addr
}

// diffFDB compares the device's FDB with the wanted MAC -> underlay map.
// It returns the entries to delete and the MACs to (re)write. An entry is
// good when its MAC is wanted, it points at the wanted underlay with the
// device's VNI and port, and it is permanent; anything else on a weft
// device is stale (including the all-zeros flooding entry).
func diffFDB(existing []netlink.Neigh, want map[macKey]netip.Addr) (del []netlink.Neigh, set []fdbEntry) {
	good := make(map[macKey]bool, len(want))
	for _, n := range existing {
		mac, macOK := keyOf(n.HardwareAddr)
		dst, ok := netip.AddrFromSlice(n.IP)
		dst = dst.Unmap()
		w, wanted := want[mac]
		wanted = wanted && macOK
		if ok && wanted && dst == w && n.VNI == 0 && n.State&netlink.NUD_PERMANENT != 0 && !good[mac] {
			good[mac] = true
			continue
		}
		if wanted && ok && dst == w {
			// Same MAC and destination but wrong state/VNI: rewriting
			// it with replace semantics fixes it in one change.
			continue
		}
		del = append(del, n)
	}
	for mac, dst := range want {
		if !good[mac] {
			set = append(set, fdbEntry{MAC: mac, Dst: dst})
		}
	}
	return del, set
}

// fdb makes the device's FDB hold exactly one permanent entry per peer. v
// is what the last Apply left; when its fdb is known the kernel is not
// dumped and only the difference is written. v.fdb is the new state after,
// or nil when any write failed.
func (r *run) fdb(d VXLAN, link netlink.Link, v *verified) {
	want := make(map[macKey]netip.Addr, len(d.Peers))
	for _, p := range d.Peers {
		mac, ok := keyOf(peerMAC(p))
		if !ok {
			r.fail(fmt.Errorf("device %s: fdb %s: peer %s: not an Ethernet MAC", d.Name, peerMAC(p), p.VTEP))
			continue
		}
		if prev, dup := want[mac]; dup && prev != p.Underlay {
			r.fail(fmt.Errorf("device %s: fdb %s: two peers (%s, %s) share the MAC", d.Name, mac, prev, p.Underlay))
			continue
		}
		if !p.Underlay.IsValid() {
			r.fail(fmt.Errorf("device %s: fdb %s: peer %s has no underlay address", d.Name, mac, peerName(p)))
			continue
		}
		if d.LocalIP.IsValid() && p.Underlay.Is6() != d.LocalIP.Is6() {
			// The kernel would take it, and the packets would never leave.
			r.fail(fmt.Errorf("device %s: fdb %s: peer %s underlay %s is not of the device's underlay family (local %s)", d.Name, mac, peerName(p), p.Underlay, d.LocalIP))
			continue
		}
		want[mac] = p.Underlay
	}
	var del []netlink.Neigh
	var set []fdbEntry
	partial := false
	if v.fdb != nil {
		del, set = diffFDBCached(v.fdb, want)
	} else {
		existing, err := r.h.NeighList(link.Attrs().Index, unix.AF_BRIDGE)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			r.fail(fmt.Errorf("device %s: list fdb: %w", d.Name, err))
			return
		}
		partial = err != nil // an interrupted dump may miss stale entries
		del, set = diffFDB(existing, want)
	}
	nerr := len(r.errs)
	defer func() {
		v.fdb = nil
		if len(r.errs) == nerr && !partial {
			v.fdb = want
		}
	}()
	for _, n := range del {
		n.LinkIndex = link.Attrs().Index
		n.Family = unix.AF_BRIDGE
		n.Flags = netlink.NTF_SELF
		if err := r.h.NeighDel(&n); err != nil && !isNotFound(err) {
			r.fail(fmt.Errorf("device %s: delete stale fdb %s dst %s: %w", d.Name, n.HardwareAddr, n.IP, err))
			continue
		}
		r.changed("deleted stale fdb entry", "device", d.Name, "mac", n.HardwareAddr.String(), "dst", n.IP.String())
	}
	for _, e := range set {
		mac := e.MAC.hw()
		// Replace semantics (create, or rewrite a wrong destination in
		// place). For a unicast MAC on a VXLAN device this is `bridge fdb
		// append` without the case where append silently keeps an old
		// destination.
		n := &netlink.Neigh{
			LinkIndex:    link.Attrs().Index,
			Family:       unix.AF_BRIDGE,
			Flags:        netlink.NTF_SELF,
			State:        netlink.NUD_PERMANENT,
			IP:           net.IP(e.Dst.AsSlice()),
			HardwareAddr: mac,
		}
		if err := r.h.NeighSet(n); err != nil {
			r.fail(fmt.Errorf("device %s: fdb %s dst %s: %w", d.Name, e.MAC, e.Dst, err))
			continue
		}
		r.changed("set fdb entry", "device", d.Name, "mac", e.MAC.String(), "dst", e.Dst.String())
	}
}

// diffFDBCached is diffFDB against the entries the last Apply left (MAC ->
// underlay) rather than a dump.
func diffFDBCached(have, want map[macKey]netip.Addr) (del []netlink.Neigh, set []fdbEntry) {
	for mac, dst := range have {
		if w, ok := want[mac]; ok && w == dst {
			continue
		}
		if _, ok := want[mac]; ok {
			continue // rewritten in place by the set below
		}
		del = append(del, netlink.Neigh{HardwareAddr: mac.hw(), IP: net.IP(dst.AsSlice())})
	}
	for mac, dst := range want {
		if h, ok := have[mac]; !ok || h != dst {
			set = append(set, fdbEntry{MAC: mac, Dst: dst})
		}
	}
	return del, set
}

// diffNeighCached is diffNeigh against the entries the last Apply left
// (VTEP -> MAC) rather than a dump.
func diffNeighCached(have, want map[netip.Addr]macKey) (del []netlink.Neigh, set []netip.Addr) {
	for ip := range have {
		if _, ok := want[ip]; !ok {
			del = append(del, netlink.Neigh{Family: family(ip), IP: net.IP(ip.AsSlice())})
		}
	}
	for ip, mac := range want {
		if h, ok := have[ip]; !ok || h != mac {
			set = append(set, ip)
		}
	}
	return del, set
}

// diffNeigh compares the device's neighbours (both families) with the wanted VTEP ->
// MAC map. Only static (permanent) entries that are not wanted are stale:
// entries the kernel resolved itself are its business.
func diffNeigh(existing []netlink.Neigh, want map[netip.Addr]macKey) (del []netlink.Neigh, set []netip.Addr) {
	good := make(map[netip.Addr]bool, len(want))
	for _, n := range existing {
		ip, ok := netip.AddrFromSlice(n.IP)
		ip = ip.Unmap()
		mac, wanted := want[ip]
		if ok && wanted {
			if k, ok := keyOf(n.HardwareAddr); ok && k == mac && n.State == netlink.NUD_PERMANENT {
				good[ip] = true
			}
			continue
		}
		if n.State&netlink.NUD_PERMANENT != 0 {
			del = append(del, n)
		}
	}
	for ip := range want {
		if !good[ip] {
			set = append(set, ip)
		}
	}
	return del, set
}

// neighbours makes the device's static neighbours one per peer VTEP; v as
// for fdb.
func (r *run) neighbours(d VXLAN, link netlink.Link, v *verified) {
	want := make(map[netip.Addr]macKey, len(d.Peers))
	for _, p := range d.Peers {
		switch {
		case p.VTEP.IsValid() && !p.VTEP.Is4():
			r.fail(fmt.Errorf("device %s: neighbour %v: not an IPv4 VTEP address", d.Name, p.VTEP))
			continue
		case p.VTEP6.IsValid() && (!p.VTEP6.Is6() || p.VTEP6.Is4In6()):
			r.fail(fmt.Errorf("device %s: neighbour %v: not an IPv6 VTEP address", d.Name, p.VTEP6))
			continue
		case !p.VTEP.IsValid() && !p.VTEP6.IsValid():
			r.fail(fmt.Errorf("device %s: peer %s: no VTEP address", d.Name, p.Underlay))
			continue
		}
		mac, ok := keyOf(peerMAC(p))
		if !ok {
			r.fail(fmt.Errorf("device %s: neighbour %s: lladdr %s is not an Ethernet MAC", d.Name, peerName(p), peerMAC(p)))
			continue
		}
		for _, v := range []netip.Addr{p.VTEP, p.VTEP6} {
			if v.IsValid() {
				want[v] = mac
			}
		}
	}
	var del []netlink.Neigh
	var set []netip.Addr
	partial := false
	if v.neigh != nil {
		del, set = diffNeighCached(v.neigh, want)
	} else {
		// Both families are dumped whatever s wants: a static IPv6
		// neighbour of an earlier state is stale too.
		var existing []netlink.Neigh
		for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
			ns, err := r.h.NeighList(link.Attrs().Index, fam)
			if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
				r.fail(fmt.Errorf("device %s: list %s neighbours: %w", d.Name, familyName(fam), err))
				return
			}
			partial = partial || err != nil // an interrupted dump may miss stale entries
			existing = append(existing, ns...)
		}
		del, set = diffNeigh(existing, want)
	}
	nerr := len(r.errs)
	defer func() {
		v.neigh = nil
		if len(r.errs) == nerr && !partial {
			v.neigh = want
		}
	}()
	for _, n := range del {
		n.LinkIndex = link.Attrs().Index
		if err := r.h.NeighDel(&n); err != nil && !isNotFound(err) {
			r.fail(fmt.Errorf("device %s: delete stale neighbour %s: %w", d.Name, n.IP, err))
			continue
		}
		r.changed("deleted stale neighbour", "device", d.Name, "ip", n.IP.String())
	}
	for _, ip := range set {
		mac := want[ip].hw()
		n := &netlink.Neigh{
			LinkIndex:    link.Attrs().Index,
			Family:       family(ip),
			State:        netlink.NUD_PERMANENT,
			IP:           net.IP(ip.AsSlice()),
			HardwareAddr: mac,
		}
		if err := r.h.NeighSet(n); err != nil {
			r.fail(fmt.Errorf("device %s: neighbour %s lladdr %s: %w", d.Name, ip, want[ip], err))
			continue
		}
		r.changed("set neighbour", "device", d.Name, "ip", ip.String(), "mac", want[ip].String())
	}
}

// ---- routes ----

// desiredRoute renders rt for table; linkIndex resolves its device.
func desiredRoute(rt Route, table, linkIndex int) *netlink.Route {
	nr := &netlink.Route{
		Family:    family(rt.Dst.Addr()),
		Table:     table,
		Dst:       ipNet(rt.Dst.Masked()),
		Gw:        net.IP(rt.Via.AsSlice()),
		LinkIndex: linkIndex,
		Flags:     int(netlink.FLAG_ONLINK),
		Protocol:  RouteProtocol,
		Type:      unix.RTN_UNICAST,
		Scope:     netlink.SCOPE_UNIVERSE,
	}
	if rt.Src.IsValid() {
		nr.Src = net.IP(rt.Src.AsSlice())
	}
	if nr.Family == unix.AF_INET6 {
		nr.Priority = ipv6RoutePriority
	}
	return nr
}

// routeMatches reports whether the kernel route cur is exactly want.
func routeMatches(cur, want *netlink.Route) bool {
	return cur.LinkIndex == want.LinkIndex &&
		ipEqual(cur.Gw, want.Gw) &&
		ipEqual(cur.Src, want.Src) &&
		cur.Flags&int(netlink.FLAG_ONLINK) != 0 &&
		cur.Type == want.Type &&
		cur.Scope == want.Scope &&
		cur.Priority == want.Priority && cur.Tos == 0 &&
		len(cur.MultiPath) == 0
}

// routes makes weft's routes (those with RouteProtocol) in s.Table equal to
// s.Routes, and returns weft's routes in every other table (an earlier
// routeTable, in this process or a previous one) for the caller to delete
// once the rule has moved. idx maps weft device names to their ifindex;
// other names are looked up; routes through a blocked device are not
// wanted. With trusted, the table is taken to hold what trusted says and
// only the difference is written (no dump, and nothing is known
// elsewhere: a table change or a new process never trusts); without, every
// table is dumped (the kernel dumps them all whatever the request says).
// It returns what the table now holds, or nil when anything failed (the
// next Apply then dumps).
func (r *run) routes(s State, idx map[string]int, blocked map[string]bool, trusted *routeCache) (_ *routeCache, elsewhere []netlink.Route) {
	var existing []netlink.Route
	if trusted == nil {
		filter := &netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: RouteProtocol}
		var all []netlink.Route
		// Both families whatever s wants: weft's IPv6 routes of an
		// earlier state are stale too.
		for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
			rs, err := r.h.RouteListFiltered(fam, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
			if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
				r.fail(fmt.Errorf("list weft's %s routes: %w", familyName(fam), err))
				return nil, nil
			}
			all = append(all, rs...)
		}
		for _, rt := range all {
			if rt.Table == s.Table {
				existing = append(existing, rt)
			} else {
				elsewhere = append(elsewhere, rt)
			}
		}
	}
	failed := len(r.errs)
	// The desired routes sorted by destination (topology already sorts
	// them; then this is one pass), so that comparing with the cache is a
	// merge of two sorted lists: no map of 20,000 entries per pass.
	want := make([]routeEntry, 0, len(s.Routes))
	for _, rt := range s.Routes {
		dst := rt.Dst.Masked()
		if blocked[rt.Dev] {
			continue // the device's ConflictError says why
		}
		li, ok := idx[rt.Dev]
		if !ok {
			l, err := r.h.LinkByName(rt.Dev)
			if err != nil {
				r.fail(fmt.Errorf("route %s via %s dev %s: device: %w", dst, rt.Via, rt.Dev, err))
				continue
			}
			li = l.Attrs().Index
		}
		want = append(want, routeEntry{dst: dst, key: routeKey{link: li, via: rt.Via, src: rt.Src}})
	}
	byDst := func(a, b routeEntry) int { return CompareDst(a.dst, b.dst) }
	if !slices.IsSortedFunc(want, byDst) {
		slices.SortStableFunc(want, byDst)
	}
	want = slices.CompactFunc(want, func(a, b routeEntry) bool {
		if a.dst == b.dst {
			r.fail(fmt.Errorf("route %s: listed twice in the desired state", a.dst))
			return true
		}
		return false
	})
	render := func(e routeEntry) *netlink.Route {
		return desiredRoute(Route{Dst: e.dst, Via: e.key.via, Src: e.key.src}, s.Table, e.key.link)
	}
	// Deletions go first, in one pipelined batch: an added route may take
	// the key of one being removed. A weft route at a wanted key is
	// replaced in place; elsewhere routes are added, not replaced, so a
	// foreign route with the same key stays and the conflict is reported.
	var dels, sets []routeOp
	if trusted != nil {
		have := trusted.routes
		i, j := 0, 0
		for i < len(have) || j < len(want) {
			switch c := cmpEntries(have, want, i, j); {
			case c < 0:
				dels = append(dels, routeOp{del: true, route: render(have[i])})
				i++
			case c > 0:
				sets = append(sets, routeOp{route: render(want[j])})
				j++
			default:
				if have[i].key != want[j].key {
					sets = append(sets, routeOp{replace: true, route: render(want[j])})
				}
				i++
				j++
			}
		}
	} else {
		pos := make(map[netip.Prefix]int, len(want))
		for i, e := range want {
			pos[e.dst] = i
		}
		const (
			absent = iota
			done
			ours // a weft route holds the key: replace it
		)
		state := make([]uint8, len(want))
		for k := range existing {
			cur := &existing[k]
			dst, _ := prefixOf(cur.Dst)
			if i, ok := pos[dst]; ok && state[i] == absent {
				w := render(want[i])
				if routeMatches(cur, w) {
					state[i] = done
					continue
				}
				if cur.Priority == w.Priority && cur.Tos == 0 {
					state[i] = ours
					continue
				}
			}
			dels = append(dels, routeOp{del: true, route: cur})
		}
		for i, e := range want {
			if state[i] != done {
				sets = append(sets, routeOp{replace: state[i] == ours, route: render(e)})
			}
		}
	}
	errs, err := writeRoutes(dels)
	if err != nil {
		r.fail(fmt.Errorf("delete %d stale routes in table %d: %w", len(dels), s.Table, err))
		return nil, elsewhere
	}
	for i, op := range dels {
		if errs[i] != nil && !isNotFound(errs[i]) {
			r.fail(fmt.Errorf("delete stale route %s table %d: %w", op.route.Dst, s.Table, errs[i]))
			continue
		}
		r.changed("deleted stale route", "dst", op.route.Dst.String(), "table", s.Table)
	}
	errs, err = writeRoutes(sets)
	if err != nil {
		r.fail(fmt.Errorf("write %d routes in table %d: %w", len(sets), s.Table, err))
		return nil, elsewhere
	}
	debug := r.log.Enabled(context.Background(), slog.LevelDebug)
	for i, op := range sets {
		w := op.route
		if err := errs[i]; err != nil {
			if !op.replace && errors.Is(err, unix.EEXIST) {
				err = fmt.Errorf("a route that is not weft's holds this destination: %w", err)
			}
			r.fail(fmt.Errorf("route %s via %s table %d: %w", w.Dst, w.Gw, s.Table, err))
			continue
		}
		if !debug {
			r.changes++ // 20,000 of these: no strings for a log line nobody reads
			continue
		}
		r.changed("set route", "dst", w.Dst.String(), "via", w.Gw.String(), "src", w.Src.String(), "table", s.Table)
	}
	if len(r.errs) != failed {
		return nil, elsewhere
	}
	return &routeCache{table: s.Table, idx: maps.Clone(idx), routes: want}, elsewhere
}

// cmpEntries orders have[i] and want[j] by destination, an exhausted list
// last.
func cmpEntries(have, want []routeEntry, i, j int) int {
	switch {
	case i == len(have):
		return 1
	case j == len(want):
		return -1
	}
	return CompareDst(have[i].dst, want[j].dst)
}

// deleteRoutes removes weft's routes left in tables it no longer uses.
func (r *run) deleteRoutes(rs []netlink.Route) {
	for i := range rs {
		if err := r.h.RouteDel(&rs[i]); err != nil && !isNotFound(err) {
			r.fail(fmt.Errorf("delete route %s in old table %d: %w", rs[i].Dst, rs[i].Table, err))
			continue
		}
		r.changed("deleted route in old table", "dst", rs[i].Dst.String(), "table", rs[i].Table)
	}
}

// ---- rule ----

// isPlainLookup reports whether ru is `from all lookup table` of family
// fam with no selectors.
func isPlainLookup(ru netlink.Rule, fam, table, priority int) bool {
	return ru.Family == fam &&
		ru.Priority == priority && ru.Table == table &&
		(ru.Src == nil || isZeroNet(ru.Src)) && (ru.Dst == nil || isZeroNet(ru.Dst)) &&
		ru.Mark == 0 && ru.Mask == nil && ru.Tos == 0 && ru.TunID == 0 &&
		ru.IifName == "" && ru.OifName == "" && !ru.Invert &&
		ru.Goto <= 0 && ru.Dport == nil && ru.Sport == nil && ru.IPProto == 0 &&
		ru.UIDRange == nil && ru.SuppressPrefixlen < 0 && ru.SuppressIfgroup < 0 &&
		(ru.Type == 0 || ru.Type == unix.RTN_UNICAST)
}

// rule makes exactly one `from all lookup table priority priority` rule
// of family fam exist (`ip rule` or `ip -6 rule`). Duplicates of it and
// rules carrying weft's protocol elsewhere (an earlier table or priority)
// are removed; nothing else is touched. It reports whether the rule is in
// place.
func (r *run) rule(fam, table, priority int) (ok bool) {
	rules, err := r.h.RuleList(fam)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		r.fail(fmt.Errorf("list %s rules: %w", familyName(fam), err))
		return false
	}
	var plain, earlier []netlink.Rule
	for _, ru := range rules {
		switch {
		case isPlainLookup(ru, fam, table, priority):
			plain = append(plain, ru)
		case ru.Protocol == RouteProtocol && ru.Family == fam:
			earlier = append(earlier, ru) // an earlier table or priority of weft's
		}
	}
	// The earlier rules go only once the new one is in place (or could
	// not be placed: then they still carry traffic, and the error is
	// reported and retried).
	defer func() {
		for _, ru := range earlier {
			r.deleteRule(ru)
		}
	}()
	if len(plain) == 1 {
		return true
	}
	// Duplicates. The kernel deletes the first rule matching a request
	// and cannot be told "protocol unspecified", so a specific duplicate
	// cannot be picked: remove them all and add weft's one.
	for _, ru := range plain {
		if err := r.deletePlainRule(rules, fam, ru); err != nil {
			r.fail(err)
			earlier = nil
			return false
		}
	}
	ru := netlink.NewRule()
	ru.Family = fam
	ru.Table = table
	ru.Priority = priority
	ru.Protocol = RouteProtocol
	if err := r.h.RuleAdd(ru); err != nil {
		r.fail(fmt.Errorf("%s rule from all lookup %d priority %d: %w", familyName(fam), table, priority, err))
		earlier = nil
		return false
	}
	r.changed("added rule", "family", familyName(fam), "table", table, "priority", priority)
	return true
}

// deletePlainRule deletes ru, a plain lookup rule, unless the request
// could hit a foreign rule instead: without a protocol to match, the
// kernel deletes the first rule with the same priority and table, whatever
// its selectors.
func (r *run) deletePlainRule(all []netlink.Rule, fam int, ru netlink.Rule) error {
	if ru.Protocol == 0 {
		for _, o := range all {
			if o.Priority == ru.Priority && o.Table == ru.Table && !isPlainLookup(o, fam, ru.Table, ru.Priority) {
				return fmt.Errorf("rule %s: cannot delete it without risking the foreign rule %s at the same priority and table", ru, o)
			}
		}
	}
	r.deleteRule(ru)
	return nil
}

func (r *run) deleteRule(ru netlink.Rule) {
	if err := r.h.RuleDel(&ru); err != nil && !isNotFound(err) {
		r.fail(fmt.Errorf("delete rule %s: %w", ru, err))
		return
	}
	r.changed("deleted rule", "rule", ru.String())
}

// removeRules deletes weft's rule of family fam (the plain lookup at
// priority, or any rule with weft's protocol).
func (r *run) removeRules(fam, table, priority int) {
	rules, err := r.h.RuleList(fam)
	if fam == unix.AF_INET6 && errors.Is(err, unix.EAFNOSUPPORT) {
		return // a kernel without IPv6 (ipv6.disable=1) has no IPv6 rule to remove
	}
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		r.fail(fmt.Errorf("list %s rules: %w", familyName(fam), err))
		return
	}
	for _, ru := range rules {
		switch {
		case isPlainLookup(ru, fam, table, priority):
			if err := r.deletePlainRule(rules, fam, ru); err != nil {
				r.fail(err)
			}
		case ru.Protocol == RouteProtocol && ru.Family == fam:
			r.deleteRule(ru)
		}
	}
}

// ---- helpers ----

// family is addr's address family for netlink.
func family(addr netip.Addr) int {
	if addr.Is4() || addr.Is4In6() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func familyName(fam int) string {
	if fam == unix.AF_INET6 {
		return "IPv6"
	}
	return "IPv4"
}

// peerName names a peer in errors: its VTEP addresses.
func peerName(p Peer) string {
	switch {
	case p.VTEP.IsValid() && p.VTEP6.IsValid():
		return p.VTEP.String() + "/" + p.VTEP6.String()
	case p.VTEP.IsValid():
		return p.VTEP.String()
	}
	return p.VTEP6.String()
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ESRCH)
}

func ipEqual(a, b net.IP) bool {
	aNil := len(a) == 0 || a.IsUnspecified()
	bNil := len(b) == 0 || b.IsUnspecified()
	if aNil || bNil {
		return aNil == bNil
	}
	return a.Equal(b)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

func isZeroNet(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}
