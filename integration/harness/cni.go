package harness

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/pkg/netnstest"
)

// Layout selects which primary CNI a node simulates.
type Layout string

const (
	// LayoutFlannel: bridge cni0 (gateway) + host-local, cniVersion 0.3.1.
	LayoutFlannel Layout = "flannel"
	// LayoutCalico: ptp + host-local, cniVersion 1.0.0, and a vxlan.calico
	// device that CreateCalicoDevice adds when the test wants it.
	LayoutCalico Layout = "calico"
)

// Default network names, as the real CNIs call them.
const (
	FlannelNetName = "cbr0"
	CalicoNetName  = "k8s-pod-network"
	// CalicoDevice is the device Calico's VXLAN mode creates on a node.
	CalicoDevice = "vxlan.calico"
	// PodIfName is the interface name inside every pod.
	PodIfName = "eth0"
)

// CNIOptions shapes a node's conflist.
type CNIOptions struct {
	Layout Layout
	// NetName overrides the network name (cbr0 / k8s-pod-network).
	NetName string
	// CNIVersion overrides the conflist version (0.3.1 / 1.0.0); tests of
	// STATUS and GC use 1.1.0.
	CNIVersion string
	// PodMTU sets the pod interface MTU; 0 leaves the plugin's default.
	PodMTU int
	// Weft appends the weft entry as the last plugin of the chain.
	Weft bool
	// WeftOptions is merged over the default weft entry (socket, spoolDir,
	// failPolicy open, timeout 2s, logFile); a nil value deletes the key.
	WeftOptions map[string]any
	// FileName overrides the conflist file name (10-flannel.conflist /
	// 10-calico.conflist).
	FileName string
}

func (o CNIOptions) withDefaults() CNIOptions {
	switch o.Layout {
	case LayoutFlannel:
		o.NetName = cmpOr(o.NetName, FlannelNetName)
		o.CNIVersion = cmpOr(o.CNIVersion, "0.3.1")
		o.FileName = cmpOr(o.FileName, "10-flannel.conflist")
	case LayoutCalico:
		o.NetName = cmpOr(o.NetName, CalicoNetName)
		o.CNIVersion = cmpOr(o.CNIVersion, "1.0.0")
		o.FileName = cmpOr(o.FileName, "10-calico.conflist")
	}
	return o
}

