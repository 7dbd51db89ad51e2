// Package kubeapi runs real Kubernetes API servers for weft's integration
// tests and demo: etcd and one kube-apiserver per simulated cluster (one etcd
// serves them all, each under its own --etcd-prefix), inside a "control
// plane" network namespace plugged into the harness underlay like a node.
// weftd in the node namespaces reaches its API server over the underlay, as
// a kubelet-managed pod reaches a real one; nothing listens in the root
// namespace. In-process clients dial through DialContext, which opens the
// socket inside the control-plane namespace.
//
// By default there is no kube-controller-manager and no scheduler: objects
// are stored and served (watch, selectors, resource versions, RBAC,
// TokenRequest), but nothing acts on them. A DaemonSet never gets pods, a
// Namespace gets no default ServiceAccount; ServiceAccount tokens come from
// the TokenRequest API (`kubectl create token`), which the API server serves
// itself. Server.StartControllers adds both, for clusters with real nodes
// (integration/kubecluster).
//
// The binaries are .tools/bin/{etcd,kube-apiserver,kubectl} (and
// kube-controller-manager, kube-scheduler), built by `make kubetools` from
// integration/kubetools.
package kubeapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/netnstest"
)

// DefaultIP is the control plane's underlay address unless Options names
// one: outside the node ranges the harness hands out (192.168.10.x,
// 192.168.20.x, …).
var DefaultIP = netip.MustParseAddr("192.168.250.1")

// Tools names the binaries this package runs, so that tests can skip
// before building anything when they are absent.
var Tools = []string{"etcd", "kube-apiserver", "kubectl"}

// MissingTools returns the Tools not found as executables in env.ToolsDir.
func MissingTools(env *harness.Env) []string {
	var missing []string
	for _, t := range Tools {
		st, err := os.Stat(env.Tool(t))
		if err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
			missing = append(missing, t)
		}
	}
	return missing
}

// Options shapes a control plane.
type Options struct {
	// IP is the control-plane namespace's underlay address; every API
	// server listens on it. Default DefaultIP.
	IP netip.Addr
}

// ControlPlane is the namespace holding etcd and the API servers.
type ControlPlane struct {
	NS  *netnstest.NS
	IP  netip.Addr
	Dir string
	// EtcdStartup is how long etcd took to answer its health check.
	EtcdStartup time.Duration

	env     *harness.Env
	pki     *pki
	etcd    *Process
	etcdLog string

	mu      sync.Mutex
	servers []*Server
}

// NewControlPlane creates the control-plane namespace on u and starts etcd
// in it (listening on the namespace's loopback only: the API servers are its
// only clients). Everything is stopped and removed by env.Close, even when
// this fails half-way.
func NewControlPlane(ctx context.Context, env *harness.Env, u *harness.Underlay, opts Options) (*ControlPlane, error) {
	if m := MissingTools(env); len(m) > 0 {
		return nil, fmt.Errorf("kubeapi: %s not built in %s (make kubetools)", strings.Join(m, ", "), env.ToolsDir)
	}
	if !opts.IP.IsValid() {
		opts.IP = DefaultIP
	}
	n, err := env.NewNS("weft-cp")
	if err != nil {
		return nil, fmt.Errorf("kubeapi: %w", err)
	}
	if _, err := u.Plug(n, opts.IP); err != nil {
		return nil, fmt.Errorf("kubeapi: %w", err)
	}
	dir, err := env.TempDir("weft-kubeapi-")
	if err != nil {
		return nil, fmt.Errorf("kubeapi: %w", err)
	}
	p, err := newPKI()
	if err != nil {
		return nil, fmt.Errorf("kubeapi: %w", err)
	}
	cp := &ControlPlane{NS: n, IP: opts.IP, Dir: dir, env: env, pki: p, etcdLog: filepath.Join(dir, "etcd.log")}
	for name, data := range map[string][]byte{"ca.crt": p.caPEM, "sa.key": p.saKeyPEM, "sa.pub": p.saPubPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, fmt.Errorf("kubeapi: %w", err)
		}
	}
	start := time.Now()
	cp.etcd, err = startProcess("etcd", n.Name, cp.etcdLog, env.Tool("etcd"),
		"--name=weft-test",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379",
		"--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=weft-test=http://127.0.0.1:2380",
		// Test data: durability across a machine crash is worthless here,
		// and fsync on a loaded two-core machine is what makes etcd slow.
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
	if err != nil {
		return nil, fmt.Errorf("kubeapi: %w", err)
	}
	etcd := cp.etcd
	env.Defer(fmt.Sprintf("etcd pid %d", etcd.pid), func() error { return etcd.Stop(10 * time.Second) })
	env.Log.Info("etcd started", "pid", etcd.pid, "netns", n.Name, "log", cp.etcdLog)

	client := cp.httpClient()
	if err := waitHTTP(ctx, client, "http://127.0.0.1:2379/health", "", etcd, 30*time.Second); err != nil {
		return nil, fmt.Errorf("kubeapi: etcd not healthy: %w; log tail:\n%s", err, logTail(cp.etcdLog, 4096))
	}
	cp.EtcdStartup = time.Since(start)
	env.Log.Info("etcd healthy", "took", cp.EtcdStartup.Round(time.Millisecond))
	return cp, nil
}

