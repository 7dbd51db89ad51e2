package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"
	"unicode"
)

// Bounds enforced by Validate.
const (
	// MinFixedMSS is the smallest MSS every IPv4 host must accept (RFC 879);
	// MaxFixedMSS is the largest IPv4 can carry (65535 − 20 IP − 20 TCP).
	MinFixedMSS = 536
	MaxFixedMSS = 65495
	MaxVNI      = 1<<24 - 1
	// MinMTU is the IPv4 minimum link MTU (RFC 791).
	MinMTU = 68
	MaxMTU = 65535
	// MaxRulePriority: 32766 and 32767 are the main and default rules.
	MaxRulePriority = 32765
	MaxRouteTable   = 1<<32 - 1
	MaxIfNameLen    = 15 // IFNAMSIZ − 1
	MinResync       = time.Second
)

// Tables the kernel reserves: default, main, local.
var reservedTables = map[int]string{253: "default", 254: "main", 255: "local"}

// ipv6Ready opens the configuration to IPv6 pod, service and node
// addresses: the reconcile loop hands IPv6 to both the data plane and the
// packet filter (issue 14). An IPv6 CIDR accepted without both would be
// traffic that bypasses weft (no route, no SNAT, no MSS clamp), which is
// worse than a refused file: a build that cannot carry a family sets its
// gate false, and validate's family checks refuse it with the reason.
const ipv6Ready = true

// ipv6NotReady is the reason IPv6 input is refused while ipv6Ready is false.
const ipv6NotReady = "IPv6 is not supported yet: weft's reconcile loop does not give IPv6 to its data plane and packet filter, so IPv6 traffic would bypass weft (issue 14)"

// families says which address families Validate accepts.
type families struct{ ipv6 bool }

// Validate checks every field, reports every problem at once as a
// *ValidationError, and fills c.Parsed. Call SetDefaults first: Validate
// treats the zero values SetDefaults would replace as errors.
func (c *Config) Validate() error {
	return c.validate(families{ipv6: ipv6Ready})
}

