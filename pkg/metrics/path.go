package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-net/weft/pkg/api"
)

var descPathUp = prometheus.NewDesc(namespace+"_path_up",
	"1 while a data-path health target answers its probes, 0 once lossThreshold probes in a row went unanswered; target is gateway/<node>, remote/<cluster> or cable/<cluster>, hop the piece of the path it checks.",
	[]string{"target", "hop"}, nil)

// newPathRTT is the histogram of answered probes' round trips.
func newPathRTT() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "path_rtt_seconds",
		Help:    "Round-trip time of each answered data-path health probe, by target.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 0.1ms … 3.3s
	}, []string{"target"})
}

// ObservePathRTT records one answered probe (pathprobe's ObserveRTT).
func (m *Metrics) ObservePathRTT(target string, rtt time.Duration) {
	m.pathObsMu.Lock()
	o, ok := m.pathObs[target]
	if !ok {
		o = m.pathRTT.WithLabelValues(target)
		m.pathObs[target] = o
	}
	m.pathObsMu.Unlock()
	o.Observe(rtt.Seconds())
}

// pathCollector exports status pathHealth at scrape time.
type pathCollector struct {
	status func() api.Status
}

func (c *pathCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descPathUp }

func (c *pathCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.status().PathHealth
	if h == nil {
		return
	}
	for _, t := range h.Targets {
		ch <- prometheus.MustNewConstMetric(descPathUp, prometheus.GaugeValue, boolValue(t.Up), t.Name, t.Hop)
	}
}
