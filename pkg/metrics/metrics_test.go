package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/weft-net/weft/pkg/api"
)

// fakeStatus is a status source the test changes between scrapes.
type fakeStatus struct {
	mu sync.Mutex
	st api.Status
}

func (f *fakeStatus) get() api.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeStatus) set(fn func(*api.Status)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.st)
}

func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// scrape fetches /metrics over HTTP and parses it with the Prometheus text
// parser.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value returns the value of the sample of family name whose labels
// include want, and whether there is one.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestScrape(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	fs := &fakeStatus{st: api.Status{
		Node: "c1-n2", Cluster: "c1", Role: "non-gateway", PacketFilter: "nftables", Version: "v1",
		Attachments: 3, Spool: api.Spool{Replayed: 7, Dropped: 2},
		LastReconcile: &api.Reconcile{Passes: 2, Triggers: 40},
		Remotes: []api.Remote{
			{ID: "c2", CIDRs: []string{"10.2.0.0/16", "fd00:2::/56"}, RoutesInstalled: false,
				Families: []api.RemoteFamily{{Family: "ipv4", RoutesInstalled: true}, {Family: "ipv6", RoutesInstalled: false}}},
			{ID: "c3", CIDRs: []string{"10.3.0.0/16"}, RoutesInstalled: false},
		},
		Conditions: []api.Condition{{Type: "CNIInterfaceReady", Status: false, Reason: "NotFound", Since: now}},
	}}
	m := New(fs.get)
	ready := func() (bool, string) { st := fs.get(); return st.Ready, "no CNI interface" }
	base := serve(t, NewMux(m, ready))

	m.ReconcileDone(2*time.Millisecond, nil)
	m.ReconcileDone(3*time.Millisecond, errors.New("kernel said no"))
	m.PluginEvent("add", "ok", false)
	m.PluginEvent("add", "ok", false)
	m.PluginEvent("add", "ok", true)
	m.PluginEvent("del", "error", false)
	m.PathReportWrite("RouteAgent", "created")
	m.PathReportWrite("RouteAgent", "updated")
	m.PathReportWrite("RouteAgent", "updated")
	m.PathReportWrite("RouteAgent", "error")

	fams := scrape(t, base)
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"weft_reconcile_duration_seconds", nil, 2},
		{"weft_reconcile_errors_total", nil, 1},
		{"weft_plugin_events_total", map[string]string{"verb": "add", "result": "ok", "source": "socket"}, 2},
		{"weft_plugin_events_total", map[string]string{"verb": "add", "result": "ok", "source": "spool"}, 1},
		{"weft_plugin_events_total", map[string]string{"verb": "del", "result": "error", "source": "socket"}, 1},
		{"weft_path_report_writes_total", map[string]string{"kind": "RouteAgent", "result": "created"}, 1},
		{"weft_path_report_writes_total", map[string]string{"kind": "RouteAgent", "result": "updated"}, 2},
		{"weft_path_report_writes_total", map[string]string{"kind": "RouteAgent", "result": "error"}, 1},
		{"weft_cni_interface_ready", map[string]string{"interface": ""}, 0},
		{"weft_attachments", nil, 3},
		{"weft_spool_replayed_total", nil, 7},
		{"weft_spool_dropped_total", nil, 2},
		{"weft_packet_filter_backend_info", map[string]string{"backend": "nftables"}, 1},
		{"weft_remote_routes_installed", map[string]string{"remote": "c2"}, 0},
		{"weft_remote_family_routes_installed", map[string]string{"remote": "c2", "family": "ipv4"}, 1},
		{"weft_remote_family_routes_installed", map[string]string{"remote": "c2", "family": "ipv6"}, 0},
		{"weft_remote_routes_installed", map[string]string{"remote": "c3"}, 0},
		{"weft_ready", nil, 0},
		{"weft_reconcile_triggers_total", nil, 40},
		{"weft_condition", map[string]string{"type": "CNIInterfaceReady", "reason": "NotFound"}, 0},
		{"weft_node_info", map[string]string{"node": "c1-n2", "cluster": "c1", "role": "non-gateway", "version": "v1"}, 1},
	}
	if _, ok := fams["weft_cni_interface_ipv6_ready"]; ok {
		t.Error("weft_cni_interface_ipv6_ready present without an IPv6 CNI address")
	}
	for _, c := range checks {
		if got, ok := value(fams, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if h := fams["weft_reconcile_duration_seconds"].Metric[0].Histogram; h.GetSampleSum() < 0.004 || h.GetSampleSum() > 0.006 {
		t.Errorf("reconcile duration sum %v, want 0.005", h.GetSampleSum())
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("Go runtime metrics missing")
	}
	if code := get(t, base+api.PathReadyz); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while not ready: %d", code)
	}

	// The status-derived metrics follow the status at the next scrape.
	fs.set(func(st *api.Status) {
		st.Ready = true
		st.CNIInterface = &api.CNIInterface{Name: "vxlan.calico", IP: "10.1.2.0", Source: "well-known", Since: now,
			Name6: "vxlan-v6.calico", IP6: "fd00:1:0:2::", Source6: "well-known"}
		st.Attachments = 4
		st.PacketFilter = "iptables"
		st.Remotes[1].RoutesInstalled = true
	})
	fams = scrape(t, base)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"weft_cni_interface_ready", map[string]string{"interface": "vxlan.calico"}, 1},
		{"weft_cni_interface_ipv6_ready", map[string]string{"interface": "vxlan-v6.calico"}, 1},
		{"weft_attachments", nil, 4},
		{"weft_packet_filter_backend_info", map[string]string{"backend": "iptables"}, 1},
		{"weft_remote_routes_installed", map[string]string{"remote": "c3"}, 1},
		{"weft_ready", nil, 1},
	} {
		if got, ok := value(fams, c.name, c.labels); !ok || got != c.want {
			t.Errorf("after change: %s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if n := len(fams["weft_cni_interface_ready"].Metric); n != 1 {
		t.Errorf("%d CNI interface series, want 1", n)
	}
	if n := len(fams["weft_packet_filter_backend_info"].Metric); n != 1 {
		t.Errorf("%d backend series, want 1", n)
	}
	for path, want := range map[string]int{api.PathHealthz: 200, api.PathReadyz: 200, "/nope": 404} {
		if code := get(t, base+path); code != want {
			t.Errorf("GET %s: %d, want %d", path, code, want)
		}
	}
}

func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}