func cmpOr(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

// WeftEntry is the default weft plugin entry for this node, before
// CNIOptions.WeftOptions are applied.
func (n *Node) WeftEntry() map[string]any {
	return map[string]any{
		"type":       "weft",
		"socket":     n.Socket,
		"spoolDir":   n.SpoolDir,
		"failPolicy": "open",
		"timeout":    "2s",
		"logFile":    n.PluginLogPath(),
	}
}

// Conflist renders the conflist for opts without writing it.
func (n *Node) Conflist(opts CNIOptions) ([]byte, error) {
	opts = opts.withDefaults()
	ipam := map[string]any{
		"type":    "host-local",
		"dataDir": n.IPAMDir,
	}
	defaultRoutes := []any{map[string]any{"dst": "0.0.0.0/0"}}
	if !n.PodCIDR6.IsValid() {
		ipam["subnet"] = n.PodCIDR.String()
	} else {
		// One range set per family: host-local hands out one address of
		// each, the bridge gives cni0 the gateway address of each.
		var ranges []any
		defaultRoutes = nil
		for _, p := range []netip.Prefix{n.PodCIDR, n.PodCIDR6} {
			if p.IsValid() {
				ranges = append(ranges, []any{map[string]any{"subnet": p.String()}})
				dst := "0.0.0.0/0"
				if p.Addr().Is6() {
					dst = "::/0"
				}
				defaultRoutes = append(defaultRoutes, map[string]any{"dst": dst})
			}
		}
		ipam["ranges"] = ranges
	}
	var primary map[string]any
	switch opts.Layout {
	case LayoutFlannel:
		primary = map[string]any{
			"type":             "bridge",
			"bridge":           "cni0",
			"isGateway":        true,
			"isDefaultGateway": true,
			"ipMasq":           false,
			"hairpinMode":      true,
			"ipam":             ipam,
		}
	case LayoutCalico:
		// ptp adds the route to the gateway; the default route comes
		// from IPAM, as with Calico's own IPAM.
		ipam["routes"] = defaultRoutes
		primary = map[string]any{
			"type":   "ptp",
			"ipMasq": false,
			"ipam":   ipam,
		}
	default:
		return nil, fmt.Errorf("node %s: unknown CNI layout %q", n.Name, opts.Layout)
	}
	if opts.PodMTU != 0 {
		primary["mtu"] = opts.PodMTU
	}
	plugins := []any{primary}
	if opts.Weft {
		w := n.WeftEntry()
		for k, v := range opts.WeftOptions {
			if v == nil {
				delete(w, k)
				continue
			}
			w[k] = v
		}
		plugins = append(plugins, w)
	}
	b, err := json.MarshalIndent(map[string]any{
		"name":       opts.NetName,
		"cniVersion": opts.CNIVersion,
		"plugins":    plugins,
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("node %s: render conflist: %w", n.Name, err)
	}
	return b, nil
}

// WriteConflist (re)writes the node's conflist. A previous conflist with a
// different file name is removed so the conf dir holds one network.
func (n *Node) WriteConflist(opts CNIOptions) error {
	b, err := n.Conflist(opts)
	if err != nil {
		return err
	}
	opts = opts.withDefaults()
	n.mu.Lock()
	old := n.cni
	n.cni = opts
	n.mu.Unlock()
	if old.FileName != "" && old.FileName != opts.FileName {
		_ = os.Remove(filepath.Join(n.ConfDir, old.FileName))
	}
	path := filepath.Join(n.ConfDir, opts.FileName)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("node %s: write conflist: %w", n.Name, err)
	}
	return nil
}

// SetWeftOption rewrites the node's conflist with one key of the weft entry
// set (a nil value deletes it), keeping the rest of the options.
func (n *Node) SetWeftOption(key string, value any) error {
	opts := n.CNI()
	merged := map[string]any{key: value}
	for k, v := range opts.WeftOptions {
		if k != key {
			merged[k] = v
		}
	}
	opts.WeftOptions = merged
	return n.WriteConflist(opts)
}

// CNI returns the options of the conflist last written (defaults filled).
func (n *Node) CNI() CNIOptions {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cni
}

// NetName is the network name of the node's conflist.
func (n *Node) NetName() string { return n.CNI().NetName }

// ConflistPath is the path of the node's conflist file.
func (n *Node) ConflistPath() string { return filepath.Join(n.ConfDir, n.CNI().FileName) }

// CalicoDeviceAddr is the address CreateCalicoDevice puts on vxlan.calico:
// the first address of the node's pod CIDR, /32, which host-local never
// hands out (its range starts at .1, the gateway).
func (n *Node) CalicoDeviceAddr() netip.Addr { return n.PodCIDR.Masked().Addr() }

// CreateCalicoDevice adds vxlan.calico (kind vxlan over eth0, VNI 4096,
// port 4789, like Calico) holding CalicoDeviceAddr()/32. Separate from node
// creation so that tests decide when the CNI interface appears.
func (n *Node) CreateCalicoDevice() (netip.Addr, error) {
	addr := n.CalicoDeviceAddr()
	steps := [][]string{
		{"link", "add", CalicoDevice, "type", "vxlan", "id", "4096", "dstport", "4789", "local", n.IP.String(), "dev", "eth0", "nolearning"},
		{"link", "set", CalicoDevice, "mtu", "1450"},
		{"addr", "add", netip.PrefixFrom(addr, 32).String(), "dev", CalicoDevice},
		{"link", "set", CalicoDevice, "up"},
	}
	for _, s := range steps {
		if _, err := n.NS.Exec("ip", s...); err != nil {
			return netip.Addr{}, fmt.Errorf("node %s: create %s: %w", n.Name, CalicoDevice, err)
		}
	}
	return addr, nil
}

// RemoveCalicoDevice deletes vxlan.calico (a reboot or CNI restart).
func (n *Node) RemoveCalicoDevice() error {
	if _, err := n.NS.Exec("ip", "link", "del", CalicoDevice); err != nil {
		return fmt.Errorf("node %s: remove %s: %w", n.Name, CalicoDevice, err)
	}
	return nil
}

// Pod is one simulated pod: a namespace the CNI chain plugs eth0 into.
type Pod struct {
	// Namespace and Name are the Kubernetes identity passed in CNI_ARGS.
	Namespace string
	Name      string
	NS        *netnstest.NS
	Node      *Node
	IfName    string
	// ContainerID is the ID used for every CNI call on this pod, by both
	// cnitool and libcni: cnitool derives it from the netns path
	// (cnitool-<sha512(path)[:10]>), so libcni uses the same one.
	ContainerID string
	// Filled by a successful ADD: the IPv4 address and its gateway, and
	// the IPv6 ones (each invalid when the node's plan lacks the family).
	IP       netip.Addr
	Gateway  netip.Addr
	IP6      netip.Addr
	Gateway6 netip.Addr
	Result   *types100.Result
	// RawResult is the last cnitool add's stdout, in the conflist's
	// cniVersion (Result is its conversion to the current version).
	RawResult []byte
}

// NewPod creates the pod namespace on n (not yet attached).
func (n *Node) NewPod(namespace, name string) (*Pod, error) {
	pn, err := n.env.NewNS("weft-pod")
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", namespace, name, err)
	}
	sum := sha512.Sum512([]byte(pn.Path))
	return &Pod{
		Namespace:   namespace,
		Name:        name,
		NS:          pn,
		Node:        n,
		IfName:      PodIfName,
		ContainerID: fmt.Sprintf("cnitool-%x", sum[:10]),
	}, nil
}

