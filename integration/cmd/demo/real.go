package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/kubecluster"
)

// demoReal is `make demo CLUSTER=real`: two real clusters (control plane,
// containerd and kubelet on every node), weft installed in each by `kubectl
// apply` of daemon/deploy/ with the ConfigMap filled in for that cluster,
// an application Deployment with a pod on every node, the connectivity
// matrix between the clusters' pods, the pods as kubectl shows them and
// `weftd status` from inside a weft pod. kube: topology: kubernetes (the
// ConfigMap's commented variant; the gateways from Submariner Endpoints
// written here as Submariner's gateway engine would).
func demoReal(ctx context.Context, env *harness.Env, out io.Writer, nodes int, kube bool) error {
	if m := kubecluster.Missing(env); len(m) > 0 {
		return fmt.Errorf("missing %v (make image kubetools tools; apt-get install containerd runc)", m)
	}
	start := time.Now()
	fmt.Fprintf(out, "starting two Kubernetes clusters of %d nodes (etcd, kube-apiserver, kube-controller-manager, kube-scheduler; containerd + kubelet per node) …\n", nodes)
	c1, c2, err := kubecluster.NewPair(ctx, env, nodes)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "clusters up: %s\n", time.Since(start).Round(time.Millisecond))

	deploy := filepath.Join(filepath.Dir(env.BinDir), "daemon", "deploy")
	install := time.Now()
	clusters := []*kubecluster.Cluster{c1, c2}
	var dirs []string
	how := "weft.yaml's cluster and remotes filled in"
	if kube {
		if err := kubecluster.PublishGateways(ctx, clusters...); err != nil {
			return err
		}
		how = "weft.yaml: the commented topology: kubernetes variant, this cluster's ID and CIDRs"
		fmt.Fprintln(out, "topology: kubernetes — weftd reads Node objects and Submariner Endpoints (each gateway's written in both clusters, as Submariner's gateway engine and broker would), through the kubernetes Service's ClusterIP; no node, gateway or remote in any file")
	}
	for i, c := range clusters {
		var dir string
		var err error
		if kube {
			dir, err = c.KubernetesDeployDir(deploy)
		} else {
			dir, err = c.DeployDir(deploy, c.WeftTopology(clusters[1-i]))
		}
		if err != nil {
			return err
		}
		dirs = append(dirs, dir)
	}
	outs, err := kubecluster.InstallWithApp(ctx, clusters, dirs)
	if err != nil {
		return err
	}
	for i, c := range clusters {
		fmt.Fprintf(out, "\n$ kubectl apply -f daemon/deploy/   # %s, %s\n%s", c.ID, how, outs[i])
	}
	fmt.Fprintf(out, "\nkubectl apply -> every weft pod and application pod Ready: %s\n", time.Since(install).Round(time.Millisecond))

	var all []kubecluster.MatrixPod
	// A pod is in the matrix once weftd has recorded its attachment.
	deadline := time.Now().Add(10 * time.Second)
	for {
		all, err = kubecluster.MatrixPods(ctx, c1, c2)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	table, errs := kubecluster.Matrix(ctx, all)
	fmt.Fprintf(out, "\nconnectivity matrix, pod to pod across the clusters (TCP echo):\n%s", table)

	for _, c := range clusters {
		fmt.Fprintf(out, "\n$ kubectl get pods -A -o wide   # %s\n", c.ID)
		o, err := c.Kubectl(ctx, "get", "pods", "-A", "-o", "wide")
		if err != nil {
			return err
		}
		fmt.Fprint(out, o)
	}
	ws, err := c1.Pods(ctx, "weft-system", "app.kubernetes.io/name=weft")
	if err != nil {
		return err
	}
	for _, p := range ws {
		if p.Node != c1.Nodes[len(c1.Nodes)-1].Name && p.Node != c1.Nodes[0].Name {
			continue
		}
		fmt.Fprintf(out, "\n$ kubectl -n weft-system exec %s -c weftd -- weftd status   # on %s\n", p.Name, p.Node)
		o, err := c1.Kubectl(ctx, "--namespace=weft-system", "exec", p.Name, "-c", "weftd", "--", "weftd", "status")
		fmt.Fprint(out, o)
		if err != nil {
			return err
		}
	}
	probes := 0
	for _, s := range all {
		for _, d := range all {
			if s.Cluster != d.Cluster {
				probes++
			}
		}
	}
	fmt.Fprintf(out, "\n%d of %d cross-cluster probes ok, %s in total\n", probes-len(errs), probes, time.Since(start).Round(time.Millisecond))
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintf(out, "  %v\n", e)
		}
		return fmt.Errorf("%d probes failed", len(errs))
	}
	return nil
}
