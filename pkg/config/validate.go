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

// Validate checks every field, reports every problem at once as a
// *ValidationError, and fills c.Parsed. Call SetDefaults first: Validate
// treats the zero values SetDefaults would replace as errors.
func (c *Config) Validate() error {
	var errs errorList
	p := Parsed{}

	if c.NodeName == "" {
		errs.add("nodeName", "required (also not found in $NODE_NAME nor the hostname)")
	}
	if c.NodeIP != "" {
		p.NodeIP = parseIPv4(&errs, "nodeIP", c.NodeIP)
	}

	// Every CIDR is collected here, with who announces it, so that one
	// sort and one sweep find every overlap: inside one owner it is merged
	// (with a warning), between owners it is an error naming both fields.
	var cidrs cidrList
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
	nodeIPs := map[netip.Addr]string{}
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
		if n.IP == "" {
			errs.add(path+".ip", "required")
		} else {
			pn.IP = parseIPv4(&errs, path+".ip", n.IP)
			if pn.IP.IsValid() {
				if prev, dup := nodeIPs[pn.IP]; dup {
					errs.add(path+".ip", fmt.Sprintf("%s is already used by %s", pn.IP, prev))
				} else {
					nodeIPs[pn.IP] = path + ".ip"
				}
			}
		}
		p.Nodes = append(p.Nodes, pn)
		if n.Name != "" && n.Name == c.NodeName && c.NodeIP == "" {
			p.NodeIP = pn.IP
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
			pr.GatewayIP = parseIPv4(&errs, path+".gatewayIP", r.GatewayIP)
		case c.Cable == CableVXLAN:
			errs.add(path+".gatewayIP", "required with cable: vxlan")
		}
		if r.HealthCheckIP != "" {
			pr.HealthCheckIP = parseIPv4(&errs, path+".healthCheckIP", r.HealthCheckIP)
			if pr.HealthCheckIP.IsValid() && !insideAny(pr.HealthCheckIP, r.PodCIDRs, r.ServiceCIDRs) {
				// Only weft's routes to the remote's CIDRs make the probe
				// test the path real traffic takes.
				errs.add(path+".healthCheckIP", fmt.Sprintf("%s is not inside any of %s.podCIDRs or %s.serviceCIDRs", pr.HealthCheckIP, path, path))
			}
		}
	}

	if c.CNIInterface != "" {
		if reason := ifNameProblem(c.CNIInterface); reason != "" {
			errs.add("cniInterface", reason)
		}
	}

	p.VTEPCIDR = validateVXLAN(&errs, "vxlan", c.VXLAN, &cidrs)
	p.CableCIDR = validateVXLAN(&errs, "cableVxlan", c.CableVXLAN, &cidrs)
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

func validateVXLAN(errs *errorList, path string, v VXLAN, cidrs *cidrList) netip.Prefix {
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
		errs.add(path+".mtu", fmt.Sprintf("%d is outside %d..%d (0 = underlay MTU − 50)", v.MTU, MinMTU, MaxMTU))
	}
	pfx, ok := parseCIDR(errs, path+".vtepCIDR", v.VTEPCIDR)
	if !ok {
		return netip.Prefix{}
	}
	if pfx.Bits() > 30 {
		// Fewer than two host bits cannot give distinct VTEPs to nodes.
		errs.add(path+".vtepCIDR", fmt.Sprintf("%q leaves too few host bits (at most /30)", v.VTEPCIDR))
	}
	cidrs.add(cidrOwner{kind: ownerVTEP, id: path}, path+".vtepCIDR", pfx)
	return pfx
}

func parseCIDR(errs *errorList, path, s string) (netip.Prefix, bool) {
	pfx, reason := cidrProblem(s)
	if reason != "" {
		errs.add(path, reason)
		return netip.Prefix{}, false
	}
	return pfx, true
}

// cidrProblem parses s as an IPv4 CIDR; reason says what is wrong with it.
func cidrProblem(s string) (netip.Prefix, string) {
	pfx, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return pfx, fmt.Sprintf("%q is not a CIDR", s)
	case !pfx.Addr().Is4():
		return pfx, fmt.Sprintf("%q is not an IPv4 CIDR", s)
	case pfx.Masked() != pfx:
		// The kernel refuses routes with host bits set; catch it here.
		return pfx, fmt.Sprintf("%q has host bits set (the network is %s)", s, pfx.Masked())
	}
	return pfx, ""
}

func parseIPv4(errs *errorList, path, s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		errs.add(path, fmt.Sprintf("%q is not an IP address", s))
	case !a.Is4():
		errs.add(path, fmt.Sprintf("%q is not an IPv4 address", s))
	case a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		errs.add(path, fmt.Sprintf("%q is not a unicast address", s))
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
