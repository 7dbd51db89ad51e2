package kubecluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/kubeapi"
)

// Paths a node's containerd and kubelet see at their usual places, each a
// bind mount of a directory under Node.Dir inside the node's private mount
// namespace: the DaemonSet's hostPath volumes land there, never on the
// machine's real paths.
const (
	CNIConfDir = "/etc/cni/net.d"
	CNIBinDir  = "/opt/cni/bin"
	RunWeftDir = "/run/weft"
	KubeletDir = "/var/lib/kubelet"
)

// Node is one real Kubernetes node: a harness node (network namespace on
// the underlay, flannel-like bridge conflist) plus a private mount
// namespace holding its containerd and kubelet.
type Node struct {
	*harness.Node
	Cluster *Cluster

	// Host-side directories behind the node's private paths.
	CNIBin  string // behind /opt/cni/bin
	RunWeft string // behind /run/weft (weftd's socket, spool, state)
	Kubelet string // behind /var/lib/kubelet
	// Containerd is the socket of the node's containerd.
	Containerd string

	holder     *kubeapi.Process
	containerd *kubeapi.Process
	kubelet    *kubeapi.Process
	logDir     string
}

// mountScript runs in the node's new mount namespace (propagation private:
// nothing it mounts is seen outside). /etc, /opt, /var/lib and /var/log get an
// overlay whose upper layer is a tmpfs, so the mount points can be made
// without writing to the machine's directories; /run is a fresh tmpfs.
const mountScript = `set -e
ovl="$1"; shift
mount -t tmpfs weft-e2e "$ovl"
for d in etc opt var/lib var/log; do
  up="$ovl/$(echo $d | tr / _)"
  mkdir -p "$up/u" "$up/w"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$up/u,workdir=$up/w" "/$d"
done
mount -t tmpfs weft-e2e-run /run
while [ $# -gt 0 ]; do
  mkdir -p "$2"
  mount --bind "$1" "$2"
  shift 2
done
echo ready
exec sleep infinity
`

