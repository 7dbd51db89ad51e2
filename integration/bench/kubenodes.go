package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/kubeapi"
	"github.com/weft-net/weft/integration/scenario"
	"github.com/weft-net/weft/pkg/api"
)

// KubeNodes is figure 9: the RSS of weftd with topology: kubernetes and
// 5,000 Node objects in a real kube-apiserver, on the gateway (which holds
// an FDB entry and a neighbour per node). The reference is the same weftd
// with topology: file listing the same 5,000 nodes, in the same run: the
// ratio is what the API source costs over the file.
func KubeNodes(ctx context.Context, env *harness.Env, o Options) ([]Row, error) {
	if m := kubeapi.MissingTools(env); len(m) > 0 {
		return nil, fmt.Errorf("kubeapi tools missing: %v (make kubetools)", m)
	}
	count := o.pick(5000, 1000)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	n, cfg, err := oneNode(env, harness.LayoutFlannel)
	if err != nil {
		return nil, err
	}
	if err := addCNIBridge(n); err != nil {
		return nil, err
	}
	srv, err := kubeapi.Start(ctx, env, n.Underlay, kubeapi.Options{}, kubeapi.ServerOptions{Name: "c1"})
	if err != nil {
		return nil, err
	}
	if err := srv.InstallSubmarinerCRD(ctx); err != nil {
		return nil, err
	}
	if _, err := srv.Kubectl(ctx, "apply", "-f", scenario.ManifestsDir(env)); err != nil {
		return nil, err
	}
	if _, err := srv.Kubectl(ctx, "create", "namespace", "submariner-operator"); err != nil {
		return nil, err
	}
	tok, err := srv.Token(ctx, "weft-system", "weft")
	if err != nil {
		return nil, err
	}
	kc, err := srv.Kubeconfig(tok)
	if err != nil {
		return nil, err
	}
	created := time.Now()
	names, ips := benchNodes(n, count)
	for start := 0; start < count; start += 250 {
		end := min(start+250, count)
		var items []any
		for i := start; i < end; i++ {
			items = append(items, realisticNode(names[i], ips[i], i))
		}
		doc, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
		if _, err := srv.KubectlWith(ctx, srv.AdminKubeconfig, doc, "create", "-f", "-"); err != nil {
			return nil, fmt.Errorf("create Nodes %d..%d: %w", start, end, err)
		}
	}
	o.Log.Info("Node objects created", "count", count, "took", time.Since(created).Round(time.Millisecond))
	eps := fmt.Sprintf(`apiVersion: v1
kind: List
items:
- apiVersion: submariner.io/v1
  kind: Endpoint
  metadata: {name: c1-submariner-cable-c1-%[1]s, namespace: submariner-operator}
  spec: {cluster_id: c1, cable_name: submariner-cable-c1-%[1]s, hostname: %[2]s, subnets: [10.1.0.0/16, 10.101.0.0/16], private_ip: %[3]s, public_ip: "", nat_enabled: false, backend: vxlan}
- apiVersion: submariner.io/v1
  kind: Endpoint
  metadata: {name: c2-submariner-cable-c2-192-168-20-11, namespace: submariner-operator}
  spec: {cluster_id: c2, cable_name: submariner-cable-c2-192-168-20-11, hostname: c2-n1, subnets: [10.2.0.0/16, 10.102.0.0/16], private_ip: 192.168.20.11, public_ip: "", nat_enabled: false, backend: vxlan}
`, dashed(n.IP.String()), n.Name, n.IP)
	if _, err := srv.KubectlWith(ctx, srv.AdminKubeconfig, []byte(eps), "create", "-f", "-"); err != nil {
		return nil, err
	}

	kcfg := harness.WeftdConfig{}
	for k, v := range cfg {
		kcfg[k] = v
	}
	cl := map[string]any{"id": "c1", "podCIDRs": []string{"10.1.0.0/16"}, "serviceCIDRs": []string{"10.101.0.0/16"}}
	kcfg["cluster"] = cl
	delete(kcfg, "remotes")
	kcfg["topology"] = "kubernetes"
	kcfg["kubernetes"] = map[string]any{"kubeconfig": kc}
	kube, err := footprintOf(ctx, n, kcfg, count)
	if err != nil {
		return nil, fmt.Errorf("topology kubernetes: %w", err)
	}

	// The reference: the same nodes listed in the file.
	var nodes []any
	for i := range names {
		nodes = append(nodes, map[string]any{"name": names[i], "ip": ips[i]})
	}
	fcfg := harness.WeftdConfig{}
	for k, v := range cfg {
		fcfg[k] = v
	}
	fcfg["cluster"] = map[string]any{"id": "c1", "podCIDRs": []string{"10.1.0.0/16"}, "serviceCIDRs": []string{"10.101.0.0/16"},
		"gateway": n.Name, "nodes": nodes}
	file, err := footprintOf(ctx, n, fcfg, count)
	if err != nil {
		return nil, fmt.Errorf("topology file: %w", err)
	}
	one := func(v float64) Summary { return Summary{N: 1, Median: v, P99: v, Min: v, Max: v} }
	ref := one(file.rssMiB)
	return []Row{{
		ID: "9", Figure: fmt.Sprintf("weftd RSS, topology kubernetes, %d Node objects (gateway)", count), Unit: "MiB",
		Weft: one(kube.rssMiB), RefName: fmt.Sprintf("topology file, the same %d nodes", count), Ref: &ref,
		Goal: &Goal{Text: "≤ 60 MiB", Max: 60},
		Extra: map[string]any{"nodes": count, "vmHWMMiB": kube.hwmMiB, "refVmHWMMiB": file.hwmMiB,
			"readyAfterMs": kube.readyMs, "refReadyAfterMs": file.readyMs},
		Note: fmt.Sprintf("real kube-apiserver, watch + protobuf + a store that keeps name and InternalIP only; peak %.1f MiB while the list streams", kube.hwmMiB),
	}}, nil
}

