// Package metrics exposes weftd's Prometheus metrics. Events the agent
// reports as they happen (reconcile passes, plugin requests) are counted
// through the agent.Observer methods; everything that is a fact about the
// node now (CNI interface, attachments, backend, routes per remote, spool
// counts, conditions) is read from the agent's status document at scrape
// time, so the metrics can never drift from what `weftd status` says.
package metrics

import (
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weft-net/weft/pkg/api"
)

const namespace = "weft"

// Metrics is weftd's registry. It implements agent.Observer.
type Metrics struct {
	// pathReportWrites counts the path health publisher's writes.
	pathReportWrites *prometheus.CounterVec

	reg               *prometheus.Registry
	reconcileDuration prometheus.Histogram
	reconcileErrors   prometheus.Counter
	pluginEvents      *prometheus.CounterVec
	pathRTT           *prometheus.HistogramVec
	// pathObs holds each target's RTT series once looked up: the prober
	// observes every answer, and the label hash and lookup were a
	// noticeable part of a probe round (bench figure 10).
	pathObsMu sync.Mutex
	pathObs   map[string]prometheus.Observer
}

// New returns the registry; status is called on every scrape (it must be
// cheap and safe for concurrent use, like agent.Agent.Status).
func New(status func() api.Status) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		reconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "reconcile_duration_seconds",
			Help:    "Duration of reconcile passes (discover, compute desired state, apply the difference).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5ms … 16s
		}),
		reconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "reconcile_errors_total",
			Help: "Reconcile passes that ended with an error (each is retried with backoff).",
		}),
		pluginEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "plugin_events_total",
			Help: "Requests from the CNI plugin by verb (add, del, check, gc), result (ok, error) and source (socket, spool).",
		}, []string{"verb", "result", "source"}),
		pathRTT: newPathRTT(), pathObs: map[string]prometheus.Observer{},
	}
	m.reg.MustRegister(m.reconcileDuration, m.reconcileErrors, m.pluginEvents, m.pathRTT,
		&statusCollector{status: status}, &topologyCollector{status: status}, &pathCollector{status: status},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	m.pathReportWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "path_report_writes_total",
		Help: "Writes of the node's path health object to the API server by kind (RouteAgent, NodePath) and result (created, updated, error).",
	}, []string{"kind", "result"})
	m.reg.MustRegister(m.pathReportWrites)
	return m
}

// ReconcileDone records one reconcile pass.
func (m *Metrics) ReconcileDone(d time.Duration, err error) {
	m.reconcileDuration.Observe(d.Seconds())
	if err != nil {
		m.reconcileErrors.Inc()
	}
}

// PluginEvent counts one plugin request.
func (m *Metrics) PluginEvent(verb, result string, spooled bool) {
	source := "socket"
	if spooled {
		source = "spool"
	}
	m.pluginEvents.WithLabelValues(verb, result, source).Inc()
}

// PathReportWrite counts one write of the path health object
// (healthpublish.Observer).
func (m *Metrics) PathReportWrite(kind, result string) {
	m.pathReportWrites.WithLabelValues(kind, result).Inc()
}

// Registry is the underlying registry (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

var (
	descCNIReady = prometheus.NewDesc(namespace+"_cni_interface_ready",
		"1 when the node's CNI interface is known; the interface label names it (empty while none is found).",
		[]string{"interface"}, nil)
	descCNIReady6 = prometheus.NewDesc(namespace+"_cni_interface_ipv6_ready",
		"1 when the interface holding the node's CNI IPv6 address is known (dual-stack and IPv6 clusters; absent otherwise); the interface label names it.",
		[]string{"interface"}, nil)
	descAttachments = prometheus.NewDesc(namespace+"_attachments",
		"Pod attachments weftd knows on this node.", nil, nil)
	descSpoolReplayed = prometheus.NewDesc(namespace+"_spool_replayed_total",
		"Plugin events replayed from the spool directory since weftd started.", nil, nil)
	descSpoolDropped = prometheus.NewDesc(namespace+"_spool_dropped_total",
		"Plugin events the plugin could not spool because the spool was full, as counted in the spool.", nil, nil)
	descSpoolSkipped = prometheus.NewDesc(namespace+"_spool_skipped_total",
		"Spool files that could not be read and were set aside.", nil, nil)
	descBackend = prometheus.NewDesc(namespace+"_packet_filter_backend_info",
		"The packet-filter backend in use (value is always 1).", []string{"backend"}, nil)
	descRoutes = prometheus.NewDesc(namespace+"_remote_routes_installed",
		"1 when the routes to a remote cluster's CIDRs are in place.", []string{"remote"}, nil)
	descFamilyRoutes = prometheus.NewDesc(namespace+"_remote_family_routes_installed",
		"1 when the routes to a remote cluster's CIDRs of one address family (ipv4, ipv6) are in place; only the families weft routes for that remote.", []string{"remote", "family"}, nil)
	descReady = prometheus.NewDesc(namespace+"_ready",
		"1 when the node is ready (CNI interface known, last reconcile succeeded, every desired object in place).", nil, nil)
	descCondition = prometheus.NewDesc(namespace+"_condition",
		"Status of each condition (1 true, 0 false); reason names why.", []string{"type", "reason"}, nil)
	descTriggers = prometheus.NewDesc(namespace+"_reconcile_triggers_total",
		"Requests for a reconcile pass (plugin, netlink and config events) since weftd started; many share one pass (weft_reconcile_duration_seconds_count counts the passes).", nil, nil)
	descLeadership = prometheus.NewDesc(namespace+"_gateway_leadership_changes_total",
		"Changes of the gateway Lease holder this weftd saw (kubernetes.endpoints: weft, gateway candidates).", nil, nil)
	descLeading = prometheus.NewDesc(namespace+"_gateway_leading",
		"1 while this node holds the gateway Lease (kubernetes.endpoints: weft).", nil, nil)
	descBrokerErrors = prometheus.NewDesc(namespace+"_broker_sync_errors_total",
		"Failed broker sync passes of this weftd as the leader (kubernetes.endpoints: weft with a broker).", nil, nil)
	descInfo = prometheus.NewDesc(namespace+"_node_info",
		"The node's identity and role (value is always 1).", []string{"node", "cluster", "role", "version"}, nil)
)