func (p *Pod) cniArgs() [][2]string {
	return [][2]string{
		{"IgnoreUnknown", "1"},
		{"K8S_POD_NAMESPACE", p.Namespace},
		{"K8S_POD_NAME", p.Name},
		{"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID},
	}
}

// CNIError is a failed CNI operation with everything needed to diagnose it.
type CNIError struct {
	Op   string // "cnitool add", "libcni ADD", …
	Node string
	Pod  string // namespace/name; empty for STATUS/GC
	// ExitCode is cnitool's exit status (-1 for libcni).
	ExitCode int
	// Code is the CNI error code when known: libcni returns the plugin's
	// error object; cnitool prints only the message, so Code is 0 there.
	Code   uint
	Stdout string
	Stderr string
	Err    error
}

func (e *CNIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s on node %s", e.Op, e.Node)
	if e.Pod != "" {
		fmt.Fprintf(&b, " pod %s", e.Pod)
	}
	if e.ExitCode >= 0 {
		fmt.Fprintf(&b, ": exit %d", e.ExitCode)
	}
	if e.Code != 0 {
		fmt.Fprintf(&b, ": CNI code %d", e.Code)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if s := strings.TrimSpace(e.Stderr); s != "" {
		fmt.Fprintf(&b, ": stderr: %s", s)
	}
	return b.String()
}

func (e *CNIError) Unwrap() error { return e.Err }

// cnitoolCacheMount is cnitool's fixed cache directory. cnitool has no
// option to move it, so every cnitool run bind-mounts the node's CacheDir
// over it inside the private mount namespace that `ip netns exec` creates:
// nodes never see each other's cached attachments (cnitool gc would DEL
// them otherwise) and nothing is written to the real /var/lib/cni.
const cnitoolCacheMount = "/var/lib/cni"

// runCNITool runs `cnitool verb net netns` inside the node namespace.
func (n *Node) runCNITool(ctx context.Context, verb string, p *Pod) ([]byte, error) {
	// The mount point must exist; an empty directory is all it takes, and
	// it is what libcni would create itself.
	if err := os.MkdirAll(cnitoolCacheMount, 0o755); err != nil {
		return nil, fmt.Errorf("create %s mount point: %w", cnitoolCacheMount, err)
	}
	netns := n.NS.Path // STATUS and GC ignore it but cnitool wants four args
	env := append(os.Environ(),
		"CNI_PATH="+strings.Join(n.env.CNIPath(), string(os.PathListSeparator)),
		"NETCONFPATH="+n.ConfDir,
	)
	podName := ""
	if p != nil {
		netns = p.NS.Path
		var args []string
		for _, kv := range p.cniArgs() {
			args = append(args, kv[0]+"="+kv[1])
		}
		env = append(env, "CNI_IFNAME="+p.IfName, "CNI_ARGS="+strings.Join(args, ";"))
		podName = p.Namespace + "/" + p.Name
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.NS.Name,
		"sh", "-c", `mount --bind "$0" `+cnitoolCacheMount+` && exec "$@"`,
		n.CacheDir, n.env.Tool("cnitool"), verb, n.NetName(), netns)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		ce := &CNIError{Op: "cnitool " + verb, Node: n.Name, Pod: podName, ExitCode: -1,
			Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			ce.ExitCode = ee.ExitCode()
		}
		if ctx.Err() != nil {
			ce.Err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return stdout.Bytes(), ce
	}
	return stdout.Bytes(), nil
}

// AttachCNITool runs the real `cnitool add` for p inside the node namespace
// and returns the pod IP from the printed result.
func (n *Node) AttachCNITool(ctx context.Context, p *Pod) (netip.Addr, error) {
	out, err := n.runCNITool(ctx, "add", p)
	if err != nil {
		return netip.Addr{}, err
	}
	res, err := create.CreateFromBytes(out)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("cnitool add on %s: decode result %q: %w", n.Name, out, err)
	}
	p.RawResult = out
	return p.setResult(res)
}

// DetachCNITool runs `cnitool del` for p.
func (n *Node) DetachCNITool(ctx context.Context, p *Pod) error {
	_, err := n.runCNITool(ctx, "del", p)
	return err
}

// CheckCNITool runs `cnitool check` for p.
func (n *Node) CheckCNITool(ctx context.Context, p *Pod) error {
	_, err := n.runCNITool(ctx, "check", p)
	return err
}

// StatusCNITool runs `cnitool status` (a no-op below cniVersion 1.1.0).
func (n *Node) StatusCNITool(ctx context.Context) error {
	_, err := n.runCNITool(ctx, "status", nil)
	return err
}

// GCCNITool runs `cnitool gc`. cnitool v1.3.0 passes no valid attachments:
// every cached attachment of the node's network is DELeted, and plugins
// (cniVersion >= 1.1.0) get a GC with no valid attachments. Use GCLibcni to
// keep some.
func (n *Node) GCCNITool(ctx context.Context) error {
	_, err := n.runCNITool(ctx, "gc", nil)
	return err
}

func (p *Pod) setResult(res types.Result) (netip.Addr, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("pod %s/%s: convert result: %w", p.Namespace, p.Name, err)
	}
	p.Result = r
	p.IP, p.Gateway, p.IP6, p.Gateway6 = netip.Addr{}, netip.Addr{}, netip.Addr{}, netip.Addr{}
	for _, ipc := range r.IPs {
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			continue
		}
		g, _ := netip.AddrFromSlice(ipc.Gateway)
		switch a = a.Unmap(); {
		case a.Is4() && !p.IP.IsValid():
			p.IP, p.Gateway = a, g.Unmap()
		case a.Is6() && !p.IP6.IsValid():
			p.IP6, p.Gateway6 = a, g
		}
	}
	if !p.IP.IsValid() && (p.Node == nil || p.Node.PodCIDR.IsValid()) {
		return netip.Addr{}, fmt.Errorf("pod %s/%s: result has no IPv4 address", p.Namespace, p.Name)
	}
	if !p.IP6.IsValid() && p.Node != nil && p.Node.PodCIDR6.IsValid() {
		return netip.Addr{}, fmt.Errorf("pod %s/%s: result has no IPv6 address (the node has IPv6 pod CIDR %s)", p.Namespace, p.Name, p.Node.PodCIDR6)
	}
	if !p.IP.IsValid() {
		return p.IP6, nil
	}
	return p.IP, nil
}

