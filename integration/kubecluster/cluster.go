// Package kubecluster runs real Kubernetes clusters on this machine for
// weft's end-to-end tests and demo: per cluster a control plane (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, from
// integration/kubeapi) and nodes that each are a network namespace on the
// harness underlay plus a private mount namespace in which the node's own
// containerd and kubelet run and see their own /etc/cni/net.d, /opt/cni/bin,
// /run/weft and /var/lib/kubelet. The primary CNI is flannel-like (bridge +
// host-local, host-gw routes between the nodes, as in integration/harness).
// weft gets onto the nodes as users install it: its image imported into
// every containerd and `kubectl apply -f daemon/deploy/`.
//
// Nothing runs or is mounted in the root namespaces: every process is
// started by PID and stopped by PID at env.Close, even after a failure, and
// the mounts die with the node's mount namespace.
package kubecluster

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/kubeapi"
	"github.com/weft-net/weft/integration/ociimage"
)

// Image references. WeftImage is the one daemon/deploy/ names, so the
// manifests apply unchanged.
const (
	WeftRepo   = "ghcr.io/weft-net/weft"
	WeftImage  = WeftRepo + ":v0.1.0"
	PauseImage = "registry.k8s.io/pause:3.10"
)

// Tools are the binaries a cluster needs in env.ToolsDir besides kubeapi's.
var Tools = []string{"kubelet", "kube-controller-manager", "kube-scheduler", "bridge", "host-local", "loopback"}

