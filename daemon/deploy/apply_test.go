package deploy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/kubeapi"
)

// The manifests' ServiceAccount, as the API server names it.
const (
	saNamespace = "weft-system"
	saName      = "weft"
	saUser      = "system:serviceaccount:" + saNamespace + ":" + saName
)

// startAPI runs a real kube-apiserver (and etcd) for this test, in a
// namespace of its own on a fresh underlay. It skips when not root or when
// the tools are not built.
func startAPI(t *testing.T, ctx context.Context) *kubeapi.Server {
	t.Helper()
	env := harness.NewTestEnv(t)
	if m := kubeapi.MissingTools(env); len(m) > 0 {
		t.Skipf("%s not built in %s (make kubetools)", strings.Join(m, ", "), env.ToolsDir)
	}
	u, err := harness.NewUnderlay(env)
	if err != nil {
		t.Fatal(err)
	}
	s, err := kubeapi.Start(ctx, env, u, kubeapi.Options{}, kubeapi.ServerOptions{Name: "deploy"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver ready in %s", s.Startup.Round(time.Millisecond))
	return s
}

// TestApply is the install as a user runs it: `kubectl apply -f
// daemon/deploy/` against a real API server (no --dry-run: the server
// validates and stores every object), in a cluster without Submariner; then
// again, as an upgrade does. The uninstall manifest applies too.
func TestApply(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := startAPI(t, ctx)

	for _, round := range []string{"install", "re-apply"} {
		out, err := s.Kubectl(ctx, "apply", "-f", ".")
		if err != nil {
			t.Fatalf("%s: %v\n%s", round, err, out)
		}
		t.Logf("%s:\n%s", round, strings.TrimSpace(out))
		// Applying the same files again changes nothing (an upgrade
		// re-applies them; a spurious patch would hide a real one).
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if round == "re-apply" && !strings.HasSuffix(l, " unchanged") {
				t.Errorf("re-apply of unchanged files: %q", l)
			}
		}
	}
	// What the server stored is what the files say.
	got, err := s.Kubectl(ctx, "get", "-n", saNamespace, "daemonset/weft",
		"-o", "jsonpath={.spec.template.spec.initContainers[*].name}/{.spec.template.spec.containers[*].name}")
	if err != nil {
		t.Fatal(err)
	}
	if got != "install-cni/weftd install-cni-watch" {
		t.Errorf("stored DaemonSet containers %q", got)
	}
	if _, err := s.Kubectl(ctx, "get", "-n", saNamespace, "serviceaccount/"+saName, "configmap/weft-config"); err != nil {
		t.Error(err)
	}
	if out, err := s.Kubectl(ctx, "apply", "-f", "uninstall"); err != nil {
		t.Fatalf("uninstall manifest: %v\n%s", err, out)
	}
	checkClusterEndpointSchema(ctx, t, s)
}

// The ClusterEndpoint CRD's schema refuses every malformed field, naming
// it, and stores a well-formed object.
func checkClusterEndpointSchema(ctx context.Context, t *testing.T, s *kubeapi.Server) {
	const good = `{"clusterID":"c1","podCIDRs":["10.1.0.0/16"],"serviceCIDRs":["10.101.0.0/16"],"gatewayNode":"c1-n2","gatewayIP":"192.168.10.12","cable":"vxlan","port":4800,"vni":4242}`
	doc := func(name, spec string) []byte {
		return []byte(`{"apiVersion":"weft.dev/v1alpha1","kind":"ClusterEndpoint","metadata":{"name":"` + name + `","namespace":"weft-system"},"spec":` + spec + `}`)
	}
	// The CRD was just created: its resource is served within moments.
	var err error
	for range 50 {
		if _, err = s.KubectlWith(ctx, s.AdminKubeconfig, doc("c1", good), "apply", "-f", "-"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("a valid ClusterEndpoint refused: %v", err)
	}
	// Dual stack: an IPv6-only gateway's addresses in gatewayIP and
	// healthCheckIP, a dual-stack one's IPv6 companions; all stored.
	for _, v := range []struct{ from, to string }{
		{`"192.168.10.12"`, `"fd00:10::12","healthCheckIP":"fd00:1:0:2::1"`},
		{`"192.168.10.12"`, `"192.168.10.12","gatewayIP6":"fd00:10::12","healthCheckIP":"10.1.2.1","healthCheckIP6":"fd00:1:0:2::1"`},
	} {
		spec := strings.Replace(good, v.from, v.to, 1)
		if out, err := s.KubectlWith(ctx, s.AdminKubeconfig, doc("c1", spec), "apply", "-f", "-"); err != nil {
			t.Errorf("a valid dual-stack ClusterEndpoint %s refused: %v %s", spec, err, out)
		}
	}
	bad := []struct{ name, from, to, field string }{
		{"c1", `"192.168.10.12"`, `"192.168.10.12","gatewayIP6":"192.168.10.13"`, "spec.gatewayIP6"},
		{"c1", `"192.168.10.12"`, `"fd00:10::zz"`, "spec.gatewayIP"},
		{"c1", `"192.168.10.12"`, `"192.168.10.12","healthCheckIP":"10.1.2"`, "spec.healthCheckIP"},
		{"c1", `"192.168.10.12"`, `"192.168.10.12","healthCheckIP6":"10.1.2.1"`, "spec.healthCheckIP6"},
		{"c1", `"10.1.0.0/16"]`, `"10.1.0.0"]`, "spec.podCIDRs[0]"},
		{"c1", `"10.101.0.0/16"`, `"10.101.0.0/33"`, "spec.serviceCIDRs[0]"},
		{"c1", `"192.168.10.12"`, `"192.168.10.300"`, "spec.gatewayIP"},
		{"c1", `"vxlan"`, `"wireguard"`, "spec.cable"},
		{"c1", `4800`, `70000`, "spec.port"},
		{"c1", `4800`, `0`, "spec.port"},
		{"c1", `4242`, `16777216`, "spec.vni"},
		{"c1", `"c1-n2"`, `""`, "spec.gatewayNode"},
		{"c2", `"c1",`, `"c1",`, "named after its spec.clusterID"},
		{"c_1", `"c1",`, `"c_1",`, "spec.clusterID"},
	}
	for _, b := range bad {
		spec := strings.Replace(good, b.from, b.to, 1)
		out, err := s.KubectlWith(ctx, s.AdminKubeconfig, doc(b.name, spec), "apply", "-f", "-")
		if err == nil || !strings.Contains(err.Error()+out, b.field) {
			t.Errorf("ClusterEndpoint %s with %s: %v %s, want refused naming %s", b.name, b.to, err, out, b.field)
		}
	}
}

// TestRBAC checks that the manifests grant weft's ServiceAccount what the
// Kubernetes topology source reads and nothing else, both as the API
// server's authorizer answers for the account (kubectl auth can-i --as) and
// as a real token of the account is served.
func TestRBAC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := startAPI(t, ctx)
	// Submariner's CRD, as in a cluster that runs Submariner (the manifests
	// must not need it, see TestApply, but the resource must resolve here).
	if err := s.InstallSubmarinerCRD(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := s.Kubectl(ctx, "apply", "-f", "."); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	for _, ns := range []string{"submariner-operator", "other"} {
		if _, err := s.Kubectl(ctx, "create", "namespace", ns); err != nil {
			t.Fatal(err)
		}
	}

	type check struct {
		verb, resource, namespace string // namespace "" = all namespaces / cluster scope
		want                      bool
	}
	checks := []check{
		// What the Node informer and the Submariner Endpoint source do.
		{"get", "nodes", "", true},
		{"list", "nodes", "", true},
		{"watch", "nodes", "", true},
		{"get", "endpoints.submariner.io", "submariner-operator", true},
		{"list", "endpoints.submariner.io", "submariner-operator", true},
		{"watch", "endpoints.submariner.io", "submariner-operator", true},
		{"list", "endpoints.submariner.io", "", true},
		// Nothing more.
		{"create", "nodes", "", false},
		{"update", "nodes", "", false},
		{"patch", "nodes", "", false},
		{"delete", "nodes", "", false},
		{"create", "endpoints.submariner.io", "submariner-operator", false},
		{"update", "endpoints.submariner.io", "submariner-operator", false},
		{"delete", "endpoints.submariner.io", "submariner-operator", false},
		{"get", "secrets", saNamespace, false},
		{"list", "secrets", "", false},
		{"get", "configmaps", saNamespace, false},
		{"list", "pods", "", false},
		{"list", "endpoints", "", false}, // core Endpoints are not Submariner's
		// The node's RouteAgent: read (after a conflict), created once,
		// updated; never listed, watched or deleted.
		{"get", "routeagents.submariner.io", "submariner-operator", true},
		{"create", "routeagents.submariner.io", "submariner-operator", true},
		{"update", "routeagents.submariner.io", "submariner-operator", true},
		{"list", "routeagents.submariner.io", "submariner-operator", false},
		{"watch", "routeagents.submariner.io", "submariner-operator", false},
		{"delete", "routeagents.submariner.io", "submariner-operator", false},
		{"patch", "routeagents.submariner.io", "submariner-operator", false},
		{"create", "serviceaccounts/token", saNamespace, false},
		// endpoints: weft: the Lease and the ClusterEndpoints, in weft's
		// namespace only.
		{"get", "leases.coordination.k8s.io", saNamespace, true},
		{"create", "leases.coordination.k8s.io", saNamespace, true},
		{"update", "leases.coordination.k8s.io", saNamespace, true},
		{"delete", "leases.coordination.k8s.io", saNamespace, false},
		{"get", "leases.coordination.k8s.io", "other", false},
		{"update", "leases.coordination.k8s.io", "kube-system", false},
		{"list", "clusterendpoints.weft.dev", saNamespace, true},
		{"watch", "clusterendpoints.weft.dev", saNamespace, true},
		{"create", "clusterendpoints.weft.dev", saNamespace, true},
		{"update", "clusterendpoints.weft.dev", saNamespace, true},
		{"delete", "clusterendpoints.weft.dev", saNamespace, true},
		{"create", "clusterendpoints.weft.dev", "other", false},
		// endpoints: weft: the node's NodePath, in weft's namespace.
		{"get", "nodepaths.weft.dev", saNamespace, true},
		{"create", "nodepaths.weft.dev", saNamespace, true},
		{"update", "nodepaths.weft.dev", saNamespace, true}, // to add the Node owner reference (metadata); the status goes through its subresource, below
		{"delete", "nodepaths.weft.dev", saNamespace, false},
		{"list", "nodepaths.weft.dev", saNamespace, false},
		{"create", "nodepaths.weft.dev", "other", false},
		{"list", "clusterendpoints.weft.dev", "", false},
	}
	canI := func(kubeconfig string, as string, c check) (bool, string) {
		args := []string{"auth", "can-i", c.verb, c.resource}
		if c.namespace == "" {
			args = append(args, "--all-namespaces")
		} else {
			args = append(args, "--namespace="+c.namespace)
		}
		if as != "" {
			args = append(args, "--as="+as)
		}
		// can-i exits 1 for "no": the answer is on stdout either way.
		out, err := s.KubectlWith(ctx, kubeconfig, nil, args...)
		ans := strings.TrimSpace(out)
		if ans != "yes" && ans != "no" {
			t.Fatalf("kubectl %s: %q %v", strings.Join(args, " "), out, err)
		}
		return ans == "yes", ans
	}

	tok, err := s.Token(ctx, saNamespace, saName)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := s.Kubeconfig(tok)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		if got, ans := canI(s.AdminKubeconfig, saUser, c); got != c.want {
			t.Errorf("can-i --as=%s %s %s (namespace %q): %s, want %v", saUser, c.verb, c.resource, c.namespace, ans, c.want)
		}
		// The same question asked with the account's own token.
		if got, ans := canI(kc, "", c); got != c.want {
			t.Errorf("can-i with the ServiceAccount token %s %s (namespace %q): %s, want %v", c.verb, c.resource, c.namespace, ans, c.want)
		}
	}

	// The NodePath's status goes through its subresource.
	for _, c := range []struct {
		verb, namespace string
		want            bool
	}{{"update", saNamespace, true}, {"patch", saNamespace, false}, {"update", "other", false}} {
		out, _ := s.KubectlWith(ctx, kc, nil, "auth", "can-i", c.verb, "nodepaths.weft.dev", "--subresource=status", "--namespace="+c.namespace)
		if got := strings.TrimSpace(out) == "yes"; got != c.want {
			t.Errorf("can-i with the ServiceAccount token %s nodepaths.weft.dev/status (namespace %q): %q, want %v", c.verb, c.namespace, out, c.want)
		}
	}

	// And served for real with the token: reads work, the rest is refused.
	if _, err := s.KubectlWith(ctx, kc, nil, "get", "nodes"); err != nil {
		t.Errorf("token: get nodes: %v", err)
	}
	if _, err := s.KubectlWith(ctx, kc, nil, "get", "endpoints.submariner.io", "--all-namespaces"); err != nil {
		t.Errorf("token: get Submariner endpoints: %v", err)
	}
	if _, err := s.KubectlWith(ctx, kc, nil, "get", "secrets", "--namespace="+saNamespace); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("token: get secrets: %v, want forbidden", err)
	}
}
