// Package pathreport_test checks pkg/healthpublish against a real
// kube-apiserver (and etcd) in a network namespace: weft's manifests
// applied, Submariner's RouteAgent and Endpoint CRDs installed as
// Submariner's operator would, the publishers authenticated as the
// manifests' ServiceAccount. The snapshots are synthetic (the prober is
// not part of this test); what is checked is what reaches the API server,
// how often, and how soon.
package pathreport_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/kubeapi"
	"github.com/weft-net/weft/integration/scenario"
	"github.com/weft-net/weft/pkg/healthpublish"
	"github.com/weft-net/weft/pkg/kubesource"
	"github.com/weft-net/weft/pkg/pathhealth"
)

const (
	subNS   = "submariner-operator"
	weftNS  = "weft-system"
	nodes   = 5 // synthetic nodes, one publisher each
	steady  = 60 * time.Second
	c2Cable = "submariner-cable-c2-192-168-20-12"
)

// c2Endpoint is cluster c2's gateway Endpoint as Submariner's gateway
// engine writes it.
var c2Endpoint = `apiVersion: submariner.io/v1
kind: Endpoint
metadata:
  name: c2-` + c2Cable + `
  namespace: ` + subNS + `
spec:
  cluster_id: c2
  cable_name: ` + c2Cable + `
  hostname: c2-n2
  subnets: [10.2.0.0/16, 10.102.0.0/16]
  private_ip: 192.168.20.12
  public_ip: 203.0.113.12
  nat_enabled: false
  backend: vxlan
  backend_config: {natt-discovery-port: "4490", udp-port: "4500", preferred-server: "false"}
  healthCheckIP: 10.2.0.1
`

type fixture struct {
	srv  *kubeapi.Server
	rest *rest.Config // the weft ServiceAccount's
	src  *kubesource.Source
	log  *slog.Logger
}