func (c *Config) validate(fam families) error {
	var errs errorList
	p := Parsed{}

	if c.NodeName == "" {
		errs.add("nodeName", "required (also not found in $NODE_NAME nor the hostname)")
	}
	if c.NodeIP != "" {
		p.NodeIP = parseIP(&errs, "nodeIP", c.NodeIP, 4, fam)
	}
	if c.NodeIP6 != "" {
		p.NodeIP6 = parseIP(&errs, "nodeIP6", c.NodeIP6, 6, fam)
	}

	// Every CIDR is collected here, with who announces it, so that one
	// sort and one sweep find every overlap: inside one owner it is merged
	// (with a warning), between owners it is an error naming both fields.
	cidrs := cidrList{fam: fam}
	n := len(c.Cluster.PodCIDRs) + len(c.Cluster.ServiceCIDRs) + 2
	for _, r := range c.Remotes {
		n += len(r.PodCIDRs) + len(r.ServiceCIDRs)
	}
	cidrs.grow(n)

	if c.Cluster.ID == "" {
		errs.add("cluster.id", "required")
	}
	if len(c.Cluster.PodCIDRs) == 0 {
		errs.add("cluster.podCIDRs", "at least one CIDR is required")
	}
	cidrs.parse(&errs, ownerLocal, "cluster.podCIDRs", c.Cluster.PodCIDRs, &p.PodCIDRs)
	cidrs.parse(&errs, ownerLocal, "cluster.serviceCIDRs", c.Cluster.ServiceCIDRs, &p.ServiceCIDRs)

	nodeNames := map[string]string{}
	nodeIPs := map[netip.Addr]string{} // both families
	noIP, noIP6 := -1, -1              // first node without an address of the family
	// Only the file source needs the nodes and the gateway from the file.
	fileTopology := c.Topology == TopologyFile || c.Topology == ""
	if len(c.Cluster.Nodes) == 0 && fileTopology {
		errs.add("cluster.nodes", "at least one node is required")
	}
	for i, n := range c.Cluster.Nodes {
		path := fmt.Sprintf("cluster.nodes[%d]", i)
		pn := ParsedNode{Name: n.Name}
		if n.Name == "" {
			errs.add(path+".name", "required")
		} else if prev, dup := nodeNames[n.Name]; dup {
			errs.add(path+".name", fmt.Sprintf("%q is already used by %s", n.Name, prev))
		} else {
			nodeNames[n.Name] = path + ".name"
		}
		addr := func(field, s string, want int) netip.Addr {
			if s == "" {
				return netip.Addr{}
			}
			a := parseIP(&errs, path+"."+field, s, want, fam)
			if a.IsValid() {
				if prev, dup := nodeIPs[a]; dup {
					errs.add(path+"."+field, fmt.Sprintf("%s is already used by %s", a, prev))
				} else {
					nodeIPs[a] = path + "." + field
				}
			}
			return a
		}
		pn.IP = addr("ip", n.IP, 4)
		pn.IP6 = addr("ip6", n.IP6, 6)
		switch {
		case n.IP == "" && n.IP6 == "":
			errs.add(path+".ip", "required (ip6 instead for a node with IPv6 only)")
		case n.IP == "" && noIP < 0:
			noIP = i
		case n.IP6 == "" && noIP6 < 0:
			noIP6 = i
		}
		p.Nodes = append(p.Nodes, pn)
		if n.Name != "" && n.Name == c.NodeName {
			if c.NodeIP == "" {
				p.NodeIP = pn.IP
			}
			if c.NodeIP6 == "" {
				p.NodeIP6 = pn.IP6
			}
		}
	}
	// The VXLAN underlay has one family for the whole cluster (a device's
	// underlay family is fixed): IPv4 when every node has an IPv4 address,
	// else IPv6, which every node must then have.
	if noIP >= 0 && noIP6 >= 0 {
		errs.add(fmt.Sprintf("cluster.nodes[%d].ip6", noIP6), fmt.Sprintf("required: cluster.nodes[%d] has no ip, so the VXLAN underlay must be IPv6 and every node needs an IPv6 address", noIP))
	}
	p.Underlay6 = noIP >= 0
	if p.Underlay6 && noIP6 < 0 { // (else the error above says it)
		// (Parsed.PodCIDRs are filled at the end: the raw list is read.)
		for i, raw := range c.Cluster.PodCIDRs {
			if pc, err := netip.ParsePrefix(raw); err == nil && pc.Addr().Is4() {
				errs.add(fmt.Sprintf("cluster.nodes[%d].ip", noIP), fmt.Sprintf("required: cluster.podCIDRs[%d] %s is IPv4, and IPv4 pods need an IPv4 underlay (an IPv4 VTEP on every node)", i, pc))
				break
			}
		}
	}
	switch {
	case !fileTopology:
	case c.Cluster.Gateway == "":
		errs.add("cluster.gateway", "required")
	case len(c.Cluster.Nodes) > 0:
		if _, ok := nodeNames[c.Cluster.Gateway]; !ok {
			errs.add("cluster.gateway", fmt.Sprintf("%q is not the name of any of cluster.nodes", c.Cluster.Gateway))
		}
	}

	switch c.Cable {
	case CableVXLAN, CableNone:
	default:
		errs.add("cable", fmt.Sprintf("%q is not one of vxlan, none", c.Cable))
	}

	remoteIDs := map[string]string{}
	gatewayFamily := "" // path of the first remote gatewayIP: they share the cable's family
	// Fixed capacity: cidrs keeps pointers to the remotes' CIDR lists.
	p.Remotes = make([]ParsedRemote, 0, len(c.Remotes))
	for i, r := range c.Remotes {
		path := fmt.Sprintf("remotes[%d]", i)
		p.Remotes = append(p.Remotes, ParsedRemote{ID: r.ID})
		pr := &p.Remotes[i]
		switch {
		case r.ID == "":
			errs.add(path+".id", "required")
		case r.ID == c.Cluster.ID:
			errs.add(path+".id", fmt.Sprintf("%q is the local cluster.id", r.ID))
		default:
			if prev, dup := remoteIDs[r.ID]; dup {
				errs.add(path+".id", fmt.Sprintf("%q is already used by %s", r.ID, prev))
			} else {
				remoteIDs[r.ID] = path + ".id"
			}
		}
		if len(r.PodCIDRs) == 0 {
			errs.add(path+".podCIDRs", "at least one CIDR is required")
		}
		owner := cidrOwner{kind: ownerRemote, index: i, id: r.ID}
		cidrs.parse(&errs, owner, path+".podCIDRs", r.PodCIDRs, &pr.PodCIDRs)
		cidrs.parse(&errs, owner, path+".serviceCIDRs", r.ServiceCIDRs, &pr.ServiceCIDRs)
		switch {
		case r.GatewayIP != "":
			pr.GatewayIP = parseIP(&errs, path+".gatewayIP", r.GatewayIP, 0, fam)
			if !pr.GatewayIP.IsValid() {
				break
			}
			if gatewayFamily == "" {
				gatewayFamily = path + ".gatewayIP"
				p.Cable6 = pr.GatewayIP.Is6()
			} else if pr.GatewayIP.Is6() != p.Cable6 {
				errs.add(path+".gatewayIP", fmt.Sprintf("%s is %s but %s is %s: the cable device has one underlay family", pr.GatewayIP, familyName(pr.GatewayIP.Is6()), gatewayFamily, familyName(p.Cable6)))
			}
		case c.Cable == CableVXLAN:
			errs.add(path+".gatewayIP", "required with cable: vxlan")
		}
		// One path-probe target per family: healthCheckIP may hold either
		// family, healthCheckIP6 the IPv6 one of a dual-stack remote.
		hcPath := map[bool]string{}
		for _, f := range []struct {
			field string
			raw   string
			want  int
		}{{"healthCheckIP", r.HealthCheckIP, 0}, {"healthCheckIP6", r.HealthCheckIP6, 6}} {
			if f.raw == "" {
				continue
			}
			fp := path + "." + f.field
			hc := parseIP(&errs, fp, f.raw, f.want, fam)
			if !hc.IsValid() {
				continue
			}
			if prev, dup := hcPath[hc.Is6()]; dup {
				errs.add(fp, fmt.Sprintf("%s is a second %s health-check address (%s is one): give one per family, the IPv4 one in healthCheckIP", hc, familyName(hc.Is6()), prev))
				continue
			}
			hcPath[hc.Is6()] = fp
			if !insideAny(hc, r.PodCIDRs, r.ServiceCIDRs) {
				// Only weft's routes to the remote's CIDRs make the probe
				// test the path real traffic takes.
				errs.add(fp, fmt.Sprintf("%s is not inside any of %s.podCIDRs or %s.serviceCIDRs (%s)", hc, path, path, familyName(hc.Is6())))
				continue
			}
			if hc.Is6() {
				pr.HealthCheckIP6 = hc
			} else {
				pr.HealthCheckIP = hc
			}
		}
	}

	if c.CNIInterface != "" {
		if reason := ifNameProblem(c.CNIInterface); reason != "" {
			errs.add("cniInterface", reason)
		}
	}

	p.VTEPCIDR, p.VTEPCIDR6 = validateVXLAN(&errs, "vxlan", c.VXLAN, &cidrs)
	p.CableCIDR, p.CableCIDR6 = validateVXLAN(&errs, "cableVxlan", c.CableVXLAN, &cidrs)
	if c.VXLAN.Name == c.CableVXLAN.Name {
		errs.add("cableVxlan.name", fmt.Sprintf("%q is also vxlan.name", c.CableVXLAN.Name))
	}
	if c.VXLAN.VNI == c.CableVXLAN.VNI {
		errs.add("cableVxlan.vni", fmt.Sprintf("%d is also vxlan.vni", c.CableVXLAN.VNI))
	}
	if c.VXLAN.Port == c.CableVXLAN.Port {
		errs.add("cableVxlan.port", fmt.Sprintf("%d is also vxlan.port", c.CableVXLAN.Port))
	}

	p.Warnings = cidrs.sweep(&errs)
	c.validateTopology(&errs)
	c.validateHealthCheck(&errs)

	switch c.PacketFilter {
	case PacketFilterAuto, PacketFilterNftables, PacketFilterIptables:
	default:
		errs.add("packetFilter", fmt.Sprintf("%q is not one of auto, nftables, iptables", c.PacketFilter))
	}
	switch c.IptablesMode {
	case IptablesModeDetect, IptablesModeLegacy, IptablesModeNft:
	default:
		errs.add("iptablesMode", fmt.Sprintf("%q is not one of \"\" (detect), legacy, nft", c.IptablesMode))
	}

	switch c.MSS.Mode {
	case MSSModePMTU:
		if c.MSS.Value != 0 {
			errs.add("mss.value", fmt.Sprintf("%d is set but mss.mode is pmtu (use mode: fixed)", c.MSS.Value))
		}
	case MSSModeFixed:
		if c.MSS.Value < MinFixedMSS || c.MSS.Value > MaxFixedMSS {
			errs.add("mss.value", fmt.Sprintf("%d is outside %d..%d", c.MSS.Value, MinFixedMSS, MaxFixedMSS))
		}
	default:
		errs.add("mss.mode", fmt.Sprintf("%q is not one of pmtu, fixed", c.MSS.Mode))
	}

	if c.RouteTable < 1 || int64(c.RouteTable) > MaxRouteTable {
		errs.add("routeTable", fmt.Sprintf("%d is outside 1..%d", c.RouteTable, int64(MaxRouteTable)))
	} else if name, ok := reservedTables[c.RouteTable]; ok {
		errs.add("routeTable", fmt.Sprintf("%d is the kernel's %s table", c.RouteTable, name))
	}
	if c.RulePriority < 1 || c.RulePriority > MaxRulePriority {
		errs.add("rulePriority", fmt.Sprintf("%d is outside 1..%d (0, 32766 and 32767 hold the kernel's own rules)", c.RulePriority, MaxRulePriority))
	}

	for _, f := range []struct{ path, value string }{
		{"socket", c.Socket}, {"spoolDir", c.SpoolDir}, {"stateDir", c.StateDir},
	} {
		if !filepath.IsAbs(f.value) {
			errs.add(f.path, fmt.Sprintf("%q is not an absolute path", f.value))
		}
	}
	if a := c.Metrics(); a != "" {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			errs.add("metricsAddress", fmt.Sprintf("%q is not host:port (\"\" disables metrics)", a))
		}
	}
	if c.ResyncInterval.Duration < MinResync {
		errs.add("resyncInterval", fmt.Sprintf("%s is shorter than 1s", c.ResyncInterval.Duration))
	}

	if err := errs.err(); err != nil {
		return err
	}
	cidrs.fill()
	c.Parsed = p
	return nil
}