type footprint struct{ rssMiB, hwmMiB, readyMs float64 }

// footprintOf runs weftd with cfg on n until it is ready with count nodes
// in its topology, lets it settle, reads its memory and stops it.
func footprintOf(ctx context.Context, n *harness.Node, cfg harness.WeftdConfig, count int) (footprint, error) {
	start := time.Now()
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		return footprint{}, err
	}
	defer func() { _ = w.Stop() }()
	if _, err := w.WaitFor(ctx, func(s api.Status) bool {
		return s.Ready && s.Topology != nil && s.Topology.Nodes == count
	}); err != nil {
		return footprint{}, fmt.Errorf("weftd not ready with %d nodes: %w\n%s", count, err, w.LogTail(2000))
	}
	ready := time.Since(start)
	// The burst of the initial list and of programming the FDB settles,
	// and a periodic resync passes, before memory is read.
	time.Sleep(10 * time.Second)
	rss, hwm, err := memKiB(w.PID)
	if err != nil {
		return footprint{}, err
	}
	return footprint{rssMiB: float64(rss) / 1024, hwmMiB: float64(hwm) / 1024, readyMs: float64(ready.Milliseconds())}, nil
}

// benchNodes names count nodes, the first being n itself; the others get
// distinct addresses in 172.16.0.0/12 (never reached: only their FDB
// entries and neighbours are programmed).
func benchNodes(n *harness.Node, count int) (names, ips []string) {
	names, ips = []string{n.Name}, []string{n.IP.String()}
	for i := 1; i < count; i++ {
		names = append(names, fmt.Sprintf("c1-w%05d", i))
		ips = append(ips, fmt.Sprintf("172.%d.%d.%d", 16+i/62500, i/250%250, i%250+1))
	}
	return names, ips
}

// realisticNode is a Node as a kubelet on a busy node registers it: the
// labels, annotations, capacity, conditions, images and node info weft
// strips before caching (about 5 KiB of JSON).
func realisticNode(name, ip string, i int) map[string]any {
	var images []any
	for j := 0; j < 25; j++ {
		images = append(images, map[string]any{
			"names": []string{
				fmt.Sprintf("registry.example.com/team-%d/service-%d@sha256:%064x", j%7, j, i*100+j),
				fmt.Sprintf("registry.example.com/team-%d/service-%d:v1.%d.%d", j%7, j, j, i%10),
			},
			"sizeBytes": 10_000_000 + j*1_000_000,
		})
	}
	cond := func(t, s, reason string) map[string]any {
		return map[string]any{"type": t, "status": s, "reason": reason, "message": "kubelet has " + reason,
			"lastHeartbeatTime": "2026-12-01T10:00:00Z", "lastTransitionTime": "2026-12-01T09:00:00Z"}
	}
	res := map[string]any{"cpu": "16", "memory": "65843092Ki", "pods": "110", "ephemeral-storage": "203056560Ki", "hugepages-2Mi": "0"}
	return map[string]any{
		"apiVersion": "v1", "kind": "Node",
		"metadata": map[string]any{"name": name,
			"labels": map[string]string{
				"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"node.kubernetes.io/instance-type": "m6i.4xlarge", "topology.kubernetes.io/region": "eu-west-1",
				"topology.kubernetes.io/zone": fmt.Sprintf("eu-west-1%c", 'a'+i%3), "node-role.kubernetes.io/worker": "",
				"pool": fmt.Sprintf("pool-%d", i%20),
			},
			"annotations": map[string]string{
				"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true",
				"csi.volume.kubernetes.io/nodeid": fmt.Sprintf(`{"ebs.csi.aws.com":"i-%017x"}`, i),
			}},
		"spec": map[string]any{"podCIDR": fmt.Sprintf("10.%d.%d.0/24", 64+i/250, i%250), "providerID": fmt.Sprintf("aws:///eu-west-1a/i-%017x", i)},
		"status": map[string]any{
			"addresses": []any{
				map[string]any{"type": "InternalIP", "address": ip},
				map[string]any{"type": "Hostname", "address": name},
				map[string]any{"type": "InternalDNS", "address": name + ".eu-west-1.compute.internal"},
			},
			"capacity": res, "allocatable": res,
			"conditions": []any{cond("MemoryPressure", "False", "KubeletHasSufficientMemory"), cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
				cond("PIDPressure", "False", "KubeletHasSufficientPID"), cond("Ready", "True", "KubeletReady")},
			"images": images,
			"nodeInfo": map[string]any{"machineID": fmt.Sprintf("%032x", i), "systemUUID": fmt.Sprintf("ec2%029x", i), "bootID": fmt.Sprintf("%032x", i+1),
				"kernelVersion": "6.12.0", "osImage": "Ubuntu 24.04 LTS", "containerRuntimeVersion": "containerd://2.1.0",
				"kubeletVersion": "v1.37.2", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
		},
	}
}

func dashed(ip string) string {
	out := []byte(ip)
	for i, c := range out {
		if c == '.' {
			out[i] = '-'
		}
	}
	return string(out)
}