func setup(t *testing.T, ctx context.Context) *fixture {
	t.Helper()
	env := harness.NewTestEnv(t)
	if m := kubeapi.MissingTools(env); len(m) > 0 {
		t.Skipf("%s not built in %s (make kubetools)", strings.Join(m, ", "), env.ToolsDir)
	}
	u, err := harness.NewUnderlay(env)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := kubeapi.Start(ctx, env, u, kubeapi.Options{}, kubeapi.ServerOptions{Name: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.InstallSubmarinerCRD(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := srv.Kubectl(ctx, "apply", "-f", scenario.ManifestsDir(env)); err != nil {
		t.Fatalf("apply weft's manifests: %v\n%s", err, out)
	}
	if _, err := srv.Kubectl(ctx, "create", "namespace", subNS); err != nil {
		t.Fatal(err)
	}
	if out, err := srv.KubectlWith(ctx, srv.AdminKubeconfig, []byte(c2Endpoint), "apply", "-f", "-"); err != nil {
		t.Fatalf("c2's Endpoint: %v\n%s", err, out)
	}
	tok, err := srv.Token(ctx, weftNS, "weft")
	if err != nil {
		t.Fatal(err)
	}
	rc := &rest.Config{Host: srv.URL, BearerToken: tok, TLSClientConfig: rest.TLSClientConfig{CAData: srv.CA}, Dial: srv.DialContext}
	f := &fixture{srv: srv, rest: rc, log: env.Log}
	// The real topology source supplies the remote Endpoint specs, from its
	// watch cache.
	f.src, err = kubesource.New(kubesource.Options{Rest: rc, ClusterID: "c1", Namespace: subNS, StateDir: t.TempDir(), Log: env.Log.With("component", "topology")})
	if err != nil {
		t.Fatal(err)
	}
	go f.src.Run(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, ok := f.src.RemoteEndpoint("c2"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the topology source never listed c2's Endpoint")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return f
}

// node is one synthetic weftd: its publisher and a feeder that hands it a
// snapshot every 100 ms with jittering RTTs, as a prober would.
type node struct {
	name string
	pub  *healthpublish.Publisher
	done chan struct{}
	stop context.CancelFunc // ends the publisher and its feeder: the node goes away

	mu     sync.Mutex
	c2Up   bool
	rounds int
}

func (f *fixture) start(t *testing.T, ctx context.Context, name string, kind healthpublish.Kind) *node {
	t.Helper()
	ns := subNS
	if kind == healthpublish.KindNodePath {
		ns = weftNS
	}
	return f.startIn(t, ctx, name, kind, ns)
}

func (f *fixture) startIn(t *testing.T, ctx context.Context, name string, kind healthpublish.Kind, ns string) *node {
	t.Helper()
	pub, err := healthpublish.New(healthpublish.Options{
		Kind: kind, Rest: f.rest, Namespace: ns, Node: name, Version: "v0.1.0-test",
		Endpoints: f.src.RemoteEndpoint, Log: f.log.With("node", name),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(ctx)
	n := &node{name: name, pub: pub, done: make(chan struct{}), stop: stop, c2Up: true}
	go func() {
		defer close(n.done)
		pub.Run(ctx)
	}()
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				pub.Publish(n.snapshot())
			}
		}
	}()
	return n
}

func (n *node) setC2(up bool) {
	n.mu.Lock()
	n.c2Up = up
	n.mu.Unlock()
	n.pub.Publish(n.snapshot())
}

var since = time.Now().UTC().Truncate(time.Second)

// snapshot: the gateway and c2 answer (unless c2 was set down), c3 never
// does (and has no Endpoint); RTTs move every round.
func (n *node) snapshot() pathhealth.Snapshot {
	n.mu.Lock()
	n.rounds++
	r, c2Up := n.rounds, n.c2Up
	n.mu.Unlock()
	rtt := func(base time.Duration) pathhealth.RTT {
		j := time.Duration(r%7) * 13 * time.Microsecond
		return pathhealth.RTT{Last: base + j, Min: base / 2, Mean: base + j/2, Max: 2*base + j, StdDev: base/10 + j/3}
	}
	ts := func(name string, hop pathhealth.Hop, cluster, node, addr string, up bool, base time.Duration) pathhealth.TargetStatus {
		s := pathhealth.TargetStatus{
			Target: pathhealth.Target{Name: name, Hop: hop, Cluster: cluster, Node: node, Address: netip.MustParseAddrPort(addr), Source: netip.MustParseAddr("10.1.3.1")},
			Up:     up, Since: since, Sent: uint64(r),
		}
		if up {
			s.RTT = rtt(base)
		} else {
			s.Lost, s.Message = uint64(r), "5 probes in a row unanswered: check the remote gateway's filter for UDP 4803"
		}
		return s
	}
	return pathhealth.Snapshot{At: time.Now(), Node: n.name, Cluster: "c1", Targets: []pathhealth.TargetStatus{
		ts("gateway/c1-n2", pathhealth.HopGateway, "c1", "c1-n2", "192.168.10.12:4803", true, 300*time.Microsecond),
		ts("remote/c2", pathhealth.HopRemote, "c2", "c2-n2", "10.2.0.1:4803", c2Up, 900*time.Microsecond),
		ts("remote/c3", pathhealth.HopRemote, "c3", "c3-n2", "10.3.0.1:4803", false, 0),
	}}
}

// getJSON is kubectl get -o json as the cluster's admin: the object as
// stored, independent of the publisher's client.
// createNode makes a Node object as the kubelet registers one and returns
// its UID.
func (f *fixture) createNode(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	doc := fmt.Sprintf(`{"apiVersion":"v1","kind":"Node","metadata":{"name":%q}}`, name)
	if out, err := f.srv.KubectlWith(ctx, f.srv.AdminKubeconfig, []byte(doc), "create", "-f", "-"); err != nil {
		t.Fatalf("create node %s: %v\n%s", name, err, out)
	}
	out, err := f.srv.Kubectl(ctx, "get", "node", name, "-o", "jsonpath={.metadata.uid}")
	if err != nil || strings.TrimSpace(out) == "" {
		t.Fatalf("uid of node %s: %v %q", name, err, out)
	}
	return strings.TrimSpace(out)
}

// owners renders an object's owner references as apiVersion/kind/name/uid,
// comma-separated.
func (f *fixture) owners(t *testing.T, ctx context.Context, resource, ns, name string) string {
	t.Helper()
	data, err := f.getJSON(ctx, resource, ns, name)
	if err != nil {
		t.Fatalf("get %s %s/%s: %v", resource, ns, name, err)
	}
	var o struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if err := json.Unmarshal(data, &o); err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, r := range o.Metadata.OwnerReferences {
		refs = append(refs, fmt.Sprintf("%s/%s/%s/%s", r.APIVersion, r.Kind, r.Name, r.UID))
	}
	return strings.Join(refs, ",")
}

func (f *fixture) getJSON(ctx context.Context, resource, ns, name string) ([]byte, error) {
	out, err := f.srv.Kubectl(ctx, "get", resource, "-n", ns, name, "-o", "json")
	return []byte(out), err
}

// strictDecode decodes an object and fails on any field the type lacks:
// every field the server stored is one weft's types know.
func strictDecode(t *testing.T, data []byte, into any) {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(into); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
}

func waitFor(ctx context.Context, limit time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if ok() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ok()
}

// TestRouteAgent: five synthetic nodes write their RouteAgents (endpoints:
// submariner); the stored objects decode with weft's types field by field
// as Submariner's schema has them; 60 s of steady state with RTTs moving
// every 100 ms cost at most one write per node; a change is written at
// once; with the API server stopped nothing crashes, and the latest state
// is written once it is back.
func TestRouteAgent(t *testing.T) {
	t.Parallel() // each test has its own API server; the 60 s steady state dominates
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f := setup(t, ctx)
	uid := f.createNode(t, ctx, "c1-n1")
	var ns []*node
	for i := range nodes {
		ns = append(ns, f.start(t, ctx, fmt.Sprintf("c1-n%d", i+1), healthpublish.KindRouteAgent))
	}
	for _, n := range ns {
		if !waitFor(ctx, 30*time.Second, func() bool { _, err := f.getJSON(ctx, "routeagents.submariner.io", subNS, n.name); return err == nil }) {
			t.Fatalf("%s: no RouteAgent after 30 s (publisher: %+v)", n.name, n.pub.Stats())
		}
	}
	checkRouteAgentFields(t, ctx, f, ns[0].name)
	// Owned by its Node where there is one (the garbage collector deletes
	// it with the Node: TestNodePath), by nothing where there is none.
	if got := f.owners(t, ctx, "routeagents.submariner.io", subNS, "c1-n1"); got != "v1/Node/c1-n1/"+uid {
		t.Errorf("RouteAgent c1-n1 owners %q, want its Node (uid %s)", got, uid)
	}
	if got := f.owners(t, ctx, "routeagents.submariner.io", subNS, "c1-n3"); got != "" {
		t.Errorf("RouteAgent c1-n3 owners %q, want none (no Node c1-n3)", got)
	}
	checkSchemaRefuses(t, ctx, f)
	t.Run("steady-state", func(t *testing.T) { checkSteadyState(t, ctx, f, ns) })
	t.Run("change", func(t *testing.T) { checkChange(t, ctx, f, ns[1]) })
	t.Run("api-away", func(t *testing.T) { checkAPIAway(t, ctx, f, ns[2]) })
	t.Run("submariner-route-agent-on-the-node", func(t *testing.T) { checkForeign(t, ctx, f) })
}

// checkForeign: where Submariner's route agent runs too and keeps the
// node's RouteAgent fresh, weft leaves it alone (and says why); one left
// behind, older than three refresh intervals, weft takes over.
func checkForeign(t *testing.T, ctx context.Context, f *fixture) {
	const name = "c1-n9"
	doc := fmt.Sprintf(`{"apiVersion":"submariner.io/v1","kind":"RouteAgent","metadata":{"name":%q,"namespace":%q,"annotations":{%q:%q}},"status":{"version":"v0.20.1","statusFailure":"","remoteEndpoints":[]}}`,
		name, subNS, healthpublish.UpdateTimestampAnnotation, strconv.FormatInt(time.Now().Unix(), 10))
	if out, err := f.srv.KubectlWith(ctx, f.srv.AdminKubeconfig, []byte(doc), "create", "-f", "-"); err != nil {
		t.Fatalf("Submariner's RouteAgent: %v %s", err, out)
	}
	n := f.start(t, ctx, name, healthpublish.KindRouteAgent)
	if !waitFor(ctx, 10*time.Second, func() bool { return n.pub.Stats().Errors > 0 }) {
		t.Fatalf("no refused write after 10 s: %+v", n.pub.Stats())
	}
	time.Sleep(2 * time.Second)
	if ra := f.routeAgent(t, ctx, name); ra.Status.Version != "v0.20.1" {
		t.Errorf("weft overwrote the RouteAgent Submariner's route agent keeps: version %q", ra.Status.Version)
	}
	st := n.pub.Stats()
	if st.Writes != 0 || !strings.Contains(st.LastError, "kept by another route agent") {
		t.Errorf("publisher %+v, want no write and the reason", st)
	}
	t.Logf("Submariner's RouteAgent kept: %d writes refused: %s", st.Errors, st.LastError)
	old := strconv.FormatInt(time.Now().Add(-3*healthpublish.DefaultInterval-time.Minute).Unix(), 10)
	if out, err := f.srv.Kubectl(ctx, "annotate", "--overwrite", "-n", subNS, "routeagents.submariner.io/"+name, healthpublish.UpdateTimestampAnnotation+"="+old); err != nil {
		t.Fatalf("age Submariner's RouteAgent: %v %s", err, out)
	}
	start := time.Now()
	if !waitFor(ctx, 30*time.Second, func() bool { return f.routeAgent(t, ctx, name).Status.Version == "weft v0.1.0-test" }) {
		t.Errorf("a RouteAgent left behind (update-timestamp 4 min old) not taken over after 30 s: %+v", n.pub.Stats())
	}
	t.Logf("a RouteAgent left behind taken over %s after it went stale (retry backoff)", time.Since(start).Round(time.Millisecond))
}

func (f *fixture) routeAgent(t *testing.T, ctx context.Context, name string) healthpublish.RouteAgent {
	t.Helper()
	data, err := f.getJSON(ctx, "routeagents.submariner.io", subNS, name)
	if err != nil {
		t.Fatal(err)
	}
	var ra healthpublish.RouteAgent
	strictDecode(t, data, &ra)
	return ra
}

// checkRouteAgentFields checks every field of a stored RouteAgent.
func checkRouteAgentFields(t *testing.T, ctx context.Context, f *fixture, name string) {
	data, err := f.getJSON(ctx, "routeagents.submariner.io", subNS, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RouteAgent as stored:\n%s", data)
	var ra healthpublish.RouteAgent
	strictDecode(t, data, &ra)
	if ra.APIVersion != "submariner.io/v1" || ra.Kind != "RouteAgent" || ra.Name != name || ra.Namespace != subNS {
		t.Errorf("identity %s %s %s/%s", ra.APIVersion, ra.Kind, ra.Namespace, ra.Name)
	}
	ts, err := strconv.ParseInt(ra.Annotations[healthpublish.UpdateTimestampAnnotation], 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
		t.Errorf("annotation %s=%q: want the write's Unix time", healthpublish.UpdateTimestampAnnotation, ra.Annotations[healthpublish.UpdateTimestampAnnotation])
	}
	st := ra.Status
	if st.Version != "weft v0.1.0-test" || st.StatusFailure != "" || len(st.RemoteEndpoints) != 2 {
		t.Fatalf("status version %q statusFailure %q, %d remote endpoints, want weft's version, \"\", 2", st.Version, st.StatusFailure, len(st.RemoteEndpoints))
	}
	c2, c3 := st.RemoteEndpoints[0], st.RemoteEndpoints[1]
	wantC2 := healthpublish.EndpointSpec{
		ClusterID: "c2", CableName: c2Cable, HealthCheckIP: "10.2.0.1", Hostname: "c2-n2", Subnets: []string{"10.2.0.0/16", "10.102.0.0/16"},
		PrivateIP: "192.168.20.12", PublicIP: "203.0.113.12", NATEnabled: false, Backend: "vxlan",
		BackendConfig: map[string]string{"natt-discovery-port": "4490", "udp-port": "4500", "preferred-server": "false"},
	}
	if c2.Status != healthpublish.Connected || c2.StatusMessage != "" || fmt.Sprint(c2.Spec) != fmt.Sprint(wantC2) {
		t.Errorf("c2: status %q message %q spec %+v, want connected, \"\", %+v", c2.Status, c2.StatusMessage, c2.Spec, wantC2)
	}
	for _, e := range []healthpublish.RemoteEndpoint{c2, c3} {
		l := e.LatencyRTT
		if l == nil {
			t.Errorf("%s: no latencyRTT", e.Spec.ClusterID)
			continue
		}
		for what, v := range map[string]string{"last": l.Last, "min": l.Min, "average": l.Average, "max": l.Max, "stdDev": l.StdDev} {
			if _, err := time.ParseDuration(v); err != nil {
				t.Errorf("%s latencyRTT.%s %q is not a Go duration, as Submariner formats it", e.Spec.ClusterID, what, v)
			}
		}
	}
	if d, _ := time.ParseDuration(c2.LatencyRTT.Min); d != 450*time.Microsecond {
		t.Errorf("c2 latencyRTT.min %q, want 450µs", c2.LatencyRTT.Min)
	}
	// c3 has no Endpoint: what the target says, the schema's required
	// fields present, and the failing hop and the prober's words.
	if c3.Status != healthpublish.ConnectionError || c3.Spec.ClusterID != "c3" || c3.Spec.Hostname != "c3-n2" || c3.Spec.Subnets == nil ||
		!strings.Contains(c3.StatusMessage, "this node → cluster c3 through the gateway (10.3.0.1:4803) unreachable: 5 probes in a row unanswered") {
		t.Errorf("c3: %+v", c3)
	}
}

// checkSchemaRefuses: the test CRD holds Submariner's required fields, so
// the acceptance above means something: an entry without spec.backend, or
// a status without version, is refused.
func checkSchemaRefuses(t *testing.T, ctx context.Context, f *fixture) {
	for field, doc := range map[string]string{
		"backend": `{"apiVersion":"submariner.io/v1","kind":"RouteAgent","metadata":{"name":"bad","namespace":"` + subNS + `"},"status":{"version":"x","statusFailure":"","remoteEndpoints":[{"status":"connected","statusMessage":"","spec":{"cluster_id":"c2","cable_name":"","hostname":"h","subnets":[],"nat_enabled":false}}]}}`,
		"version": `{"apiVersion":"submariner.io/v1","kind":"RouteAgent","metadata":{"name":"bad","namespace":"` + subNS + `"},"status":{"statusFailure":"","remoteEndpoints":[]}}`,
	} {
		out, err := f.srv.KubectlWith(ctx, f.srv.AdminKubeconfig, []byte(doc), "create", "-f", "-")
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("a RouteAgent without %s: %v %s, want refused naming it", field, err, out)
		}
	}
}

// counter counts the writes the API server stored, per object, from a
// watch.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (f *fixture) watchCount(t *testing.T, ctx context.Context, gv schema.GroupVersion, resource, ns string, add func(*runtime.Scheme) error) *counter {
	t.Helper()
	admin := rest.CopyConfig(f.rest)
	admin.BearerToken = f.srv.AdminToken
	c, err := kubesource.JSONClient(admin, gv, add)
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Get().Namespace(ns).Resource(resource).VersionedParams(&metav1.ListOptions{Watch: true, ResourceVersion: "0"}, metav1.ParameterCodec).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	k := &counter{n: map[string]int{}}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			if ev.Type != watch.Modified {
				continue
			}
			o, ok := ev.Object.(metav1.Object)
			if !ok {
				continue
			}
			k.mu.Lock()
			k.n[o.GetName()]++
			k.mu.Unlock()
		}
	}()
	return k
}

func (k *counter) get(name string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.n[name]
}

// checkSteadyState: 60 s of snapshots every 100 ms per node whose RTTs move
// every time cost at most one write per node (the once-a-minute refresh).
func checkSteadyState(t *testing.T, ctx context.Context, f *fixture, ns []*node) {
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	k := f.watchCount(t, wctx, kubesource.SubmarinerGroupVersion, "routeagents", subNS, healthpublish.AddRouteAgentTypes)
	before := map[string]uint64{}
	rounds := map[string]int{}
	for _, n := range ns {
		before[n.name] = n.pub.Stats().Writes
		n.mu.Lock()
		rounds[n.name] = n.rounds
		n.mu.Unlock()
	}
	time.Sleep(steady)
	total := 0
	for _, n := range ns {
		writes := n.pub.Stats().Writes - before[n.name]
		n.mu.Lock()
		handed := n.rounds - rounds[n.name]
		n.mu.Unlock()
		stored := k.get(n.name)
		total += int(writes)
		t.Logf("%s: %d snapshots handed over in %s, %d writes by the publisher, %d updates stored by the API server", n.name, handed, steady, writes, stored)
		if writes > 1 || stored > 1 {
			t.Errorf("%s: %d writes (%d stored) in %s of steady state, want at most 1", n.name, writes, stored, steady)
		}
		if handed < int(steady/(200*time.Millisecond)) {
			t.Errorf("%s: only %d snapshots handed over: the test did not exercise the publisher", n.name, handed)
		}
	}
	t.Logf("steady state: %d writes for %d nodes in %s (%.3f writes/s/node; 5,000 nodes: %.0f writes/s)",
		total, len(ns), steady, float64(total)/float64(len(ns))/steady.Seconds(), 5000*float64(total)/float64(len(ns))/steady.Seconds())
}

// checkChange: c2 going down (and coming back) is in the stored object at
// once, not at the next refresh. The object is read in-process as the
// admin (a GET takes milliseconds; a kubectl process per poll would add
// its own start-up on a loaded machine).
func checkChange(t *testing.T, ctx context.Context, f *fixture, n *node) {
	admin := rest.CopyConfig(f.rest)
	admin.BearerToken = f.srv.AdminToken
	c, err := kubesource.JSONClient(admin, kubesource.SubmarinerGroupVersion, healthpublish.AddRouteAgentTypes)
	if err != nil {
		t.Fatal(err)
	}
	for _, up := range []bool{false, true} {
		want := healthpublish.ConnectionError
		if up {
			want = healthpublish.Connected
		}
		start := time.Now()
		n.setC2(up)
		ok := waitFor(ctx, 10*time.Second, func() bool {
			var ra healthpublish.RouteAgent
			err := c.Get().Namespace(subNS).Resource("routeagents").Name(n.name).Do(ctx).Into(&ra)
			return err == nil && len(ra.Status.RemoteEndpoints) == 2 && ra.Status.RemoteEndpoints[0].Status == want
		})
		took := time.Since(start)
		t.Logf("%s: c2 %s stored %s after the snapshot said so", n.name, want, took.Round(time.Millisecond))
		if !ok || took > 2*time.Second {
			t.Errorf("%s: c2 %s not stored within 2 s (%s; publisher %+v)", n.name, want, took, n.pub.Stats())
		}
	}
}

// checkAPIAway: the API server killed, a change comes; the publisher
// keeps running and retrying; the server back, the change is written.
func checkAPIAway(t *testing.T, ctx context.Context, f *fixture, n *node) {
	if err := f.srv.Kill(); err != nil {
		t.Fatal(err)
	}
	before := n.pub.Stats().Errors
	n.setC2(false)
	time.Sleep(8 * time.Second)
	st := n.pub.Stats()
	select {
	case <-n.done:
		t.Fatal("the publisher stopped while the API server was away")
	default:
	}
	if st.Errors <= before {
		t.Errorf("no failed write while the API server was away: %+v", st)
	}
	t.Logf("API server away 8 s: %d failed attempts (backoff), last error %q", st.Errors-before, st.LastError)
	start := time.Now()
	if err := f.srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Since(start)
	ok := waitFor(ctx, 30*time.Second, func() bool {
		data, err := f.getJSON(ctx, "routeagents.submariner.io", subNS, n.name)
		if err != nil {
			return false
		}
		var ra healthpublish.RouteAgent
		return json.Unmarshal(data, &ra) == nil && len(ra.Status.RemoteEndpoints) == 2 && ra.Status.RemoteEndpoints[0].Status == healthpublish.ConnectionError
	})
	t.Logf("API server restarted in %s; the change kept while it was away stored %s after that", restarted.Round(time.Millisecond), (time.Since(start) - restarted).Round(time.Millisecond))
	if !ok {
		t.Errorf("%s: the change made while the API server was away is not stored 30 s after its return (publisher %+v)", n.name, n.pub.Stats())
	}
}

// TestNodePath: endpoints: weft writes weft's own NodePath through its
// status subresource; the stored object decodes strictly with weft's types
// and names the failing hop in its conditions; the CRD's schema refuses a
// malformed status.
func TestNodePath(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := setup(t, ctx)
	n := f.start(t, ctx, "c1-n1", healthpublish.KindNodePath)
	get := func() (healthpublish.NodePath, []byte, error) {
		var np healthpublish.NodePath
		data, err := f.getJSON(ctx, "nodepaths.weft.dev", weftNS, n.name)
		if err == nil {
			err = json.Unmarshal(data, &np)
		}
		return np, data, err
	}
	if !waitFor(ctx, 30*time.Second, func() bool { np, _, err := get(); return err == nil && len(np.Status.Targets) == 3 }) {
		t.Fatalf("no NodePath status after 30 s (publisher %+v)", n.pub.Stats())
	}
	_, data, _ := get()
	t.Logf("NodePath as stored:\n%s", data)
	var np healthpublish.NodePath
	strictDecode(t, data, &np)
	st := np.Status
	if st.Node != "c1-n1" || st.Cluster != "c1" || st.ObservedTime.IsZero() || len(st.Conditions) != 2 {
		t.Fatalf("status %+v", st)
	}
	gw, rem := st.Conditions[0], st.Conditions[1]
	if gw.Type != healthpublish.CondGatewayReachable || gw.Status != metav1.ConditionTrue {
		t.Errorf("GatewayReachable %+v", gw)
	}
	if rem.Type != healthpublish.CondRemotesReachable || rem.Status != metav1.ConditionFalse || rem.Reason != "RemoteUnreachable" || !strings.Contains(rem.Message, "cluster c3") || strings.Contains(rem.Message, "cluster c2") {
		t.Errorf("RemotesReachable %+v, want False naming c3 only", rem)
	}
	c2 := st.Targets[1]
	if c2.Name != "remote/c2" || c2.Hop != "node-to-remote" || c2.Cluster != "c2" || c2.Node != "c2-n2" || c2.Address != "10.2.0.1:4803" || c2.Source != "10.1.3.1" ||
		!c2.Up || c2.Since.IsZero() || c2.RTT.Min != "450µs" || c2.Sent == 0 || c2.Lost != 0 || c2.Message != "" {
		t.Errorf("target remote/c2 %+v", c2)
	}
	// No Node object yet: no owner. The Node appears; the next write (c2
	// going down, below) adopts the object, through a PUT of the object
	// itself since PUT …/status ignores metadata.
	if got := f.owners(t, ctx, "nodepaths.weft.dev", weftNS, n.name); got != "" {
		t.Errorf("NodePath owners %q before any Node exists", got)
	}
	uid := f.createNode(t, ctx, n.name)
	// c2 down: the condition names it too, at once.
	start := time.Now()
	n.setC2(false)
	if !waitFor(ctx, 10*time.Second, func() bool {
		np, _, err := get()
		return err == nil && len(np.Status.Conditions) == 2 && strings.Contains(np.Status.Conditions[1].Message, "cluster c2")
	}) {
		t.Errorf("c2 down not in the NodePath after 10 s (publisher %+v)", n.pub.Stats())
	}
	t.Logf("c2 down stored in the NodePath %s after the snapshot said so", time.Since(start).Round(time.Millisecond))
	if got := f.owners(t, ctx, "nodepaths.weft.dev", weftNS, n.name); got != "v1/Node/"+n.name+"/"+uid {
		t.Errorf("NodePath owners %q after a write with the Node present, want its Node (uid %s)", got, uid)
	}
	out, err := f.srv.Kubectl(ctx, "get", "nodepaths.weft.dev", "-n", weftNS)
	if err != nil || !strings.Contains(out, "c1-n1") || !strings.Contains(out, "RemoteUnreachable") {
		t.Errorf("kubectl get nodepaths: %v\n%s", err, out)
	}
	t.Logf("kubectl get nodepaths:\n%s", out)

	// Refused by RBAC (a namespace the Role does not cover): no crash, the
	// retries back off (towards once a minute: TestRetryDelay), the
	// reason is in the stats.
	if _, err := f.srv.Kubectl(ctx, "create", "namespace", "other"); err != nil {
		t.Fatal(err)
	}
	o := f.startIn(t, ctx, "c1-n7", healthpublish.KindNodePath, "other")
	time.Sleep(20 * time.Second)
	if st := o.pub.Stats(); st.Errors == 0 || st.Errors > 7 || st.Writes != 0 || !strings.Contains(st.LastError, "forbidden") {
		t.Errorf("NodePath in a namespace weft may not write: %+v, want 1-7 forbidden attempts in 20 s", st)
	} else {
		t.Logf("refused by RBAC: %d attempts in 20 s (%s)", st.Errors, st.LastError)
	}

	// The node leaves: its weftd stops and its Node is deleted; the real
	// garbage collector (kube-controller-manager) deletes the NodePath
	// with it, instead of leaving one object per departed node.
	t.Run("node-deleted", func(t *testing.T) {
		n.stop()
		<-n.done
		if err := f.srv.StartControllers(ctx); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if out, err := f.srv.Kubectl(ctx, "delete", "node", n.name); err != nil {
			t.Fatalf("delete node: %v\n%s", err, out)
		}
		if !waitFor(ctx, 60*time.Second, func() bool {
			_, err := f.getJSON(ctx, "nodepaths.weft.dev", weftNS, n.name)
			return err != nil && strings.Contains(err.Error(), "NotFound")
		}) {
			_, err := f.getJSON(ctx, "nodepaths.weft.dev", weftNS, n.name)
			t.Fatalf("NodePath %s still there 60 s after its Node was deleted (%v)", n.name, err)
		}
		t.Logf("Node %s deleted -> its NodePath deleted by the garbage collector after %s", n.name, time.Since(start).Round(time.Millisecond))
	})
	if t.Failed() {
		return
	}
	n = f.start(t, ctx, n.name, healthpublish.KindNodePath)
	if !waitFor(ctx, 30*time.Second, func() bool { np, _, err := get(); return err == nil && len(np.Status.Targets) == 3 }) {
		t.Fatalf("no NodePath status after 30 s (publisher %+v)", n.pub.Stats())
	}

	// The schema refuses what no weftd writes.
	_, stored, _ := get()
	var compact bytes.Buffer
	if err := json.Compact(&compact, stored); err != nil {
		t.Fatal(err)
	}
	good := compact.Bytes()
	for _, b := range []struct{ from, to, field string }{
		{`"hop":"node-to-remote"`, `"hop":"sideways"`, "hop"},
		{`"type":"GatewayReachable"`, `"type":"Happy"`, "type"},
		{`"node":"c1-n1"`, `"node":""`, "node"},
	} {
		doc := strings.Replace(string(good), b.from, b.to, 1)
		if doc == string(good) {
			t.Fatalf("%s not in the stored object", b.from)
		}
		out, err := f.srv.KubectlWith(ctx, f.srv.AdminKubeconfig, []byte(doc), "replace", "--subresource=status", "-f", "-")
		if err == nil || !strings.Contains(err.Error(), b.field) {
			t.Errorf("status with %s: %v %s, want refused naming %s", b.to, err, out, b.field)
		}
	}
}
