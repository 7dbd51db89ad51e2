package kubeapi_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/kubeapi"
	"github.com/weft-net/weft/pkg/netnstest"
)

// newEnv is harness.NewTestEnv, skipping when the Kubernetes tools are not
// built (they take ~10 min: `make kubetools`).
func newEnv(t *testing.T) *harness.Env {
	t.Helper()
	env := harness.NewTestEnv(t)
	if m := kubeapi.MissingTools(env); len(m) > 0 {
		t.Skipf("%s not built in %s (make kubetools)", strings.Join(m, ", "), env.ToolsDir)
	}
	return env
}

// getFrom does an HTTPS GET from inside namespace n (a node) with a bearer
// token and returns the status code and body.
func getFrom(ctx context.Context, n *netnstest.NS, s *kubeapi.Server, path, token string) (int, string, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CA)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := n.Do(func(ns.NetNS) error {
				var err error
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b), nil
}

// TestServer is the harness's smoke test: two API servers on one etcd in a
// control-plane namespace, reached from a node namespace over the underlay;
// ServiceAccount tokens from the TokenRequest API authenticate and RBAC is
// enforced; a killed server comes back with its objects; and Close leaves no
// process and no namespace behind.
func TestServer(t *testing.T) {
	netnstest.RequireRoot(t)
	testEnv := newEnv(t) // for the skip and the tool paths only
	env, err := harness.NewEnv(slog.New(slog.NewTextHandler(tWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	env.BinDir, env.ToolsDir = testEnv.BinDir, testEnv.ToolsDir
	t.Cleanup(func() { _ = env.Close() }) // a failed test still cleans up; Close twice is fine
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	u, err := harness.NewUnderlay(env)
	if err != nil {
		t.Fatal(err)
	}
	node, err := u.AddNode(harness.NodeOptions{
		Name: "c1-n1", Cluster: "c1",
		IP: netip.MustParseAddr("192.168.10.11"), PodCIDR: netip.MustParsePrefix("10.1.1.0/24"),
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c1, err := kubeapi.Start(ctx, env, u, kubeapi.Options{}, kubeapi.ServerOptions{Name: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	cp := c1.ControlPlane()
	t.Logf("control plane up in %s: etcd %s, kube-apiserver c1 ready %s after start (%s)",
		time.Since(start).Round(time.Millisecond), cp.EtcdStartup.Round(time.Millisecond), c1.Startup.Round(time.Millisecond), c1.URL)
	start = time.Now()
	c2, err := cp.StartServer(ctx, kubeapi.ServerOptions{Name: "c2"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver c2 ready in %s (%s)", time.Since(start).Round(time.Millisecond), c2.URL)
	t.Logf("resident memory: etcd %s, kube-apiserver c1 %s, c2 %s", rss(cp.EtcdPID()), rss(c1.PID()), rss(c2.PID()))
	if c1.Addr.Addr() != kubeapi.DefaultIP || c1.Addr == c2.Addr {
		t.Fatalf("addresses %s and %s", c1.Addr, c2.Addr)
	}

	// Nothing of it listens in the root namespace (read from the kernel's
	// socket table: no packet is sent, the root namespace's routes lead
	// off this machine).
	for _, s := range []*kubeapi.Server{c1, c2} {
		if l := rootListeners(t, s.Addr.Port()); len(l) > 0 {
			t.Errorf("port %d listened on in the root namespace: %v", s.Addr.Port(), l)
		}
	}
	if l := rootListeners(t, 2379); len(l) > 0 {
		t.Errorf("etcd's port listened on in the root namespace: %v", l)
	}

	// One etcd, two clusters: an object in one is not in the other.
	if _, err := c1.Kubectl(ctx, "create", "namespace", "only-in-c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Kubectl(ctx, "get", "namespace", "only-in-c1"); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("c2 sees c1's namespace (err %v)", err)
	}

	// A ServiceAccount token (no controller-manager: the TokenRequest API
	// alone) authenticates from a node namespace over the underlay, and RBAC
	// is enforced: allowed nothing, listing nodes is forbidden.
	if _, err := c1.Kubectl(ctx, "create", "serviceaccount", "probe", "--namespace=only-in-c1"); err != nil {
		t.Fatal(err)
	}
	tok, err := c1.Token(ctx, "only-in-c1", "probe")
	if err != nil {
		t.Fatal(err)
	}
	code, body, err := getFrom(ctx, node.NS, c1, "/api/v1/nodes", tok)
	if err != nil {
		t.Fatalf("from node %s over the underlay: %v", node.Name, err)
	}
	if code != http.StatusForbidden || !strings.Contains(body, "system:serviceaccount:only-in-c1:probe") {
		t.Fatalf("list nodes without RBAC as the ServiceAccount: %d %s", code, body)
	}
	if _, err := c1.Kubectl(ctx, "create", "clusterrole", "node-reader", "--verb=list", "--resource=nodes"); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Kubectl(ctx, "create", "clusterrolebinding", "probe-reads-nodes", "--clusterrole=node-reader", "--serviceaccount=only-in-c1:probe"); err != nil {
		t.Fatal(err)
	}
	if code, body, err = getFrom(ctx, node.NS, c1, "/api/v1/nodes", tok); err != nil || code != http.StatusOK {
		t.Fatalf("list nodes with RBAC: %d %v %s", code, err, body)
	}
	// The kubeconfig for the token works with kubectl; a bogus token is
	// refused.
	kc, err := c1.Kubeconfig(tok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c1.KubectlWith(ctx, kc, nil, "get", "nodes"); err != nil {
		t.Fatalf("kubectl with the ServiceAccount kubeconfig: %v", err)
	}
	if _, err := c1.KubectlWith(ctx, kc, nil, "get", "secrets", "-A"); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("ServiceAccount lists secrets (err %v)", err)
	}
	if code, _, err := getFrom(ctx, node.NS, c1, "/api/v1/nodes", "not-a-token"); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("bogus token: %d %v", code, err)
	}

	// The test CRD serves Submariner's Endpoint kind: an object as the
	// gateway engine writes it is stored, one missing a field it always
	// writes is refused.
	if err := c2.InstallSubmarinerCRD(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Kubectl(ctx, "create", "namespace", "submariner-operator"); err != nil {
		t.Fatal(err)
	}
	ep := `apiVersion: submariner.io/v1
kind: Endpoint
metadata: {name: c2-submariner-cable-c2-192-168-20-11, namespace: submariner-operator}
spec:
  cluster_id: c2
  cable_name: submariner-cable-c2-192-168-20-11
  hostname: c2-n1
  subnets: [10.2.0.0/16, 10.102.0.0/16]
  private_ip: 192.168.20.11
  public_ip: ""
  nat_enabled: false
  backend: vxlan
  backend_config: {natt-discovery-port: "4490", udp-port: "4500"}
  healthCheckIP: 10.2.1.1
`
	if _, err := c2.KubectlWith(ctx, c2.AdminKubeconfig, []byte(ep), "create", "-f", "-"); err != nil {
		t.Fatalf("create Endpoint: %v", err)
	}
	out, err := c2.Kubectl(ctx, "get", "endpoints.submariner.io", "-n", "submariner-operator", "-o", "jsonpath={.items[*].spec.hostname}")
	if err != nil || out != "c2-n1" {
		t.Fatalf("get Endpoints: %q %v", out, err)
	}
	bad := strings.Replace(strings.Replace(ep, "  hostname: c2-n1\n", "", 1), "name: c2-", "name: bad-c2-", 1)
	if _, err := c2.KubectlWith(ctx, c2.AdminKubeconfig, []byte(bad), "create", "-f", "-"); err == nil || !strings.Contains(err.Error(), "spec.hostname") {
		t.Fatalf("Endpoint without hostname: %v", err)
	}

	// Killed and restarted: the API is gone meanwhile, and back with its
	// objects (they live in etcd).
	pid := c1.PID()
	if err := c1.Kill(); err != nil {
		t.Fatal(err)
	}
	if c1.PID() != 0 || syscall.Kill(pid, 0) == nil {
		t.Fatalf("kube-apiserver pid %d still alive after Kill", pid)
	}
	if _, _, err := getFrom(ctx, node.NS, c1, "/readyz", tok); err == nil {
		t.Fatal("API answers while killed")
	}
	if err := c1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver c1 restarted in %s", c1.Startup.Round(time.Millisecond))
	if _, err := c1.Kubectl(ctx, "get", "namespace", "only-in-c1"); err != nil {
		t.Fatalf("after restart: %v", err)
	}

	// Close stops every process by PID and removes the namespaces.
	pids := []int{c1.PID(), c2.PID(), cp.EtcdPID()}
	nss := env.Namespaces()
	if err := env.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	for _, p := range pids {
		if p == 0 || syscall.Kill(p, 0) == nil {
			t.Errorf("pid %d (of %v) alive after Close", p, pids)
		}
	}
	for _, n := range nss {
		if _, err := os.Stat("/var/run/netns/" + n); err == nil {
			t.Errorf("namespace %s left after Close", n)
		}
	}
	if _, err := os.Stat(cp.Dir); err == nil {
		t.Errorf("%s left after Close", cp.Dir)
	}
}

// rootListeners returns the lines of the root namespace's TCP socket
// tables (this test process runs there) that listen on port.
func rootListeners(t *testing.T, port uint16) []string {
	t.Helper()
	var out []string
	for _, f := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(l)
			// local_address is ADDR:PORT in hex; state 0A is LISTEN.
			if len(fs) > 3 && fs[3] == "0A" && strings.HasSuffix(fs[1], fmt.Sprintf(":%04X", port)) {
				out = append(out, l)
			}
		}
	}
	return out
}

// rss is a process's VmRSS as /proc shows it.
func rss(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
