// Package topology computes a node's desired data-plane and packet-filter
// state from the configuration and the facts resolved at run time. It is
// pure: no kernel access, so every rule of DESIGN.md's "Data plane" section
// is testable as any user.
package topology

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/dataplane"
	"github.com/weft-net/weft/pkg/packetfilter"
)

// Roles of a node.
const (
	RoleGateway    = "gateway"
	RoleNonGateway = "non-gateway"
)

// VXLANOverhead is what VXLAN over IPv4 adds to a frame (IP 20 + UDP 8 +
// VXLAN 8 + inner Ethernet 14); VXLANOverhead6 over IPv6 (IP 40).
const (
	VXLANOverhead  = 50
	VXLANOverhead6 = 70
)

// Inputs are the facts resolved at run time rather than configured.
type Inputs struct {
	// NodeIP is this node's underlay address: IPv4, or IPv6 in a
	// cluster whose underlay is IPv6 (config's Parsed.Underlay6).
	NodeIP      netip.Addr
	UnderlayIf  string // interface holding NodeIP
	UnderlayMTU int
	CNIIf       string     // "" while unknown
	CNIIP       netip.Addr // invalid while unknown: routes carry no source
	// CNIIP6 is the CNI interface's IPv6 address (discovery's Choose6):
	// the source of the IPv6 routes; invalid while unknown or without
	// IPv6 pod CIDRs.
	CNIIP6 netip.Addr
}

// Result is the desired state of one node.
type Result struct {
	Role      string
	Dataplane dataplane.State
	Filter    packetfilter.Model
	// Problems are configuration problems the state was computed despite
	// (VTEP collisions, this node missing from cluster.nodes). They are for
	// status conditions; each names the nodes or fields involved.
	Problems []string
}

// VTEPIP maps an underlay address into a VTEP range: the network of
// vtepCIDR plus nodeIP's host bits under the same prefix length
// (240.168.10.12 for 192.168.10.12 in 240.0.0.0/8). An IPv6 range takes an
// IPv4 node address as its low 32 bits (fd57:6566:7400::c0a8:a0c for
// 192.168.10.12 in fd57:6566:7400::/96) and an IPv6 one's host bits. An
// IPv4 range and an IPv6 node address give the invalid Addr (an IPv6
// underlay carries no IPv4 VTEPs), as does an invalid argument.
func VTEPIP(vtepCIDR netip.Prefix, nodeIP netip.Addr) netip.Addr {
	if !vtepCIDR.IsValid() || !nodeIP.IsValid() {
		return netip.Addr{}
	}
	if vtepCIDR.Addr().Is6() {
		return vtepIP6(vtepCIDR, nodeIP)
	}
	if !nodeIP.Is4() {
		return netip.Addr{}
	}
	mask := uint32(0)
	if b := vtepCIDR.Bits(); b > 0 {
		mask = ^uint32(0) << (32 - b)
	}
	n4 := vtepCIDR.Addr().As4()
	h4 := nodeIP.As4()
	v := binary.BigEndian.Uint32(n4[:])&mask | binary.BigEndian.Uint32(h4[:])&^mask
	var out [4]byte
	binary.BigEndian.PutUint32(out[:], v)
	return netip.AddrFrom4(out)
}

func vtepIP6(vtepCIDR netip.Prefix, nodeIP netip.Addr) netip.Addr {
	var host [16]byte
	if nodeIP.Is4() {
		b := nodeIP.As4()
		copy(host[12:], b[:])
	} else {
		host = nodeIP.As16()
	}
	n := vtepCIDR.Addr().As16()
	bits := vtepCIDR.Bits()
	var out [16]byte
	for i := range out {
		m := byte(0)
		switch {
		case bits >= 8*(i+1):
			m = 0xff
		case bits > 8*i:
			m = ^byte(0) << (8 - (bits - 8*i))
		}
		out[i] = n[i]&m | host[i]&^m
	}
	return netip.AddrFrom16(out)
}

// families says which address families the local cluster's pods have:
// weft builds IPv4 objects only for IPv4 pod CIDRs and IPv6 objects only
// for IPv6 ones.
func families(p config.Parsed) (v4, v6 bool) {
	for _, c := range p.PodCIDRs {
		if c.Addr().Is6() {
			v6 = true
		} else {
			v4 = true
		}
	}
	return v4, v6
}

