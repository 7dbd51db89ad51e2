package kubecluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/netnstest"
)

// Workload is a Deployment of pause pods, one per node (required
// anti-affinity), as a user's application would run.
func Workload(name string, replicas int) []byte {
	return []byte(fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s, namespace: default}
spec:
  replicas: %[2]d
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - labelSelector: {matchLabels: {app: %[1]s}}
              topologyKey: kubernetes.io/hostname
      containers:
        - name: app
          image: %[3]s
          imagePullPolicy: Never
`, name, replicas, PauseImage))
}

// Apply runs `kubectl apply -f -` with doc on stdin.
func (c *Cluster) Apply(ctx context.Context, doc []byte) error {
	_, err := c.API.KubectlWith(ctx, c.API.AdminKubeconfig, doc, "apply", "-f", "-")
	return err
}

// Pod is a running (not terminating) pod.
type Pod struct{ Name, Node, IP string }

// Pods lists the pods of namespace matching selector that are not being
// deleted.
func (c *Cluster) Pods(ctx context.Context, namespace, selector string) ([]Pod, error) {
	out, err := c.Kubectl(ctx, "--namespace="+namespace, "get", "pods", "-l", selector, "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP} {.metadata.deletionTimestamp}{"\n"}{end}`)
	if err != nil {
		return nil, err
	}
	var ps []Pod
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) == 3 { // a terminating pod has a 4th
			ps = append(ps, Pod{f[0], f[1], f[2]})
		}
	}
	return ps, nil
}

// WeftTopology is the cluster and remotes part of weft.yaml for c with
// remotes (their first node as gateway), indented as in
// daemon/deploy/02-configmap.yaml: what an operator writes there.
func (c *Cluster) WeftTopology(remotes ...*Cluster) string {
	var b strings.Builder
	fmt.Fprintf(&b, "    cluster:\n      id: %s\n      podCIDRs: [%s]\n      serviceCIDRs: [%s]\n      gateway: %s\n      nodes:\n",
		c.ID, c.spec.PodCIDR, c.spec.ServiceCIDR, c.Nodes[0].Name)
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "        - {name: %s, ip: %s}\n", n.Name, n.IP)
	}
	b.WriteString("    remotes:\n")
	for _, r := range remotes {
		fmt.Fprintf(&b, "      - id: %s\n        podCIDRs: [%s]\n        serviceCIDRs: [%s]\n        gatewayIP: %s\n",
			r.ID, r.spec.PodCIDR, r.spec.ServiceCIDR, r.Nodes[0].IP)
	}
	return b.String()
}

// DeployDir copies the manifests of src (daemon/deploy) into a new
// directory with weft.yaml's cluster and remotes replaced by topology, and
// returns it: the manifests after the operator edited the ConfigMap.
func (c *Cluster) DeployDir(src, topology string) (string, error) {
	return c.deployDir(src, func(s string) (string, error) {
		i, j := strings.Index(s, "    cluster:\n"), strings.Index(s, "    cable:")
		if i < 0 || j < i {
			return "", fmt.Errorf("no cluster … cable block in weft.yaml")
		}
		return s[:i] + topology + s[j:], nil
	})
}

// KubernetesDeployDir is DeployDir for topology: kubernetes: the operator
// replaces weft.yaml with the commented variant at the end of
// 02-configmap.yaml (uncommented), with this cluster's ID and CIDRs, and
// cable: vxlan instead of none — on this machine no Submariner gateway
// engine connects the gateways (the tests write its Endpoint objects
// only), so weft's own cable does.
func (c *Cluster) KubernetesDeployDir(src string) (string, error) {
	return c.deployDir(src, func(s string) (string, error) {
		const marker = "#  weft.yaml: |\n"
		i, k := strings.Index(s, "  weft.yaml: |\n"), strings.Index(s, marker)
		if i < 0 || k < i {
			return "", fmt.Errorf("no commented topology: kubernetes variant of weft.yaml")
		}
		j := strings.LastIndex(s[:k], "#\n# topology: kubernetes")
		if j < i {
			return "", fmt.Errorf("no \"# topology: kubernetes\" comment before the commented variant")
		}
		var b strings.Builder
		for _, l := range strings.SplitAfter(s[k:], "\n") {
			b.WriteString(strings.TrimPrefix(l, "#"))
		}
		v := b.String()
		for _, r := range [][2]string{
			{"id: c1 ", "id: " + c.ID + " "},
			{"podCIDRs: [10.1.0.0/16]", "podCIDRs: [" + c.spec.PodCIDR + "]"},
			{"serviceCIDRs: [10.101.0.0/16]", "serviceCIDRs: [" + c.spec.ServiceCIDR + "]"},
			{"cable: none ", "cable: vxlan "},
		} {
			if !strings.Contains(v, r[0]) {
				return "", fmt.Errorf("commented topology: kubernetes variant: no %q", r[0])
			}
			v = strings.Replace(v, r[0], r[1], 1)
		}
		return s[:i] + v, nil
	})
}