// start brings the node's mount namespace, containerd and kubelet up and
// waits until the Node object is Ready. Everything is stopped at env.Close,
// in reverse order, by PID.
func (n *Node) start(ctx context.Context) error {
	env := n.Cluster.env
	n.CNIBin = filepath.Join(n.Dir, "cni-bin")
	n.RunWeft = filepath.Join(n.Dir, "run-weft")
	n.Kubelet = filepath.Join(n.Dir, "kubelet")
	n.logDir = filepath.Join(n.Dir, "logs")
	ovl := filepath.Join(n.Dir, "ovl")
	for _, d := range []string{n.CNIBin, n.RunWeft, n.Kubelet, n.logDir, ovl,
		filepath.Join(n.Dir, "containerd"), filepath.Join(n.Dir, "pod-logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	// The primary CNI's binaries, as its own installer would put them.
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if err := copyFile(env.Tool(p), filepath.Join(n.CNIBin, p), 0o755); err != nil {
			return fmt.Errorf("node %s: install CNI plugin: %w", n.Name, err)
		}
	}
	holderLog := filepath.Join(n.logDir, "mountns.log")
	argv := []string{"nsenter", "--net=" + n.NS.Path, "--",
		"unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", mountScript, "weft-node-mounts", ovl,
		n.ConfDir, CNIConfDir, n.CNIBin, CNIBinDir, n.RunWeft, RunWeftDir, n.Kubelet, KubeletDir}
	h, err := kubeapi.StartProcess("mount namespace "+n.Name, holderLog, argv...)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	n.holder = h
	env.Defer(fmt.Sprintf("node %s mount namespace pid %d", n.Name, h.PID()), func() error { return h.Kill() })
	if err := waitFor(ctx, 10*time.Second, h, func() bool {
		b, _ := os.ReadFile(holderLog)
		return strings.Contains(string(b), "\nready\n")
	}); err != nil {
		return fmt.Errorf("node %s: mount namespace: %w; log:\n%s", n.Name, err, tail(holderLog))
	}
	if err := n.startContainerd(ctx); err != nil {
		return err
	}
	for _, img := range n.Cluster.images {
		if err := n.ImportImage(ctx, img); err != nil {
			return err
		}
	}
	if err := n.simulateKubeProxy(); err != nil {
		return err
	}
	return n.StartKubelet(ctx)
}

// KubeProxySimTable is the nftables table (family ip) in which the harness
// plays kube-proxy for the one Service the node's own processes use.
const KubeProxySimTable = "kube-proxy-sim"

// simulateKubeProxy makes the `kubernetes` Service's ClusterIP (the API
// server's ServiceIP:443, KUBERNETES_SERVICE_HOST/PORT of every pod) reach
// the API server, as kube-proxy would: a DNAT in the node's network
// namespace only, for locally generated traffic (weftd is a hostNetwork
// pod, so its in-cluster client is such traffic).
//
// Why this and not pointing the ClusterIP at the server by routing: a
// ClusterIP is virtual, no server listens on it and the port differs
// (443 vs 6443/6444: both clusters' API servers share one control-plane
// IP), so only a translation makes it work — which is what kube-proxy
// does on a real node. The table is the harness's own (weft never touches
// tables it did not create, and its own `ip weft` table filters and
// masquerades pod traffic in forward/postrouting, not this output DNAT of
// the node's traffic to the control plane).
func (n *Node) simulateKubeProxy() error {
	api := n.Cluster.API
	rules := fmt.Sprintf(`table ip %[1]s {
	chain output {
		type nat hook output priority -100; policy accept;
		ip daddr %[2]s tcp dport 443 dnat to %[3]s
	}
}
`, KubeProxySimTable, api.ServiceIP, api.Addr)
	path := filepath.Join(n.Dir, "kube-proxy-sim.nft")
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	if out, err := n.NS.Exec("nft", "-f", path); err != nil {
		return fmt.Errorf("node %s: kube-proxy's part for %s:443 -> %s: %w: %s", n.Name, api.ServiceIP, api.Addr, err, out)
	}
	return nil
}

// enter is the command prefix that runs a binary in the node's network and
// private mount namespaces (nsenter, not `ip netns exec`, which remounts
// /sys and hides the cgroup mounts the kubelet needs).
func (n *Node) enter() []string {
	return []string{"nsenter", "--target=" + strconv.Itoa(n.holder.PID()), "--mount", "--net", "--"}
}

func (n *Node) startContainerd(ctx context.Context) error {
	dir := filepath.Join(n.Dir, "containerd")
	n.Containerd = filepath.Join(dir, "containerd.sock")
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  # root here lacks CAP_SYS_RESOURCE: runc may not lower oom_score_adj.
  restrict_oom_score_adj = true
  # Pod network namespaces under the state dir, not the machine's /var/run/netns.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[6]q
    conf_dir = %[7]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), n.Containerd, filepath.Join(dir, "opt"), PauseImage, CNIBinDir, CNIConfDir)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	logPath := filepath.Join(n.logDir, "containerd.log")
	p, err := kubeapi.StartProcess("containerd "+n.Name, logPath, append(n.enter(), "containerd", "--config", cfgPath, "--log-level", "warn")...)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	n.containerd = p
	n.Cluster.env.Defer(fmt.Sprintf("node %s containerd pid %d", n.Name, p.PID()), func() error { return n.stopContainerd() })
	if err := waitFor(ctx, 30*time.Second, p, func() bool {
		_, err := n.ctr(ctx, "version")
		return err == nil
	}); err != nil {
		return fmt.Errorf("node %s: containerd: %w; log:\n%s", n.Name, err, tail(logPath))
	}
	return nil
}