// VTEPsOf is the VTEP addresses of the families in use (an invalid one is
// a family the cluster does not have) that the VXLAN device of a node with
// this underlay address carries: vx-weft's, or with cable the cable
// device's. Other packages (the health probes) derive their targets from
// it, so they probe exactly what Desired programs.
func VTEPsOf(p config.Parsed, underlay netip.Addr, cable bool) (v4, v6 netip.Addr) {
	r := vtepRanges{v4: p.VTEPCIDR, v6: p.VTEPCIDR6}
	if cable {
		r = vtepRanges{v4: p.CableCIDR, v6: p.CableCIDR6}
	}
	has4, has6 := families(p)
	if !has4 {
		r.v4 = netip.Prefix{}
	}
	if !has6 {
		r.v6 = netip.Prefix{}
	}
	return r.vteps(underlay)
}

// UnderlayOf is a node's address on the cluster's underlay.
func UnderlayOf(p config.Parsed, n config.ParsedNode) netip.Addr { return underlayOf(p, n) }

// underlayOf is a node's address on the cluster's underlay.
func underlayOf(p config.Parsed, n config.ParsedNode) netip.Addr {
	if p.Underlay6 {
		return n.IP6
	}
	return n.IP
}

// Desired computes the node's desired state. cfg must have been validated
// (cfg.Parsed filled). An error means the inputs are not yet sufficient to
// build any state (node IP, underlay interface or MTU unknown); problems
// with the configuration itself go to Result.Problems.
func Desired(cfg *config.Config, in Inputs) (Result, error) {
	if cfg == nil || !cfg.Parsed.VTEPCIDR.IsValid() || !cfg.Parsed.CableCIDR.IsValid() {
		return Result{}, errors.New("desired state: configuration not validated")
	}
	var missing []string
	switch {
	case cfg.Parsed.Underlay6 && !in.NodeIP.Is6():
		missing = append(missing, "node IPv6 address (the cluster's underlay is IPv6)")
	case !cfg.Parsed.Underlay6 && !in.NodeIP.Is4():
		missing = append(missing, "node IPv4 address")
	}
	if in.UnderlayIf == "" {
		missing = append(missing, "underlay interface")
	}
	if in.UnderlayMTU <= 0 && (cfg.VXLAN.MTU == 0 || cfg.Cable == config.CableVXLAN && cfg.CableVXLAN.MTU == 0) {
		missing = append(missing, "underlay MTU")
	}
	if len(missing) > 0 {
		return Result{}, fmt.Errorf("desired state: unknown %s", strings.Join(missing, ", "))
	}

	p := cfg.Parsed
	res := Result{Role: RoleNonGateway}
	if cfg.IsGateway() {
		res.Role = RoleGateway
	}
	res.Problems = problems(cfg, in)

	gw, ok := nodeByName(p.Nodes, cfg.Cluster.Gateway)
	if !ok {
		return Result{}, fmt.Errorf("desired state: gateway %q is not in cluster.nodes", cfg.Cluster.Gateway)
	}

	n := 0
	for _, r := range p.Remotes {
		n += len(r.PodCIDRs) + len(r.ServiceCIDRs)
	}
	remoteCIDRs := make([]netip.Prefix, 0, n)
	for _, r := range p.Remotes {
		remoteCIDRs = append(remoteCIDRs, r.PodCIDRs...)
		remoteCIDRs = append(remoteCIDRs, r.ServiceCIDRs...)
	}

	v4, v6 := families(p)
	ranges := vtepRanges{v4: p.VTEPCIDR}
	cableRanges := vtepRanges{v4: p.CableCIDR}
	if !v4 {
		ranges.v4, cableRanges.v4 = netip.Prefix{}, netip.Prefix{}
	}
	if v6 {
		ranges.v6, cableRanges.v6 = p.VTEPCIDR6, p.CableCIDR6
	}
	routes := make([]dataplane.Route, 0, n)
	// route is the route to dst via the peer's VTEP of dst's family; a
	// family the local pods do not have gets none (its pods could not use
	// it), which problems reports.
	route := func(dst netip.Prefix, via dataplane.Peer, dev string) {
		r := dataplane.Route{Dst: dst, Via: via.VTEP, Dev: dev, Src: in.CNIIP}
		if dst.Addr().Is6() {
			r.Via, r.Src = via.VTEP6, in.CNIIP6
		}
		if r.Via.IsValid() {
			routes = append(routes, r)
		}
	}

	vx := device(cfg.VXLAN, ranges, in)
	devices := []dataplane.VXLAN{}
	if res.Role == RoleNonGateway {
		vx.Peers = []dataplane.Peer{peer(ranges, underlayOf(p, gw))}
		for _, dst := range remoteCIDRs {
			route(dst, vx.Peers[0], vx.Name)
		}
	} else {
		for _, n := range p.Nodes {
			if n.Name == cfg.NodeName {
				continue
			}
			vx.Peers = append(vx.Peers, peer(ranges, underlayOf(p, n)))
		}
		if cfg.Cable == config.CableVXLAN {
			cable := device(cfg.CableVXLAN, cableRanges, in)
			for _, r := range p.Remotes {
				if !r.GatewayIP.IsValid() || r.GatewayIP.Is6() != in.NodeIP.Is6() {
					continue // required with cable vxlan; another family is a problem
				}
				pr := peer(cableRanges, r.GatewayIP)
				cable.Peers = append(cable.Peers, pr)
				for _, dst := range slices.Concat(r.PodCIDRs, r.ServiceCIDRs) {
					route(dst, pr, cable.Name)
				}
			}
			sortPeers(cable.Peers)
			devices = append(devices, cable)
		}
	}
	sortPeers(vx.Peers)
	devices = append(devices, vx)
	slices.SortFunc(devices, func(a, b dataplane.VXLAN) int { return strings.Compare(a.Name, b.Name) })
	byDst := func(a, b dataplane.Route) int {
		if c := dataplane.CompareDst(a.Dst, b.Dst); c != 0 {
			return c
		}
		return strings.Compare(a.Dev, b.Dev)
	}
	// Files usually list CIDRs in order: then checking is all the work.
	if !slices.IsSortedFunc(routes, byDst) {
		slices.SortFunc(routes, byDst)
	}

	var names []string
	var ports []uint16
	for _, d := range devices {
		names = append(names, d.Name)
		ports = append(ports, d.Port)
	}
	loose := slices.Clone(names)
	for _, n := range []string{in.CNIIf, in.UnderlayIf} {
		if n != "" {
			loose = append(loose, n)
		}
	}
	slices.Sort(loose)
	slices.Sort(ports)

	res.Dataplane = dataplane.State{
		Devices:       devices,
		Routes:        routes,
		Table:         cfg.RouteTable,
		RulePriority:  cfg.RulePriority,
		LooseRPFilter: slices.Compact(loose),
	}
	res.Filter = packetfilter.Model{
		LocalCIDRs:  sortedPrefixes(slices.Concat(p.PodCIDRs, p.ServiceCIDRs)),
		RemoteCIDRs: sortedPrefixes(remoteCIDRs),
		Devices:     names,
		CNIIP:       in.CNIIP,
		CNIIP6:      in.CNIIP6,
		VXLANPorts:  slices.Compact(ports),
		MSS:         packetfilter.MSS{Mode: cfg.MSS.Mode, Value: cfg.MSS.Value},
	}
	// Only the UDP responder needs its port accepted: every probe and
	// answer travels over weft's devices, whose input weft's filter
	// accepts, and with icmp the kernel answers (no port at all).
	if cfg.HealthCheck.On() && cfg.HealthCheck.UDP() {
		res.Filter.HealthCheckPort = cfg.HealthCheck.Port
	}
	return res, nil
}