// EtcdPID is etcd's process ID, 0 once it has exited.
func (cp *ControlPlane) EtcdPID() int {
	if !cp.etcd.Running() {
		return 0
	}
	return cp.etcd.pid
}

// DialContext dials addr from inside the control-plane namespace. In-process
// clients (client-go's rest.Config.Dial, net/http's Transport.DialContext)
// use it to reach the API servers, which are not reachable from the root
// namespace by design. The socket is created in the namespace; it is used
// from any goroutine afterwards.
func (cp *ControlPlane) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := cp.NS.Do(func(ns.NetNS) error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// httpClient is an HTTP client that dials inside the namespace and trusts
// the control plane's CA.
func (cp *ControlPlane) httpClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.pki.caPEM)
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext:     cp.DialContext,
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			// One-off readiness polls: no idle connection outlives them.
			DisableKeepAlives: true,
		},
	}
}

// ServerOptions shapes one API server.
type ServerOptions struct {
	// Name identifies the cluster the API server stands for (c1); its
	// objects live under the etcd prefix /registry-<Name>. Required.
	Name string
	// Port on the control plane's IP; default 6443 for the first server,
	// 6444 for the second, …
	Port int
	// ServiceCIDR is --service-cluster-ip-range; default 10.96.0.0/16.
	ServiceCIDR string
}

// Server is one running kube-apiserver.
type Server struct {
	Name string
	// Addr is where it listens (control-plane IP and port); URL is its
	// https:// form, reachable from every node namespace on the underlay.
	Addr netip.AddrPort
	URL  string
	// ServiceIP is the ClusterIP of the `kubernetes` Service (10.96.0.1):
	// KUBERNETES_SERVICE_HOST of every pod, port 443. Its serving
	// certificate names it; something on the node must forward it to Addr
	// (kube-proxy in a real cluster).
	ServiceIP netip.Addr
	// CA is the PEM CA bundle that verifies its serving certificate.
	CA []byte
	// AdminToken authenticates as user "admin" in group system:masters.
	AdminToken string
	// AdminKubeconfig is a kubeconfig file for AdminToken.
	AdminKubeconfig string
	Dir             string
	LogPath         string
	// Startup is how long the last (re)start took until /readyz said ok.
	Startup time.Duration

	cp   *ControlPlane
	args []string

	mu   sync.Mutex
	proc *Process
}

// Start creates a control plane on u and one API server named opts' Name
// ("weft" if empty). More servers on the same etcd: Server.ControlPlane().
// StartServer.
func Start(ctx context.Context, env *harness.Env, u *harness.Underlay, opts Options, sopts ServerOptions) (*Server, error) {
	cp, err := NewControlPlane(ctx, env, u, opts)
	if err != nil {
		return nil, err
	}
	if sopts.Name == "" {
		sopts.Name = "weft"
	}
	return cp.StartServer(ctx, sopts)
}

