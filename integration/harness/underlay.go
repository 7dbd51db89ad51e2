package harness

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/weft-net/weft/pkg/netnstest"
)

// Underlay addressing: one flat L2 segment, so every node reaches every
// other node's underlay IP directly.
var (
	UnderlayPrefix = netip.MustParsePrefix("192.168.0.0/16")
	// UnderlayNextHop is the nodes' default gateway. It lives on br-ul so
	// that the default-route interface of a node is its eth0, as on a real
	// host; nothing is routed beyond it.
	UnderlayNextHop = netip.MustParseAddr("192.168.255.254")
)

// UnderlayBridge is the bridge in the underlay namespace.
const UnderlayBridge = "br-ul"

// Underlay is one namespace holding the bridge that every node's eth0 is
// plugged into.
type Underlay struct {
	NS  *netnstest.NS
	env *Env

	mu    sync.Mutex
	ports int
	nodes []*Node
	// has6: the bridge holds UnderlayNextHop6 (added with the first IPv6
	// port, so IPv4-only underlays stay as they were).
	has6 bool
}

// NewUnderlay creates the underlay namespace and its bridge.
func NewUnderlay(env *Env) (*Underlay, error) {
	n, err := env.NewNS("weft-ul")
	if err != nil {
		return nil, fmt.Errorf("underlay: %w", err)
	}
	cmds := [][]string{
		{"ip", "link", "add", UnderlayBridge, "type", "bridge"},
		{"ip", "addr", "add", netip.PrefixFrom(UnderlayNextHop, UnderlayPrefix.Bits()).String(), "dev", UnderlayBridge},
		{"ip", "link", "set", UnderlayBridge, "up"},
	}
	for _, c := range cmds {
		if _, err := n.Exec(c[0], c[1:]...); err != nil {
			return nil, fmt.Errorf("underlay: %w", err)
		}
	}
	return &Underlay{NS: n, env: env}, nil
}

// Nodes returns every node plugged into the underlay.
func (u *Underlay) Nodes() []*Node {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*Node(nil), u.nodes...)
}

// NodeOptions describes one node.
type NodeOptions struct {
	// Name is the logical (Kubernetes) node name, e.g. c1-n1.
	Name string
	// Cluster is the cluster ID the node belongs to, e.g. c1.
	Cluster string
	// IP is the underlay address (inside UnderlayPrefix); IP6 the IPv6
	// one (inside UnderlayPrefix6). At least one is required; an IPv6-only
	// node has no IP.
	IP  netip.Addr
	IP6 netip.Addr
	// PodCIDR is the node's pod subnet, e.g. 10.1.1.0/24; PodCIDR6 its
	// IPv6 pod subnet (fd00:1:0:1::/64). At least one is required.
	PodCIDR  netip.Prefix
	PodCIDR6 netip.Prefix
	// MTU of the underlay veth (both ends); 0 keeps 1500.
	MTU int
	// CNI is the primary-CNI simulation whose conflist is written at
	// creation. A zero Layout writes no conflist.
	CNI CNIOptions
}