// insideAny reports whether a is inside one of the (unvalidated) CIDRs.
func insideAny(a netip.Addr, lists ...[]string) bool {
	for _, l := range lists {
		for _, s := range l {
			if p, err := netip.ParsePrefix(s); err == nil && p.Contains(a) {
				return true
			}
		}
	}
	return false
}

// Host bits a vtepCIDR6 may leave: at least two VTEPs, and at most 32 so
// that the 4 bytes of the derived MAC (02:58 + the low 4 bytes of the VTEP)
// are unique per VTEP address.
const (
	MinVTEP6Bits = 96
	MaxVTEP6Bits = 126
)

func validateVXLAN(errs *errorList, path string, v VXLAN, cidrs *cidrList) (netip.Prefix, netip.Prefix) {
	if reason := ifNameProblem(v.Name); reason != "" {
		errs.add(path+".name", reason)
	}
	if v.VNI < 1 || v.VNI > MaxVNI {
		errs.add(path+".vni", fmt.Sprintf("%d is outside 1..%d", v.VNI, MaxVNI))
	}
	if v.Port == 0 {
		errs.add(path+".port", "0 is outside 1..65535")
	}
	if v.MTU != 0 && (v.MTU < MinMTU || v.MTU > MaxMTU) {
		errs.add(path+".mtu", fmt.Sprintf("%d is outside %d..%d (0 = underlay MTU − 50, − 70 over IPv6)", v.MTU, MinMTU, MaxMTU))
	}
	// The VTEP ranges are weft's own addresses, not traffic that could
	// bypass it: both families are always validated.
	vtep := func(field, s string, want int) netip.Prefix {
		pfx, reason := cidrProblem(s, families{ipv6: true})
		switch {
		case reason != "":
			errs.add(path+"."+field, reason)
			return netip.Prefix{}
		case want == 4 && !pfx.Addr().Is4():
			errs.add(path+"."+field, fmt.Sprintf("%q is not an IPv4 CIDR (an IPv6 range goes in %s.vtepCIDR6)", s, path))
			return netip.Prefix{}
		case want == 6 && !pfx.Addr().Is6():
			errs.add(path+"."+field, fmt.Sprintf("%q is not an IPv6 CIDR (the IPv4 range is %s.vtepCIDR)", s, path))
			return netip.Prefix{}
		case want == 4 && pfx.Bits() > 30:
			// Fewer than two host bits cannot give distinct VTEPs to nodes.
			errs.add(path+"."+field, fmt.Sprintf("%q leaves too few host bits (at most /30)", s))
		case want == 6 && (pfx.Bits() < MinVTEP6Bits || pfx.Bits() > MaxVTEP6Bits):
			errs.add(path+"."+field, fmt.Sprintf("%q is not /%d../%d (at most 32 host bits: the VTEP's MAC is derived from its last 4 bytes)", s, MinVTEP6Bits, MaxVTEP6Bits))
		}
		cidrs.add(cidrOwner{kind: ownerVTEP, id: path + "." + field}, path+"."+field, pfx)
		return pfx
	}
	return vtep("vtepCIDR", v.VTEPCIDR, 4), vtep("vtepCIDR6", v.VTEPCIDR6, 6)
}