// StartServer starts a kube-apiserver in the control plane and waits until
// its /readyz answers ok (at most 60 s unless ctx ends first). It is
// stopped at env.Close.
func (cp *ControlPlane) StartServer(ctx context.Context, opts ServerOptions) (*Server, error) {
	if opts.Name == "" || strings.ContainsAny(opts.Name, "/ \t\n") {
		return nil, fmt.Errorf("kubeapi: server name %q: want a non-empty name without / or spaces", opts.Name)
	}
	cp.mu.Lock()
	idx := len(cp.servers)
	for _, s := range cp.servers {
		if s.Name == opts.Name {
			cp.mu.Unlock()
			return nil, fmt.Errorf("kubeapi: server %q already started", opts.Name)
		}
	}
	cp.mu.Unlock()
	if opts.Port == 0 {
		opts.Port = 6443 + idx
	}
	if opts.ServiceCIDR == "" {
		opts.ServiceCIDR = "10.96.0.0/16"
	}
	dir := filepath.Join(cp.Dir, opts.Name)
	if err := os.MkdirAll(filepath.Join(dir, "certs"), 0o700); err != nil {
		return nil, fmt.Errorf("kubeapi %s: %w", opts.Name, err)
	}
	svc, err := netip.ParsePrefix(opts.ServiceCIDR)
	if err != nil || !svc.Addr().Is4() {
		return nil, fmt.Errorf("kubeapi %s: service CIDR %q: want an IPv4 prefix", opts.Name, opts.ServiceCIDR)
	}
	// The apiserver gives the `kubernetes` Service the first address.
	serviceIP := svc.Masked().Addr().Next()
	certPEM, keyPEM, err := cp.pki.serving(int64(idx+2), cp.IP, serviceIP)
	if err != nil {
		return nil, fmt.Errorf("kubeapi %s: %w", opts.Name, err)
	}
	tok, err := randomToken()
	if err != nil {
		return nil, fmt.Errorf("kubeapi %s: %w", opts.Name, err)
	}
	files := map[string][]byte{
		"tls.crt": certPEM,
		"tls.key": keyPEM,
		// token,user,uid,"groups"
		"tokens.csv": []byte(fmt.Sprintf("%s,admin,admin,\"system:masters\"\n", tok)),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, fmt.Errorf("kubeapi %s: %w", opts.Name, err)
		}
	}
	addr := netip.AddrPortFrom(cp.IP, uint16(opts.Port))
	s := &Server{
		Name:       opts.Name,
		Addr:       addr,
		URL:        "https://" + addr.String(),
		ServiceIP:  serviceIP,
		CA:         cp.pki.caPEM,
		AdminToken: tok,
		Dir:        dir,
		LogPath:    filepath.Join(dir, "kube-apiserver.log"),
		cp:         cp,
		args: []string{
			"--etcd-servers=http://127.0.0.1:2379",
			"--etcd-prefix=/registry-" + opts.Name,
			"--bind-address=" + cp.IP.String(),
			"--secure-port=" + strconv.Itoa(opts.Port),
			// v1.37 refuses a loopback advertise address; the underlay
			// address is what a node would use anyway.
			"--advertise-address=" + cp.IP.String(),
			"--service-cluster-ip-range=" + opts.ServiceCIDR,
			"--tls-cert-file=" + filepath.Join(dir, "tls.crt"),
			"--tls-private-key-file=" + filepath.Join(dir, "tls.key"),
			"--cert-dir=" + filepath.Join(dir, "certs"),
			"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + filepath.Join(cp.Dir, "sa.pub"),
			"--service-account-signing-key-file=" + filepath.Join(cp.Dir, "sa.key"),
			// weft's DaemonSet is privileged.
			"--allow-privileged=true",
			// kubectl exec/logs: dial the kubelet at its InternalIP; node
			// names resolve nowhere.
			"--kubelet-preferred-address-types=InternalIP",
			"--profiling=false",
			"--v=1",
		},
	}
	if s.AdminKubeconfig, err = s.writeKubeconfig("admin.kubeconfig", tok); err != nil {
		return nil, err
	}
	cp.mu.Lock()
	cp.servers = append(cp.servers, s)
	cp.mu.Unlock()
	cp.env.Defer("kube-apiserver "+opts.Name, func() error { return s.Stop() })
	if err := s.Restart(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// DialContext dials from inside the control-plane namespace; give it to
// in-process clients (client-go: rest.Config{Host: s.URL, BearerToken: …,
// TLSClientConfig: {CAData: s.CA}, Dial: s.DialContext}). Never dial s.Addr
// from the root namespace: its routes lead off this machine, not to the
// underlay.
func (s *Server) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return s.cp.DialContext(ctx, network, addr)
}

// ControlPlane returns the control plane the server runs in.
func (s *Server) ControlPlane() *ControlPlane { return s.cp }

// PID is the running kube-apiserver's process ID, 0 when stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || !s.proc.Running() {
		return 0
	}
	return s.proc.pid
}