// vtepRanges are one device's VTEP ranges of the families in use (an
// invalid one is a family the cluster does not have).
type vtepRanges struct{ v4, v6 netip.Prefix }

func (r vtepRanges) vteps(underlay netip.Addr) (v4, v6 netip.Addr) {
	if r.v4.IsValid() {
		v4 = VTEPIP(r.v4, underlay)
	}
	if r.v6.IsValid() {
		v6 = VTEPIP(r.v6, underlay)
	}
	return v4, v6
}

// vtepMAC is the MAC of a VTEP with these addresses: the IPv4 one's when
// it has one, so that a dual-stack device keeps its IPv4-only MAC.
func vtepMAC(v4, v6 netip.Addr) net.HardwareAddr {
	if v4.IsValid() {
		return dataplane.MACFor(v4)
	}
	return dataplane.MACFor(v6)
}

func device(v config.VXLAN, r vtepRanges, in Inputs) dataplane.VXLAN {
	mtu := v.MTU
	if mtu == 0 {
		mtu = in.UnderlayMTU - VXLANOverhead
		if in.NodeIP.Is6() {
			mtu = in.UnderlayMTU - VXLANOverhead6
		}
	}
	v4, v6 := r.vteps(in.NodeIP)
	d := dataplane.VXLAN{
		Name:     v.Name,
		VNI:      v.VNI,
		Port:     v.Port,
		Underlay: in.UnderlayIf,
		LocalIP:  in.NodeIP,
		MTU:      mtu,
		MAC:      vtepMAC(v4, v6),
	}
	if v4.IsValid() {
		d.Addr = netip.PrefixFrom(v4, r.v4.Bits())
	}
	if v6.IsValid() {
		d.Addr6 = netip.PrefixFrom(v6, r.v6.Bits())
	}
	return d
}