// AddNode creates a node namespace, plugs its eth0 into the underlay and,
// when opts.CNI.Layout is set, writes its conflist.
func (u *Underlay) AddNode(opts NodeOptions) (*Node, error) {
	if opts.Name == "" || !(opts.IP.Is4() || opts.IP6.Is6()) || !(opts.PodCIDR.IsValid() || opts.PodCIDR6.IsValid()) {
		return nil, fmt.Errorf("add node %q: name, IPv4 or IPv6 address and pod CIDR are required", opts.Name)
	}
	if opts.IP.IsValid() && (!UnderlayPrefix.Contains(opts.IP) || opts.IP == UnderlayNextHop) {
		return nil, fmt.Errorf("add node %s: IP %s not usable in underlay %s", opts.Name, opts.IP, UnderlayPrefix)
	}
	if opts.PodCIDR6.IsValid() && !opts.IP6.IsValid() {
		// Pods of a family are routed between nodes (host-gw) over the
		// underlay of that family.
		return nil, fmt.Errorf("add node %s: IPv6 pod CIDR %s without an IPv6 underlay address", opts.Name, opts.PodCIDR6)
	}
	env := u.env
	n, err := env.NewNS("weft-node")
	if err != nil {
		return nil, fmt.Errorf("add node %s: %w", opts.Name, err)
	}
	dir, err := env.TempDir("weft-" + opts.Name + "-")
	if err != nil {
		return nil, fmt.Errorf("add node %s: %w", opts.Name, err)
	}
	node := &Node{
		Name:     opts.Name,
		Cluster:  opts.Cluster,
		NS:       n,
		IP:       opts.IP,
		IP6:      opts.IP6,
		PodCIDR:  opts.PodCIDR,
		PodCIDR6: opts.PodCIDR6,
		Dir:      dir,
		ConfDir:  filepath.Join(dir, "net.d"),
		CacheDir: filepath.Join(dir, "cni-cache"),
		IPAMDir:  filepath.Join(dir, "ipam"),
		StateDir: filepath.Join(dir, "run"),
		Socket:   filepath.Join(dir, "run", "weft.sock"),
		SpoolDir: filepath.Join(dir, "run", "spool"),
		Underlay: u,
		env:      env,
	}
	for _, d := range []string{node.ConfDir, node.CacheDir, node.IPAMDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("add node %s: %w", opts.Name, err)
		}
	}
	var ips []netip.Addr
	for _, a := range []netip.Addr{opts.IP, opts.IP6} {
		if a.IsValid() {
			ips = append(ips, a)
		}
	}
	if node.ULPort, err = u.Plug(n, ips...); err != nil {
		return nil, fmt.Errorf("add node %s: %w", opts.Name, err)
	}
	if opts.IP.IsValid() {
		if _, err := n.Exec("ip", "route", "add", "default", "via", UnderlayNextHop.String(), "dev", "eth0"); err != nil {
			return nil, fmt.Errorf("add node %s: %w", opts.Name, err)
		}
	}
	if opts.IP6.IsValid() {
		if _, err := n.Exec("ip", "-6", "route", "add", "default", "via", UnderlayNextHop6.String(), "dev", "eth0"); err != nil {
			return nil, fmt.Errorf("add node %s: %w", opts.Name, err)
		}
	}
	if opts.MTU != 0 {
		if err := node.SetUnderlayMTU(opts.MTU); err != nil {
			return nil, err
		}
	}
	// Nodes route pods; the primary CNIs enable this too, but the host-gw
	// routes must work before the first pod exists.
	if err := node.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return nil, fmt.Errorf("add node %s: %w", opts.Name, err)
	}
	if opts.PodCIDR6.IsValid() {
		// The IPv6 half of the same, and no duplicate address detection
		// on the devices the CNI creates later (cni0, the pods' host
		// veths): their addresses are unique by construction, and DAD
		// would hold the pod gateway address tentative for a second or
		// more after each first ADD.
		for _, kv := range [][2]string{{"net.ipv6.conf.all.forwarding", "1"}, {"net.ipv6.conf.default.accept_dad", "0"}} {
			if err := node.Sysctl(kv[0], kv[1]); err != nil {
				return nil, fmt.Errorf("add node %s: %w", opts.Name, err)
			}
		}
	}
	if opts.CNI.Layout != "" {
		if err := node.WriteConflist(opts.CNI); err != nil {
			return nil, err
		}
	}
	u.mu.Lock()
	u.nodes = append(u.nodes, node)
	u.mu.Unlock()
	env.Log.Info("node up", "node", node.Name, "netns", n.Name, "ip", node.IP, "ip6", node.IP6, "podCIDR", node.PodCIDR, "podCIDR6", node.PodCIDR6, "dir", dir)
	return node, nil
}

// Plug gives namespace n an eth0 with addresses ips (IPv4 inside
// UnderlayPrefix, IPv6 inside UnderlayPrefix6; at least one) on the
// underlay bridge and returns the name of its bridge port. Nodes use it,
// and so does anything else that must be reachable from the nodes, such as
// a test API server.
func (u *Underlay) Plug(n *netnstest.NS, ips ...netip.Addr) (string, error) {
	if len(ips) == 0 {
		return "", fmt.Errorf("plug %s: no underlay address", n.Name)
	}
	var addrs [][]string // ip addr add arguments
	for _, ip := range ips {
		switch {
		case ip.Is4() && UnderlayPrefix.Contains(ip) && ip != UnderlayNextHop:
			addrs = append(addrs, []string{"addr", "add", netip.PrefixFrom(ip, UnderlayPrefix.Bits()).String(), "dev", "eth0"})
		case ip.Is6() && UnderlayPrefix6.Contains(ip) && ip != UnderlayNextHop6:
			// nodad: unique by construction, usable at once.
			addrs = append(addrs, []string{"-6", "addr", "add", netip.PrefixFrom(ip, UnderlayPrefix6.Bits()).String(), "dev", "eth0", "nodad"})
			if err := u.ensure6(); err != nil {
				return "", fmt.Errorf("plug %s: %w", n.Name, err)
			}
		default:
			return "", fmt.Errorf("plug %s: IP %s not usable in underlay %s or %s", n.Name, ip, UnderlayPrefix, UnderlayPrefix6)
		}
	}
	u.mu.Lock()
	u.ports++
	peer := "ul-" + strconv.Itoa(u.ports)
	u.mu.Unlock()
	// The veth pair is born inside n with its peer sent straight to the
	// underlay namespace: no link ever exists in the root namespace, not
	// even for a moment.
	type step struct {
		in   *netnstest.NS
		args []string
	}
	steps := []step{{n, []string{"link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", u.NS.Name}}}
	for _, a := range addrs {
		steps = append(steps, step{n, a})
	}
	steps = append(steps,
		step{n, []string{"link", "set", "eth0", "up"}},
		step{u.NS, []string{"link", "set", peer, "master", UnderlayBridge}},
		step{u.NS, []string{"link", "set", peer, "up"}},
	)
	for _, s := range steps {
		if _, err := s.in.Exec("ip", s.args...); err != nil {
			return "", fmt.Errorf("plug %s into the underlay: %w", n.Name, err)
		}
	}
	return peer, nil
}