// Restart starts the API server if it is not running (again, after Stop or
// Kill: its objects are in etcd and survive) and waits for /readyz.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	if s.proc != nil && s.proc.Running() {
		s.mu.Unlock()
		return nil
	}
	start := time.Now()
	p, err := startProcess("kube-apiserver "+s.Name, s.cp.NS.Name, s.LogPath, s.cp.env.Tool("kube-apiserver"), s.args...)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("kubeapi %s: %w", s.Name, err)
	}
	s.proc = p
	s.mu.Unlock()
	s.cp.env.Log.Info("kube-apiserver started", "name", s.Name, "pid", p.pid, "url", s.URL, "log", s.LogPath)
	if err := waitHTTP(ctx, s.cp.httpClient(), s.URL+"/readyz", s.AdminToken, p, 60*time.Second); err != nil {
		return fmt.Errorf("kubeapi %s: not ready: %w; log tail:\n%s", s.Name, err, logTail(s.LogPath, 4096))
	}
	s.Startup = time.Since(start)
	s.cp.env.Log.Info("kube-apiserver ready", "name", s.Name, "took", s.Startup.Round(time.Millisecond))
	return nil
}

// Stop sends SIGTERM to the API server (by its PID) and waits.
func (s *Server) Stop() error {
	return s.current().Stop(15 * time.Second)
}

// Kill sends SIGKILL to the API server: the API is gone at once, watches
// break without a goodbye.
func (s *Server) Kill() error {
	return s.current().Kill()
}

// current is the last process started; stop and kill are no-ops on nil.
func (s *Server) current() *Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// Kubeconfig writes a kubeconfig that authenticates with token (from
// Token) and returns its path, for weftd's kubernetes.kubeconfig.
func (s *Server) Kubeconfig(token string) (string, error) {
	name, err := randomToken()
	if err != nil {
		return "", err
	}
	return s.writeKubeconfig("token-"+name[:8]+".kubeconfig", token)
}

func (s *Server) writeKubeconfig(file, token string) (string, error) {
	path := filepath.Join(s.Dir, file)
	if err := os.WriteFile(path, []byte(kubeconfig(s.Name, s.URL, s.CA, token)), 0o600); err != nil {
		return "", fmt.Errorf("kubeapi %s: write kubeconfig: %w", s.Name, err)
	}
	return path, nil
}

// kubeconfig renders a one-cluster kubeconfig; the CA is embedded so that
// the file is usable on its own.
func kubeconfig(name, url string, ca []byte, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: %[2]s
    certificate-authority-data: %[3]s
users:
- name: %[1]s
  user:
    token: %[4]s
contexts:
- name: %[1]s
  context: {cluster: %[1]s, user: %[1]s}
current-context: %[1]s
`, name, url, b64(ca), token)
}

// Kubectl runs kubectl as admin inside the control-plane namespace and
// returns its stdout; the error carries stderr.
func (s *Server) Kubectl(ctx context.Context, args ...string) (string, error) {
	return s.KubectlWith(ctx, s.AdminKubeconfig, nil, args...)
}

// KubectlWith runs kubectl with another kubeconfig (a ServiceAccount's,
// from Kubeconfig) and stdin (nil for none).
func (s *Server) KubectlWith(ctx context.Context, kubeconfig string, stdin []byte, args ...string) (string, error) {
	argv := append([]string{"netns", "exec", s.cp.NS.Name, s.cp.env.Tool("kubectl"),
		"--kubeconfig=" + kubeconfig,
		// Discovery cache in the test's directory, not root's $HOME.
		"--cache-dir=" + filepath.Join(s.Dir, "kubectl-cache"),
	}, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s (server %s): %w: %s", strings.Join(args, " "), s.Name, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Token returns a ServiceAccount token from the TokenRequest API (`kubectl
// create token`), valid for 24 h. The ServiceAccount must exist.
func (s *Server) Token(ctx context.Context, namespace, serviceAccount string) (string, error) {
	out, err := s.Kubectl(ctx, "create", "token", serviceAccount, "--namespace="+namespace, "--duration=24h")
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(out)
	if tok == "" || strings.ContainsAny(tok, " \n") {
		return "", fmt.Errorf("kubectl create token %s/%s: unexpected output %q", namespace, serviceAccount, out)
	}
	return tok, nil
}

// waitHTTP polls url (GET, optional bearer token) every 100 ms until it
// answers 200 "ok", p exits, ctx ends or limit passes.
func waitHTTP(ctx context.Context, c *http.Client, url, token string, p *Process, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := errors.New("no answer yet")
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if resp, err := c.Do(req); err != nil {
			last = err
		} else {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s (pid %d) exited: %v", p.what, p.pid, p.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func randomToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return hex.EncodeToString(b), nil
}