// statusCollector turns the status document into metrics at scrape time.
type statusCollector struct {
	status func() api.Status
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCNIReady, descCNIReady6, descAttachments, descSpoolReplayed, descSpoolDropped,
		descSpoolSkipped, descBackend, descRoutes, descFamilyRoutes, descReady, descCondition, descTriggers, descInfo,
		descLeadership, descLeading, descBrokerErrors} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	if st.CNIInterface != nil && st.CNIInterface.Name != "" {
		ch <- prometheus.MustNewConstMetric(descCNIReady, prometheus.GaugeValue, 1, st.CNIInterface.Name)
	} else {
		ch <- prometheus.MustNewConstMetric(descCNIReady, prometheus.GaugeValue, 0, "")
	}
	if st.CNIInterface != nil && st.CNIInterface.IP6 != "" {
		ch <- prometheus.MustNewConstMetric(descCNIReady6, prometheus.GaugeValue, 1, st.CNIInterface.Name6)
	}
	ch <- prometheus.MustNewConstMetric(descAttachments, prometheus.GaugeValue, float64(st.Attachments))
	ch <- prometheus.MustNewConstMetric(descSpoolReplayed, prometheus.CounterValue, float64(st.Spool.Replayed))
	ch <- prometheus.MustNewConstMetric(descSpoolDropped, prometheus.CounterValue, float64(st.Spool.Dropped))
	ch <- prometheus.MustNewConstMetric(descSpoolSkipped, prometheus.CounterValue, float64(st.Spool.Skipped))
	if st.PacketFilter != "" {
		ch <- prometheus.MustNewConstMetric(descBackend, prometheus.GaugeValue, 1, st.PacketFilter)
	}
	for _, r := range st.Remotes {
		ch <- prometheus.MustNewConstMetric(descRoutes, prometheus.GaugeValue, boolValue(r.RoutesInstalled), r.ID)
		for _, f := range r.Families {
			ch <- prometheus.MustNewConstMetric(descFamilyRoutes, prometheus.GaugeValue, boolValue(f.RoutesInstalled), r.ID, f.Family)
		}
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, boolValue(st.Ready))
	for _, cd := range st.Conditions {
		ch <- prometheus.MustNewConstMetric(descCondition, prometheus.GaugeValue, boolValue(cd.Status), cd.Type, cd.Reason)
	}
	if r := st.LastReconcile; r != nil {
		ch <- prometheus.MustNewConstMetric(descTriggers, prometheus.CounterValue, float64(r.Triggers))
	}
	ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, st.Node, st.Cluster, st.Role, st.Version)
	if st.Topology != nil && st.Topology.Control != nil {
		c := st.Topology.Control
		ch <- prometheus.MustNewConstMetric(descLeadership, prometheus.CounterValue, float64(c.LeadershipChanges))
		ch <- prometheus.MustNewConstMetric(descLeading, prometheus.GaugeValue, boolValue(c.Leading))
		if c.Broker != nil {
			ch <- prometheus.MustNewConstMetric(descBrokerErrors, prometheus.CounterValue, float64(c.Broker.Errors))
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// NewMux serves /metrics and the kubelet's probes: /healthz answers while
// the process serves, /readyz only while ready reports true.
func NewMux(m *Metrics, ready func() (bool, string)) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET "+api.PathHealthz, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET "+api.PathReadyz, func(w http.ResponseWriter, r *http.Request) {
		if ok, why := ready(); !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}
