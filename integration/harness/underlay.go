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
	// IP is the underlay address (inside UnderlayPrefix).
	IP netip.Addr
	// PodCIDR is the node's pod subnet, e.g. 10.1.1.0/24.
	PodCIDR netip.Prefix
	// MTU of the underlay veth (both ends); 0 keeps 1500.
	MTU int
	// CNI is the primary-CNI simulation whose conflist is written at
	// creation. A zero Layout writes no conflist.
	CNI CNIOptions
}

// AddNode creates a node namespace, plugs its eth0 into the underlay and,
// when opts.CNI.Layout is set, writes its conflist.
func (u *Underlay) AddNode(opts NodeOptions) (*Node, error) {
	if opts.Name == "" || !opts.IP.Is4() || !opts.PodCIDR.IsValid() {
		return nil, fmt.Errorf("add node %q: name, IPv4 and pod CIDR are required", opts.Name)
	}
	if !UnderlayPrefix.Contains(opts.IP) || opts.IP == UnderlayNextHop {
		return nil, fmt.Errorf("add node %s: IP %s not usable in underlay %s", opts.Name, opts.IP, UnderlayPrefix)
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
		PodCIDR:  opts.PodCIDR,
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
	if node.ULPort, err = u.Plug(n, opts.IP); err != nil {
		return nil, fmt.Errorf("add node %s: %w", opts.Name, err)
	}
	if _, err := n.Exec("ip", "route", "add", "default", "via", UnderlayNextHop.String(), "dev", "eth0"); err != nil {
		return nil, fmt.Errorf("add node %s: %w", opts.Name, err)
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
	if opts.CNI.Layout != "" {
		if err := node.WriteConflist(opts.CNI); err != nil {
			return nil, err
		}
	}
	u.mu.Lock()
	u.nodes = append(u.nodes, node)
	u.mu.Unlock()
	env.Log.Info("node up", "node", node.Name, "netns", n.Name, "ip", node.IP, "podCIDR", node.PodCIDR, "dir", dir)
	return node, nil
}

// Plug gives namespace n an eth0 with address ip on the underlay bridge and
// returns the name of its bridge port. Nodes use it, and so does anything
// else that must be reachable from the nodes, such as a test API server.
func (u *Underlay) Plug(n *netnstest.NS, ip netip.Addr) (string, error) {
	if !UnderlayPrefix.Contains(ip) || ip == UnderlayNextHop {
		return "", fmt.Errorf("plug %s: IP %s not usable in underlay %s", n.Name, ip, UnderlayPrefix)
	}
	u.mu.Lock()
	u.ports++
	peer := "ul-" + strconv.Itoa(u.ports)
	u.mu.Unlock()
	// The veth pair is born inside n with its peer sent straight to the
	// underlay namespace: no link ever exists in the root namespace, not
	// even for a moment.
	steps := []struct {
		in   *netnstest.NS
		args []string
	}{
		{n, []string{"link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", u.NS.Name}},
		{n, []string{"addr", "add", netip.PrefixFrom(ip, UnderlayPrefix.Bits()).String(), "dev", "eth0"}},
		{n, []string{"link", "set", "eth0", "up"}},
		{u.NS, []string{"link", "set", peer, "master", UnderlayBridge}},
		{u.NS, []string{"link", "set", peer, "up"}},
	}
	for _, s := range steps {
		if _, err := s.in.Exec("ip", s.args...); err != nil {
			return "", fmt.Errorf("plug %s into the underlay: %w", n.Name, err)
		}
	}
	return peer, nil
}

// Node is one simulated Kubernetes node: a namespace with eth0 on the
// underlay and a directory for its CNI configuration and weft's files.
type Node struct {
	// Name is the logical node name (c1-n1); NS.Name is the namespace.
	Name    string
	Cluster string
	NS      *netnstest.NS
	IP      netip.Addr
	PodCIDR netip.Prefix
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

// Sysctl writes a sysctl inside the node namespace. key uses dots
// (net.ipv4.ip_forward) or, when an interface name holds a dot, slashes
// (net/ipv4/conf/vxlan.calico/rp_filter).
func (n *Node) Sysctl(key, value string) error {
	return writeSysctl(n.NS, key, value)
}

// Exec runs a command inside the node namespace (combined output).
func (n *Node) Exec(name string, args ...string) (string, error) { return n.NS.Exec(name, args...) }

// ConnectHostGW adds, in n, a route to every peer's pod CIDR via the peer's
// underlay IP, like flannel's host-gw backend.
func (n *Node) ConnectHostGW(peers ...*Node) error {
	for _, p := range peers {
		if p == n {
			continue
		}
		if _, err := n.NS.Exec("ip", "route", "replace", p.PodCIDR.String(), "via", p.IP.String(), "dev", "eth0"); err != nil {
			return fmt.Errorf("host-gw route on %s to %s: %w", n.Name, p.Name, err)
		}
	}
	return nil
}

// EnableMasquerade installs flannel's ipMasq rule in the node: traffic from
// the cluster's pods to anything outside the cluster CIDR is masqueraded.
func (n *Node) EnableMasquerade(clusterPodCIDR netip.Prefix) error {
	c := clusterPodCIDR.String()
	if _, err := n.NS.Exec("iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-s", c, "!", "-d", c, "-j", "MASQUERADE"); err != nil {
		return fmt.Errorf("masquerade on %s: %w", n.Name, err)
	}
	return nil
}

// WeftdLogPath is where StartWeftd sends weftd's stdout and stderr.
func (n *Node) WeftdLogPath() string { return filepath.Join(n.Dir, "weftd.log") }

// WeftdConfigPath is where StartWeftd writes the configuration.
func (n *Node) WeftdConfigPath() string { return filepath.Join(n.Dir, "weft.yaml") }

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