func peer(r vtepRanges, underlay netip.Addr) dataplane.Peer {
	v4, v6 := r.vteps(underlay)
	return dataplane.Peer{VTEP: v4, VTEP6: v6, MAC: vtepMAC(v4, v6), Underlay: underlay}
}

func sortPeers(ps []dataplane.Peer) {
	slices.SortFunc(ps, func(a, b dataplane.Peer) int {
		if c := a.VTEP.Compare(b.VTEP); c != 0 {
			return c
		}
		if c := a.VTEP6.Compare(b.VTEP6); c != 0 {
			return c
		}
		return a.Underlay.Compare(b.Underlay)
	})
}

func sortedPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := slices.Clone(ps)
	if !slices.IsSortedFunc(out, dataplane.CompareDst) {
		slices.SortFunc(out, dataplane.CompareDst)
	}
	return slices.Compact(out)
}

func nodeByName(nodes []config.ParsedNode, name string) (config.ParsedNode, bool) {
	for _, n := range nodes {
		if n.Name == name {
			return n, true
		}
	}
	return config.ParsedNode{}, false
}

// problems reports what makes the configured topology partly unusable.
func problems(cfg *config.Config, in Inputs) []string {
	p := cfg.Parsed
	var out []string

	self, listed := nodeByName(p.Nodes, cfg.NodeName)
	switch {
	case !listed:
		out = append(out, fmt.Sprintf("warning: this node %q (%s) is not in cluster.nodes: the gateway has no FDB entry for it, so remote traffic cannot come back to it", cfg.NodeName, in.NodeIP))
	case underlayOf(p, self) != in.NodeIP:
		ul := underlayOf(p, self)
		out = append(out, fmt.Sprintf("node %q runs with node IP %s but cluster.nodes lists %s: the gateway sends its traffic to %s", cfg.NodeName, in.NodeIP, ul, ul))
	}
	v4, v6 := families(p)
	for _, r := range p.Remotes {
		for _, c := range slices.Concat(r.PodCIDRs, r.ServiceCIDRs) {
			if c.Addr().Is6() && !v6 || c.Addr().Is4() && !v4 {
				fam := map[bool]string{false: "IPv4", true: "IPv6"}[c.Addr().Is6()]
				out = append(out, fmt.Sprintf("remote %q: its %s CIDRs (%s, …) are not routed: this cluster has no %s pod CIDR", r.ID, fam, c, fam))
				break
			}
		}
		if cfg.Cable == config.CableVXLAN && r.GatewayIP.IsValid() && in.NodeIP.IsValid() && r.GatewayIP.Is6() != in.NodeIP.Is6() {
			out = append(out, fmt.Sprintf("remote %q: gateway %s is not of this cluster's underlay family (node IP %s): no cable to it", r.ID, r.GatewayIP, in.NodeIP))
		}
	}

	type owner struct {
		who string
		ip  netip.Addr
	}
	collide := func(cidrName string, cidr netip.Prefix, owners []owner) {
		seen := map[netip.Addr]owner{}
		for _, o := range owners {
			v := VTEPIP(cidr, o.ip)
			if prev, dup := seen[v]; dup {
				out = append(out, fmt.Sprintf("VTEP collision: %s (%s) and %s (%s) both map to %s in %s %s", prev.who, prev.ip, o.who, o.ip, v, cidrName, cidr))
				continue
			}
			seen[v] = o
		}
	}

	var nodes []owner
	for _, n := range p.Nodes {
		nodes = append(nodes, owner{fmt.Sprintf("node %q", n.Name), underlayOf(p, n)})
	}
	if !listed {
		nodes = append(nodes, owner{fmt.Sprintf("node %q", cfg.NodeName), in.NodeIP})
	}
	if v4 && !p.Underlay6 {
		collide("vxlan.vtepCIDR", p.VTEPCIDR, nodes)
	}
	if v6 {
		collide("vxlan.vtepCIDR6", p.VTEPCIDR6, nodes)
	}

	if cfg.Cable == config.CableVXLAN {
		var gws []owner
		if gw, ok := nodeByName(p.Nodes, cfg.Cluster.Gateway); ok {
			gws = append(gws, owner{fmt.Sprintf("local gateway %q", gw.Name), underlayOf(p, gw)})
		}
		for _, r := range p.Remotes {
			if r.GatewayIP.IsValid() {
				gws = append(gws, owner{fmt.Sprintf("remote %q gateway", r.ID), r.GatewayIP})
			}
		}
		if v4 && !p.Underlay6 {
			collide("cableVxlan.vtepCIDR", p.CableCIDR, gws)
		}
		if v6 {
			collide("cableVxlan.vtepCIDR6", p.CableCIDR6, gws)
		}
	}
	return out
}