// ensure6 gives the bridge its IPv6 address (the nodes' IPv6 default
// gateway) once.
func (u *Underlay) ensure6() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.has6 {
		return nil
	}
	if _, err := u.NS.Exec("ip", "-6", "addr", "add", netip.PrefixFrom(UnderlayNextHop6, UnderlayPrefix6.Bits()).String(), "dev", UnderlayBridge, "nodad"); err != nil {
		return fmt.Errorf("underlay IPv6: %w", err)
	}
	u.has6 = true
	return nil
}

// Node is one simulated Kubernetes node: a namespace with eth0 on the
// underlay and a directory for its CNI configuration and weft's files.
type Node struct {
	// Name is the logical node name (c1-n1); NS.Name is the namespace.
	Name    string
	Cluster string
	NS      *netnstest.NS
	// IP and PodCIDR are the IPv4 underlay address and pod subnet, IP6
	// and PodCIDR6 the IPv6 ones; each is invalid when the node's plan
	// lacks the family.
	IP       netip.Addr
	IP6      netip.Addr
	PodCIDR  netip.Prefix
	PodCIDR6 netip.Prefix
	// Dir is the node's private directory; the paths below live in it.
	Dir      string
	ConfDir  string // NETCONFPATH: the conflist
	CacheDir string // libcni/cnitool result cache
	IPAMDir  string // host-local dataDir
	StateDir string // weftd stateDir
	Socket   string // weftd socket
	SpoolDir string // plugin spool
	// Underlay and ULPort (the bridge port of this node's eth0 in the
	// underlay namespace).
	Underlay *Underlay
	ULPort   string

	env *Env

	mu  sync.Mutex
	cni CNIOptions
}

// SetUnderlayMTU sets the MTU of both ends of the node's underlay veth.
// The bridge drops frames larger than a port's MTU, so lowering one node's
// MTU makes a path whose PMTU is smaller than its ends assume.
func (n *Node) SetUnderlayMTU(mtu int) error {
	m := strconv.Itoa(mtu)
	if _, err := n.Underlay.NS.Exec("ip", "link", "set", n.ULPort, "mtu", m); err != nil {
		return fmt.Errorf("node %s: set underlay MTU: %w", n.Name, err)
	}
	if _, err := n.NS.Exec("ip", "link", "set", "eth0", "mtu", m); err != nil {
		return fmt.Errorf("node %s: set underlay MTU: %w", n.Name, err)
	}
	return nil
}

// ReceiveInKernelThreads makes each end of the node's underlay link hand
// what it receives to a kernel thread (threaded NAPI; a veth has NAPI with
// GRO on, and a sender with TSO off is eligible for it) instead of
// processing it inside the sender's system call. Without it a packet sent
// into the underlay is bridged, received and answered by the far node's
// kernel, and its answer received back, all within the sender's sendto,
// and charged to the sending process: on real hosts the far side's CPU
// does its own part and the answer arrives in a NIC's softirq. Needs
// ethtool.
func (n *Node) ReceiveInKernelThreads() error {
	for _, end := range []struct {
		ns  *netnstest.NS
		dev string
	}{{n.NS, "eth0"}, {n.Underlay.NS, n.ULPort}} {
		if _, err := end.ns.Exec("ethtool", "-K", end.dev, "gro", "on", "tso", "off", "gso", "off"); err != nil {
			return fmt.Errorf("node %s: %s: NAPI for the underlay link: %w", n.Name, end.dev, err)
		}
		// sysfs as the namespace sees it: ip netns exec mounts its own.
		if _, err := end.ns.Exec("sh", "-c", "echo 1 > /sys/class/net/"+end.dev+"/threaded"); err != nil {
			return fmt.Errorf("node %s: %s: threaded NAPI: %w", n.Name, end.dev, err)
		}
	}
	return nil
}