// cidrProblem parses s as a CIDR of a family fam accepts; reason says what
// is wrong with it, naming the family.
func cidrProblem(s string, fam families) (netip.Prefix, string) {
	pfx, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return pfx, fmt.Sprintf("%q is not a CIDR", s)
	case pfx.Addr().Is4In6():
		return pfx, fmt.Sprintf("%q is an IPv4-mapped IPv6 CIDR (write the IPv4 CIDR %s)", s, netip.PrefixFrom(pfx.Addr().Unmap(), max(pfx.Bits()-96, 0)))
	case pfx.Addr().Is6() && !fam.ipv6:
		return pfx, fmt.Sprintf("%q is an IPv6 CIDR: %s", s, ipv6NotReady)
	case pfx.Masked() != pfx:
		// The kernel refuses routes with host bits set; catch it here.
		return pfx, fmt.Sprintf("%q has host bits set (the network is %s)", s, pfx.Masked())
	}
	return pfx, ""
}

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// parseIP parses a unicast address of family want (4, 6, or 0 for either
// of those fam accepts).
func parseIP(errs *errorList, path, s string, want int, fam families) netip.Addr {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		errs.add(path, fmt.Sprintf("%q is not an IP address", s))
	case a.Zone() != "":
		errs.add(path, fmt.Sprintf("%q has a zone: a node address must be global", s))
	case a.Is4In6():
		errs.add(path, fmt.Sprintf("%q is an IPv4-mapped IPv6 address (write %s)", s, a.Unmap()))
	case want == 4 && !a.Is4():
		errs.add(path, fmt.Sprintf("%q is not an IPv4 address (an IPv6 address goes in %s6)", s, path))
	case want == 6 && !a.Is6():
		errs.add(path, fmt.Sprintf("%q is not an IPv6 address (an IPv4 address goes in %s)", s, strings.TrimSuffix(path, "6")))
	case a.Is6() && !fam.ipv6:
		errs.add(path, fmt.Sprintf("%q is an IPv6 address: %s", s, ipv6NotReady))
	case a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		errs.add(path, fmt.Sprintf("%q is not a unicast address", s))
	case a.Is6() && a.IsLinkLocalUnicast():
		errs.add(path, fmt.Sprintf("%q is link-local: a node address must be routable between nodes", s))
	default:
		return a
	}
	return netip.Addr{}
}

// ifNameProblem applies the kernel's dev_valid_name rules.
func ifNameProblem(name string) string {
	switch {
	case name == "":
		return "required"
	case len(name) > MaxIfNameLen:
		return fmt.Sprintf("%q is longer than %d characters", name, MaxIfNameLen)
	case name == "." || name == "..":
		return fmt.Sprintf("%q is not a valid interface name", name)
	case strings.ContainsAny(name, "/:") || strings.IndexFunc(name, unicode.IsSpace) >= 0:
		return fmt.Sprintf("%q is not a valid interface name (no '/', ':' or whitespace)", name)
	}
	return ""
}