// deployDir copies the manifests of src into a new directory, with
// 02-configmap.yaml passed through edit.
func (c *Cluster) deployDir(src string, edit func(string) (string, error)) (string, error) {
	dir, err := c.env.TempDir("weft-deploy-" + c.ID + "-")
	if err != nil {
		return "", err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return "", err
		}
		if e.Name() == "02-configmap.yaml" {
			s, err := edit(string(b))
			if err != nil {
				return "", fmt.Errorf("%s: %w", e.Name(), err)
			}
			b = []byte(s)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// MatrixPod is one pod of the connectivity matrix with a TCP echo server
// listening on IP:8080 in its network namespace.
type MatrixPod struct {
	Cluster *Cluster
	Pod
	NS *netnstest.NS
}

// MatrixPods starts a TCP echo server in every pod of the app=app
// Deployment of each cluster (found through weftd's attachment record, so
// a pod weft never saw fails here).
func MatrixPods(ctx context.Context, clusters ...*Cluster) ([]MatrixPod, error) {
	var all []MatrixPod
	for _, c := range clusters {
		ps, err := c.Pods(ctx, "default", "app=app")
		if err != nil {
			return nil, err
		}
		slices.SortFunc(ps, func(a, b Pod) int { return strings.Compare(a.Node, b.Node) })
		for _, p := range ps {
			n := c.Node(p.Node)
			if n == nil {
				return nil, fmt.Errorf("pod %s on unknown node %q", p.Name, p.Node)
			}
			pns, err := n.PodNS("default", p.Name)
			if err != nil {
				return nil, err
			}
			if _, err := harness.ServeTCPEcho(c.env, pns, p.IP+":8080"); err != nil {
				return nil, err
			}
			all = append(all, MatrixPod{c, p, pns})
		}
	}
	return all, nil
}

// Matrix probes (TCP echo) from every pod to every pod of the other
// clusters and returns the table and the failures.
func Matrix(ctx context.Context, all []MatrixPod) (string, []error) {
	var b strings.Builder
	var errs []error
	fmt.Fprintf(&b, "%-24s", `from \ to`)
	for _, d := range all {
		fmt.Fprintf(&b, " %-9s", d.Node)
	}
	b.WriteString("\n")
	for _, s := range all {
		fmt.Fprintf(&b, "%-24s", s.Node+" "+s.IP)
		for _, d := range all {
			if s.Cluster == d.Cluster {
				b.WriteString(" -        ")
				continue
			}
			if _, err := harness.ProbeTCP(ctx, s.NS, d.IP+":8080", []byte("matrix")); err != nil {
				b.WriteString(" FAIL     ")
				errs = append(errs, fmt.Errorf("%s %s (%s) -> %s %s (%s): %w", s.Cluster.ID, s.Name, s.IP, d.Cluster.ID, d.Name, d.IP, err))
				continue
			}
			b.WriteString(" ok       ")
		}
		b.WriteString("\n")
	}
	return b.String(), errs
}

// NewPair starts c1 (10.1.0.0/16, nodes 192.168.10.11…) and c2
// (10.2.0.0/16, 192.168.20.11…) on one underlay and control plane: the
// clusters daemon/deploy/02-configmap.yaml describes.
func NewPair(ctx context.Context, env *harness.Env, nodes int) (c1, c2 *Cluster, err error) {
	if c1, err = New(ctx, env, Options{ID: "c1", Nodes: nodes}); err != nil {
		return nil, nil, err
	}
	c2, err = New(ctx, env, Options{ID: "c2", Nodes: nodes, Peer: c1,
		PodCIDR: "10.2.0.0/16", ServiceCIDR: "10.102.0.0/16", NodeIPBase: "192.168.20.0"})
	if err != nil {
		return nil, nil, err
	}
	return c1, c2, nil
}

// InstallWithApp applies dirs[i] (`kubectl apply -f`) to clusters[i],
// waits until weft is last in every conflist, starts the application
// Deployment (app, a pod per node; weftd gets Ready with a node's first
// pod) and waits until weft and the application are rolled out everywhere.
// It returns what each apply printed.
func InstallWithApp(ctx context.Context, clusters []*Cluster, dirs []string) ([]string, error) {
	var outs []string
	for i, c := range clusters {
		out, err := c.Kubectl(ctx, "apply", "-f", dirs[i])
		if err != nil {
			return nil, err
		}
		outs = append(outs, out)
	}
	for _, c := range clusters {
		if err := c.WaitWeftInChain(ctx, 2*time.Minute); err != nil {
			return nil, err
		}
		if err := c.Apply(ctx, Workload("app", len(c.Nodes))); err != nil {
			return nil, err
		}
	}
	for _, c := range clusters {
		if err := c.RolloutStatus(ctx, "weft-system", "daemonset/weft", 2*time.Minute); err != nil {
			return nil, err
		}
		if err := c.RolloutStatus(ctx, "default", "deployment/app", 2*time.Minute); err != nil {
			return nil, err
		}
	}
	return outs, nil
}

// ServeNewNodes is what an operator sees after nodes join: it waits until
// weft is last in every conflist (pods created before install-cni ran on a
// new node would lack weft in their chain), scales the application to a
// pod per node and waits until weft and the application are rolled out
// everywhere (weftd gets Ready with a node's first pod).
func (c *Cluster) ServeNewNodes(ctx context.Context) error {
	if err := c.WaitWeftInChain(ctx, time.Minute); err != nil {
		return err
	}
	if _, err := c.Kubectl(ctx, "--namespace=default", "scale", "deployment/app", fmt.Sprintf("--replicas=%d", len(c.Nodes))); err != nil {
		return err
	}
	if err := c.RolloutStatus(ctx, "weft-system", "daemonset/weft", 2*time.Minute); err != nil {
		return err
	}
	return c.RolloutStatus(ctx, "default", "deployment/app", 2*time.Minute)
}