// LowerUnderlayMTU is SetUnderlayMTU with a bridge port that drops every
// frame above mtu without an ICMP error, as a switch would. A veth accepts
// a GSO packet of any size, so the port would pass oversized frames as
// long as they travel as GSO packets: it segments in software at the MTU
// instead.
func (n *Node) LowerUnderlayMTU(mtu int) error {
	if err := n.SetUnderlayMTU(mtu); err != nil {
		return err
	}
	if _, err := n.Underlay.NS.Exec("ip", "link", "set", n.ULPort, "gso_max_segs", "1", "gso_max_size", strconv.Itoa(mtu)); err != nil {
		return fmt.Errorf("node %s: underlay port GSO limit: %w", n.Name, err)
	}
	return nil
}

// Sysctl writes a sysctl inside the node namespace. key uses dots
// (net.ipv4.ip_forward) or, when an interface name holds a dot, slashes
// (net/ipv4/conf/vxlan.calico/rp_filter).
func (n *Node) Sysctl(key, value string) error {
	return writeSysctl(n.NS, key, value)
}

// Exec runs a command inside the node namespace (combined output).
func (n *Node) Exec(name string, args ...string) (string, error) { return n.NS.Exec(name, args...) }

// ConnectHostGW adds, in n, a route to every peer's pod CIDR via the peer's
// underlay IP, like flannel's host-gw backend; per family.
func (n *Node) ConnectHostGW(peers ...*Node) error {
	for _, p := range peers {
		if p == n {
			continue
		}
		if p.PodCIDR.IsValid() && n.IP.IsValid() {
			if _, err := n.NS.Exec("ip", "route", "replace", p.PodCIDR.String(), "via", p.IP.String(), "dev", "eth0"); err != nil {
				return fmt.Errorf("host-gw route on %s to %s: %w", n.Name, p.Name, err)
			}
		}
		if p.PodCIDR6.IsValid() && n.IP6.IsValid() {
			if _, err := n.NS.Exec("ip", "-6", "route", "replace", p.PodCIDR6.String(), "via", p.IP6.String(), "dev", "eth0"); err != nil {
				return fmt.Errorf("host-gw IPv6 route on %s to %s: %w", n.Name, p.Name, err)
			}
		}
	}
	return nil
}

// EnableMasquerade installs flannel's ipMasq rule in the node: traffic from
// the cluster's pods to anything outside the cluster CIDR is masqueraded
// (ip6tables for an IPv6 CIDR, as flannel does with IPv6 enabled).
func (n *Node) EnableMasquerade(clusterPodCIDR netip.Prefix) error {
	c := clusterPodCIDR.String()
	tool := "iptables"
	if clusterPodCIDR.Addr().Is6() {
		tool = "ip6tables"
	}
	if _, err := n.NS.Exec(tool, "-w", "-t", "nat", "-A", "POSTROUTING", "-s", c, "!", "-d", c, "-j", "MASQUERADE"); err != nil {
		return fmt.Errorf("masquerade on %s: %w", n.Name, err)
	}
	return nil
}

// WeftdLogPath is where StartWeftd sends weftd's stdout and stderr.
func (n *Node) WeftdLogPath() string { return filepath.Join(n.Dir, "weftd.log") }

// WeftdConfigPath is where StartWeftd writes the configuration.
func (n *Node) WeftdConfigPath() string { return filepath.Join(n.Dir, "weft.yaml") }

// RewriteWeftdConfig replaces the configuration file at once (written
// next to it, then renamed over it, as an editor or a ConfigMap update
// does); a running weftd reloads it.
func (n *Node) RewriteWeftdConfig(yaml []byte) error {
	path := n.WeftdConfigPath()
	if err := os.WriteFile(path+".tmp", yaml, 0o600); err != nil {
		return fmt.Errorf("node %s: rewrite the weftd config: %w", n.Name, err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return fmt.Errorf("node %s: rewrite the weftd config: %w", n.Name, err)
	}
	return nil
}

// PluginLogPath is the weft plugin's logFile in the default weft entry.
func (n *Node) PluginLogPath() string { return filepath.Join(n.Dir, "weft-plugin.log") }

func writeSysctl(n *netnstest.NS, key, value string) error {
	path := "/proc/sys/" + key
	if !strings.Contains(key, "/") {
		path = "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	}
	// /proc/sys/net resolves against the netns of the calling thread, which
	// Do pins to n.
	err := n.Do(func(ns.NetNS) error {
		return os.WriteFile(path, []byte(value), 0o644)
	})
	if err != nil {
		return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, n.Name, err)
	}
	return nil
}