// ctr runs ctr against the node's containerd, namespace k8s.io.
func (n *Node) ctr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", n.Containerd, "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("node %s: ctr %s: %w: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ImportImage imports an OCI archive into the node's containerd (the CRI
// namespace, unpacked for the native snapshotter), as a registry pull
// would have left it.
func (n *Node) ImportImage(ctx context.Context, archive string) error {
	_, err := n.ctr(ctx, "images", "import", "--snapshotter", "native", archive)
	return err
}

// stopContainerd removes every task and container (runc kills their
// processes and removes their cgroups), then stops containerd and whatever
// of its shims is left in the node's mount namespace. Deletes race with
// shims exiting once their pod's sandbox is killed, so they are best
// effort; what counts is that no process and no cgroup of the node's
// containers is left, which is checked at the end.
func (n *Node) stopContainerd() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var errs []string
	var ids []string
	if n.containerd.Running() {
		if out, err := n.ctr(ctx, "containers", "ls", "-q"); err == nil {
			ids = strings.Fields(out)
		} else {
			errs = append(errs, err.Error())
		}
		for _, id := range ids {
			_, _ = n.ctr(ctx, "tasks", "kill", "--signal", "SIGKILL", id)
		}
		for _, id := range ids {
			_, _ = n.ctr(ctx, "tasks", "delete", "--force", id)
			_, _ = n.ctr(ctx, "containers", "delete", id)
		}
	}
	if err := n.containerd.Stop(15 * time.Second); err != nil {
		errs = append(errs, err.Error())
	}
	// Shims outlive containerd by design; those of this node are the
	// processes left in its mount namespace besides the holder.
	for _, pid := range n.processesInMountNS() {
		if pid != n.holder.PID() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if left := removeCgroups(ids); len(left) > 0 {
		errs = append(errs, "cgroups left: "+strings.Join(left, ", "))
	}
	if len(errs) > 0 {
		return fmt.Errorf("node %s: stop containerd: %s", n.Name, strings.Join(errs, "; "))
	}
	return nil
}

// removeCgroups removes what is left of the containers' cgroups (with
// cgroupsPerQOS off, containerd puts each under /k8s.io/<id> in every v1
// hierarchy), killing by PID any process of theirs still in one, and
// returns the directories it could not remove. The shared parent goes when
// empty (the last node's teardown).
func removeCgroups(ids []string) []string {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/k8s.io")
	var left []string
	for _, r := range roots {
		for _, id := range ids {
			d := filepath.Join(r, id)
			if _, err := os.Stat(d); err != nil {
				continue
			}
			for try := 0; try < 20; try++ {
				b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
				if err := syscall.Rmdir(d); err == nil || os.IsNotExist(err) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if _, err := os.Stat(d); err == nil {
				left = append(left, d)
			}
		}
		_ = syscall.Rmdir(r) // fails while another node's containers live
	}
	return left
}

// processesInMountNS lists the PIDs sharing the holder's mount namespace.
func (n *Node) processesInMountNS() []int {
	want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.holder.PID()))
	if err != nil {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && l == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

// StartKubelet starts the node's kubelet (again, after StopKubelet) and
// waits until its Node object is Ready.
func (n *Node) StartKubelet(ctx context.Context) error {
	c := n.Cluster
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 only, swap, and no systemd.
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
# The machine's disk and memory are shared by other tests: never evict.
evictionHard: {memory.available: "1Ki", nodefs.available: "1%%", nodefs.inodesFree: "1%%", imagefs.available: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
containerRuntimeEndpoint: unix://%[1]s
podLogsDir: %[2]s
address: %[3]s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
resolvConf: /etc/resolv.conf
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
fileCheckFrequency: 10s
serializeImagePulls: false
`, n.Containerd, filepath.Join(n.Dir, "pod-logs"), n.IP)
	cfgPath := filepath.Join(n.Dir, "kubelet.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	logPath := filepath.Join(n.logDir, "kubelet.log")
	p, err := kubeapi.StartProcess("kubelet "+n.Name, logPath, append(n.enter(), c.env.Tool("kubelet"),
		"--config="+cfgPath,
		"--kubeconfig="+c.API.AdminKubeconfig,
		"--root-dir="+KubeletDir,
		"--hostname-override="+n.Name,
		"--node-ip="+n.IP.String(),
		"--v=1",
	)...)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	first := n.kubelet == nil
	n.kubelet = p
	if first {
		c.env.Defer("node "+n.Name+" kubelet", func() error { return n.StopKubelet() })
	}
	if err := waitFor(ctx, 120*time.Second, p, func() bool {
		out, err := c.API.Kubectl(ctx, "get", "node", n.Name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		return err == nil && strings.TrimSpace(out) == "True"
	}); err != nil {
		return fmt.Errorf("node %s: kubelet: node not Ready: %w; log:\n%s", n.Name, err, tail(logPath))
	}
	return nil
}

// StopKubelet stops the node's kubelet (SIGTERM, by PID); its pods keep
// running in containerd, as on a real node.
func (n *Node) StopKubelet() error { return n.kubelet.Stop(15 * time.Second) }

// KubeletPID is the running kubelet's PID, 0 when stopped.
func (n *Node) KubeletPID() int {
	if !n.kubelet.Running() {
		return 0
	}
	return n.kubelet.PID()
}

// waitFor polls cond every 200 ms until it holds, p exits, ctx ends or
// limit passes.
func waitFor(ctx context.Context, limit time.Duration, p *kubeapi.Process, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		if cond() {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("pid %d exited", p.PID())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func tail(path string) string { return tailN(path, 3000) }

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}