// libcniConfig loads the node's network and a CNIConfig whose cache is the
// node's CacheDir (shared with the cnitool path, so the two can be mixed).
func (n *Node) libcniConfig() (*libcni.CNIConfig, *libcni.NetworkConfigList, error) {
	list, err := libcni.LoadNetworkConf(n.ConfDir, n.NetName())
	if err != nil {
		return nil, nil, fmt.Errorf("node %s: load network %q: %w", n.Name, n.NetName(), err)
	}
	return libcni.NewCNIConfigWithCacheDir(n.env.CNIPath(), n.CacheDir, nil), list, nil
}

func (p *Pod) runtimeConf() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: p.ContainerID,
		NetNS:       p.NS.Path,
		IfName:      p.IfName,
		Args:        p.cniArgs(),
	}
}

// inNode runs fn with the calling thread in the node namespace, so that the
// plugins libcni execs are born there.
func (n *Node) inNode(op string, p *Pod, fn func() error) error {
	err := n.NS.Do(func(ns.NetNS) error { return fn() })
	if err == nil {
		return nil
	}
	ce := &CNIError{Op: "libcni " + op, Node: n.Name, ExitCode: -1, Err: err}
	if p != nil {
		ce.Pod = p.Namespace + "/" + p.Name
	}
	var te *types.Error
	if errors.As(err, &te) {
		ce.Code = te.Code
	}
	return ce
}