// Missing names what is not installed or built: the tools, bin/weftd,
// bin/weft, bin/pause, containerd, ctr, runc.
func Missing(env *harness.Env) []string {
	missing := kubeapi.MissingTools(env)
	for _, t := range Tools {
		if _, err := os.Stat(env.Tool(t)); err != nil {
			missing = append(missing, t)
		}
	}
	for _, b := range []string{"weftd", "weft", "pause"} {
		if !env.HasBin(b) {
			missing = append(missing, "bin/"+b)
		}
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "nsenter", "unshare"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	return missing
}

// Options shapes one cluster.
type Options struct {
	// ID is the cluster ID (c1); nodes are <ID>-n1 … .
	ID    string
	Nodes int
	// PodCIDR (10.1.0.0/16), ServiceCIDR (10.101.0.0/16), NodeIPBase
	// (192.168.10.0): as harness.ClusterSpec. Defaults are c1's, which
	// daemon/deploy/02-configmap.yaml describes.
	PodCIDR, ServiceCIDR, NodeIPBase string
	// ControlPlaneIP of the control-plane namespace; default kubeapi's.
	ControlPlaneIP netip.Addr
	// Peer, when set, is a cluster already running: this one joins its
	// underlay and its control-plane namespace (one etcd, an API server
	// of its own), as two clusters whose nodes reach each other.
	Peer *Cluster
}

// Cluster is one running cluster.
type Cluster struct {
	ID       string
	API      *kubeapi.Server
	Underlay *harness.Underlay
	Nodes    []*Node
	// Timings, for the report.
	ControlPlaneUp time.Duration
	NodesUp        time.Duration

	env    *harness.Env
	hc     *harness.Cluster
	spec   harness.ClusterSpec
	images []string // archives imported into every node
	dir    string
}

// New starts a cluster on a new underlay: the control plane, then the nodes
// (in parallel), each Ready before it returns. The weft image (WeftImage,
// from bin/) and the pause image are imported into every node.
func New(ctx context.Context, env *harness.Env, opts Options) (*Cluster, error) {
	if m := Missing(env); len(m) > 0 {
		return nil, fmt.Errorf("kubecluster: missing %v (make build image kubetools tools; apt-get install containerd runc)", m)
	}
	if opts.ID == "" {
		opts.ID = "c1"
	}
	if opts.Nodes == 0 {
		opts.Nodes = 2
	}
	spec := harness.ClusterSpec{
		ID: opts.ID, Nodes: opts.Nodes,
		PodCIDR:     cmpOr(opts.PodCIDR, "10.1.0.0/16"),
		ServiceCIDR: cmpOr(opts.ServiceCIDR, "10.101.0.0/16"),
		NodeIPBase:  cmpOr(opts.NodeIPBase, "192.168.10.0"),
		CNI:         harness.CNIOptions{Layout: harness.LayoutFlannel},
	}
	start := time.Now()
	var u *harness.Underlay
	var srv *kubeapi.Server
	var err error
	if opts.Peer != nil {
		u = opts.Peer.Underlay
		srv, err = opts.Peer.API.ControlPlane().StartServer(ctx, kubeapi.ServerOptions{Name: opts.ID})
	} else {
		if u, err = harness.NewUnderlay(env); err != nil {
			return nil, err
		}
		srv, err = kubeapi.Start(ctx, env, u, kubeapi.Options{IP: opts.ControlPlaneIP}, kubeapi.ServerOptions{Name: opts.ID})
	}
	if err != nil {
		return nil, err
	}
	if err := srv.StartControllers(ctx); err != nil {
		return nil, err
	}
	dir, err := env.TempDir("weft-kubecluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{ID: opts.ID, API: srv, Underlay: u, env: env, spec: spec, dir: dir, ControlPlaneUp: time.Since(start)}
	weft, err := c.BuildWeftImage(WeftImage)
	if err != nil {
		return nil, err
	}
	pause, err := c.buildImage("pause.tar", ociimage.Image{
		Ref: PauseImage, Entrypoint: []string{"/pause"},
		Files: []ociimage.File{{Path: "/pause", Src: env.Bin("pause"), Mode: 0o755}},
	})
	if err != nil {
		return nil, err
	}
	c.images = []string{pause, weft}
	start = time.Now()
	hc, err := harness.NewCluster(env, u, spec)
	if err != nil {
		return nil, err
	}
	if err := hc.ConnectHostGW(); err != nil {
		return nil, err
	}
	c.hc = hc
	errc := make(chan error, len(hc.Nodes))
	for _, hn := range hc.Nodes {
		n := &Node{Node: hn, Cluster: c}
		c.Nodes = append(c.Nodes, n)
		go func() { errc <- n.start(ctx) }()
	}
	var first error
	for range hc.Nodes {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return nil, first
	}
	c.NodesUp = time.Since(start)
	env.Log.Info("cluster up", "id", c.ID, "nodes", len(c.Nodes), "controlPlaneUp", c.ControlPlaneUp.Round(time.Millisecond), "nodesUp", c.NodesUp.Round(time.Millisecond))
	return c, nil
}

// AddNode joins one more node (the next name, underlay IP and pod /24),
// with host-gw routes to and from every node, and waits until it is Ready:
// a new kubelet registering, as after a scale-up.
func (c *Cluster) AddNode(ctx context.Context) (*Node, error) {
	i := len(c.Nodes) + 1
	base, err := netip.ParseAddr(c.spec.NodeIPBase)
	if err != nil {
		return nil, fmt.Errorf("kubecluster %s: %w", c.ID, err)
	}
	pod, err := netip.ParsePrefix(c.spec.PodCIDR)
	if err != nil {
		return nil, fmt.Errorf("kubecluster %s: %w", c.ID, err)
	}
	b, p := base.As4(), pod.Masked().Addr().As4()
	b[3] += byte(10 + i)
	p[2] = byte(i)
	hn, err := c.Underlay.AddNode(harness.NodeOptions{
		Name: fmt.Sprintf("%s-n%d", c.ID, i), Cluster: c.ID,
		IP: netip.AddrFrom4(b), PodCIDR: netip.PrefixFrom(netip.AddrFrom4(p), 24),
		CNI: c.spec.CNI,
	})
	if err != nil {
		return nil, fmt.Errorf("kubecluster %s: %w", c.ID, err)
	}
	for _, m := range c.Nodes {
		if err := m.ConnectHostGW(hn); err != nil {
			return nil, err
		}
		if err := hn.ConnectHostGW(m.Node); err != nil {
			return nil, err
		}
	}
	n := &Node{Node: hn, Cluster: c}
	c.Nodes = append(c.Nodes, n)
	if err := n.start(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// BuildWeftImage writes weft's image (bin/weftd and bin/weft over the
// iptables user space in bin/image-root, as `make image` does) under ref and
// returns the archive; ImportImage puts it on a node.
func (c *Cluster) BuildWeftImage(ref string) (string, error) {
	root := c.env.Bin("image-root")
	if _, err := os.Stat(filepath.Join(root, "usr/sbin/iptables-nft-restore")); err != nil {
		return "", fmt.Errorf("kubecluster: weft image: no iptables user space in %s (make image builds it): %w", root, err)
	}
	return c.buildImage(filepath.Base(ref)+".tar", ociimage.Image{
		Trees:      []string{root},
		Ref:        ref,
		Entrypoint: []string{"weftd"},
		Cmd:        []string{"run", "--config=/etc/weft/weft.yaml"},
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Dirs:       []string{"/tmp", "/etc", "/run"},
		Files: []ociimage.File{
			{Path: "/usr/local/bin/weftd", Src: c.env.Bin("weftd"), Mode: 0o755},
			{Path: "/usr/local/bin/weft", Src: c.env.Bin("weft"), Mode: 0o755},
		},
	})
}

func (c *Cluster) buildImage(file string, img ociimage.Image) (string, error) {
	var buf bytes.Buffer
	if err := ociimage.Write(&buf, img, runtime.GOARCH); err != nil {
		return "", fmt.Errorf("kubecluster: image %s: %w", img.Ref, err)
	}
	path := filepath.Join(c.dir, file)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("kubecluster: %w", err)
	}
	return path, nil
}

// Node returns the node named name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Kubectl runs kubectl as admin against the cluster.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	return c.API.Kubectl(ctx, args...)
}

func cmpOr(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
