// Package topology computes a node's desired data-plane and packet-filter
// state from the configuration and the facts resolved at run time. It is
// pure: no kernel access, so every rule of DESIGN.md's "Data plane" section
// is testable as any user.
package topology

import (
	"encoding/binary"
	"errors"
	"fmt"
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
// VXLAN 8 + inner Ethernet 14).
const VXLANOverhead = 50

// Inputs are the facts resolved at run time rather than configured.
type Inputs struct {
	NodeIP      netip.Addr // this node's underlay address
	UnderlayIf  string     // interface holding NodeIP
	UnderlayMTU int
	CNIIf       string     // "" while unknown
	CNIIP       netip.Addr // invalid while unknown: routes carry no source
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
// (240.168.10.12 for 192.168.10.12 in 240.0.0.0/8). It returns the invalid
// Addr unless both are IPv4.
func VTEPIP(vtepCIDR netip.Prefix, nodeIP netip.Addr) netip.Addr {
	if !vtepCIDR.IsValid() || !vtepCIDR.Addr().Is4() || !nodeIP.Is4() {
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

// Desired computes the node's desired state. cfg must have been validated
// (cfg.Parsed filled). An error means the inputs are not yet sufficient to
// build any state (node IP, underlay interface or MTU unknown); problems
// with the configuration itself go to Result.Problems.
func Desired(cfg *config.Config, in Inputs) (Result, error) {
	if cfg == nil || !cfg.Parsed.VTEPCIDR.IsValid() || !cfg.Parsed.CableCIDR.IsValid() {
		return Result{}, errors.New("desired state: configuration not validated")
	}
	var missing []string
	if !in.NodeIP.Is4() {
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

	vx := device(cfg.VXLAN, p.VTEPCIDR, in)
	routes := make([]dataplane.Route, 0, n)
	devices := []dataplane.VXLAN{}
	if res.Role == RoleNonGateway {
		vx.Peers = []dataplane.Peer{peer(p.VTEPCIDR, gw.IP)}
		gwVTEP := vx.Peers[0].VTEP
		for _, dst := range remoteCIDRs {
			routes = append(routes, dataplane.Route{Dst: dst, Via: gwVTEP, Dev: vx.Name, Src: in.CNIIP})
		}
	} else {
		for _, n := range p.Nodes {
			if n.Name == cfg.NodeName {
				continue
			}
			vx.Peers = append(vx.Peers, peer(p.VTEPCIDR, n.IP))
		}
		if cfg.Cable == config.CableVXLAN {
			cable := device(cfg.CableVXLAN, p.CableCIDR, in)
			for _, r := range p.Remotes {
				if !r.GatewayIP.IsValid() {
					continue // validation requires it with cable vxlan
				}
				pr := peer(p.CableCIDR, r.GatewayIP)
				cable.Peers = append(cable.Peers, pr)
				for _, dst := range slices.Concat(r.PodCIDRs, r.ServiceCIDRs) {
					routes = append(routes, dataplane.Route{Dst: dst, Via: pr.VTEP, Dev: cable.Name, Src: in.CNIIP})
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
		VXLANPorts:  slices.Compact(ports),
		MSS:         packetfilter.MSS{Mode: cfg.MSS.Mode, Value: cfg.MSS.Value},
	}
	if cfg.HealthCheck.On() {
		res.Filter.HealthCheckPort = cfg.HealthCheck.Port
	}
	return res, nil
}

func device(v config.VXLAN, cidr netip.Prefix, in Inputs) dataplane.VXLAN {
	mtu := v.MTU
	if mtu == 0 {
		mtu = in.UnderlayMTU - VXLANOverhead
	}
	vtep := VTEPIP(cidr, in.NodeIP)
	return dataplane.VXLAN{
		Name:     v.Name,
		VNI:      v.VNI,
		Port:     v.Port,
		Underlay: in.UnderlayIf,
		LocalIP:  in.NodeIP,
		MTU:      mtu,
		Addr:     netip.PrefixFrom(vtep, cidr.Bits()),
		MAC:      dataplane.MACFor(vtep),
	}
}

func peer(cidr netip.Prefix, underlay netip.Addr) dataplane.Peer {
	vtep := VTEPIP(cidr, underlay)
	return dataplane.Peer{VTEP: vtep, MAC: dataplane.MACFor(vtep), Underlay: underlay}
}

func sortPeers(ps []dataplane.Peer) {
	slices.SortFunc(ps, func(a, b dataplane.Peer) int {
		if c := a.VTEP.Compare(b.VTEP); c != 0 {
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
	case self.IP != in.NodeIP:
		out = append(out, fmt.Sprintf("node %q runs with node IP %s but cluster.nodes lists %s: the gateway sends its traffic to %s", cfg.NodeName, in.NodeIP, self.IP, self.IP))
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
		nodes = append(nodes, owner{fmt.Sprintf("node %q", n.Name), n.IP})
	}
	if !listed {
		nodes = append(nodes, owner{fmt.Sprintf("node %q", cfg.NodeName), in.NodeIP})
	}
	collide("vxlan.vtepCIDR", p.VTEPCIDR, nodes)

	if cfg.Cable == config.CableVXLAN {
		var gws []owner
		if gw, ok := nodeByName(p.Nodes, cfg.Cluster.Gateway); ok {
			gws = append(gws, owner{fmt.Sprintf("local gateway %q", gw.Name), gw.IP})
		}
		for _, r := range p.Remotes {
			if r.GatewayIP.IsValid() {
				gws = append(gws, owner{fmt.Sprintf("remote %q gateway", r.ID), r.GatewayIP})
			}
		}
		collide("cableVxlan.vtepCIDR", p.CableCIDR, gws)
	}
	return out
}