// AttachLibcni runs ADD for p in-process through libcni.
func (n *Node) AttachLibcni(ctx context.Context, p *Pod) (netip.Addr, error) {
	cfg, list, err := n.libcniConfig()
	if err != nil {
		return netip.Addr{}, err
	}
	var res types.Result
	if err := n.inNode("ADD", p, func() error {
		var err error
		res, err = cfg.AddNetworkList(ctx, list, p.runtimeConf())
		return err
	}); err != nil {
		return netip.Addr{}, err
	}
	return p.setResult(res)
}

// DetachLibcni runs DEL for p through libcni.
func (n *Node) DetachLibcni(ctx context.Context, p *Pod) error {
	cfg, list, err := n.libcniConfig()
	if err != nil {
		return err
	}
	return n.inNode("DEL", p, func() error { return cfg.DelNetworkList(ctx, list, p.runtimeConf()) })
}

// CheckLibcni runs CHECK for p through libcni.
func (n *Node) CheckLibcni(ctx context.Context, p *Pod) error {
	cfg, list, err := n.libcniConfig()
	if err != nil {
		return err
	}
	return n.inNode("CHECK", p, func() error { return cfg.CheckNetworkList(ctx, list, p.runtimeConf()) })
}

// StatusLibcni runs STATUS through libcni (a no-op below cniVersion 1.1.0).
func (n *Node) StatusLibcni(ctx context.Context) error {
	cfg, list, err := n.libcniConfig()
	if err != nil {
		return err
	}
	return n.inNode("STATUS", nil, func() error { return cfg.GetStatusNetworkList(ctx, list) })
}

// GCLibcni runs GC through libcni with valid as the valid attachments:
// cached attachments of the network not in valid are DELeted, and plugins
// (cniVersion >= 1.1.0) receive cni.dev/valid-attachments.
func (n *Node) GCLibcni(ctx context.Context, valid ...*Pod) error {
	cfg, list, err := n.libcniConfig()
	if err != nil {
		return err
	}
	args := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}
	for _, p := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: p.ContainerID, IfName: p.IfName})
	}
	return n.inNode("GC", nil, func() error { return cfg.GCNetworkList(ctx, list, args) })
}

// CachedAttachments lists the container IDs the node's CNI cache holds for
// its network (what a GC would consider).
func (n *Node) CachedAttachments() ([]string, error) {
	cfg, _, err := n.libcniConfig()
	if err != nil {
		return nil, err
	}
	atts, err := cfg.GetCachedAttachments("")
	if err != nil {
		return nil, fmt.Errorf("node %s: cached attachments: %w", n.Name, err)
	}
	var ids []string
	for _, a := range atts {
		if a.Network == n.NetName() {
			ids = append(ids, a.ContainerID)
		}
	}
	return ids, nil
}

// RunPod creates a pod on n and attaches it with cnitool, the usual way a
// test needs a running pod.
func (n *Node) RunPod(ctx context.Context, namespace, name string) (*Pod, error) {
	p, err := n.NewPod(namespace, name)
	if err != nil {
		return nil, err
	}
	if _, err := n.AttachCNITool(ctx, p); err != nil {
		return p, err
	}
	return p, nil
}

// Exec runs a command inside the pod namespace (combined output).
func (p *Pod) Exec(name string, args ...string) (string, error) { return p.NS.Exec(name, args...) }
