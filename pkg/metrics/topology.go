package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-net/weft/pkg/api"
)

var (
	descTopoSynced = prometheus.NewDesc(namespace+"_topology_synced",
		"1 when the topology is the source's live view (file: always; kubernetes: both watches up), 0 while stale; reason says why.",
		[]string{"source", "reason"}, nil)
	descTopoSince = prometheus.NewDesc(namespace+"_topology_sync_change_timestamp_seconds",
		"When the topology last became in sync or stale (Unix time).", []string{"source"}, nil)
	descTopoNodes = prometheus.NewDesc(namespace+"_topology_nodes",
		"Nodes of the local cluster in the topology.", []string{"source"}, nil)
	descTopoGateway = prometheus.NewDesc(namespace+"_topology_gateway_info",
		"The local cluster's gateway and the object that named it (value is always 1).", []string{"gateway", "from"}, nil)
	descTopoRemote = prometheus.NewDesc(namespace+"_topology_remote_info",
		"Each remote cluster, its gateway address and the object it came from (value is always 1).", []string{"remote", "gateway_ip", "from"}, nil)
	descTopoProblems = prometheus.NewDesc(namespace+"_topology_problems",
		"Items of the topology the source skipped or doubts (see weftd status).", nil, nil)
)

// topologyCollector exports the status document's topology section.
type topologyCollector struct {
	status func() api.Status
}

func (c *topologyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTopoSynced, descTopoSince, descTopoNodes, descTopoGateway, descTopoRemote, descTopoProblems} {
		ch <- d
	}
}

func (c *topologyCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.status().Topology
	if t == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descTopoSynced, prometheus.GaugeValue, boolValue(t.Synced), t.Source, t.Reason)
	if t.Since != nil {
		ch <- prometheus.MustNewConstMetric(descTopoSince, prometheus.GaugeValue, float64(t.Since.UnixNano())/1e9, t.Source)
	}
	ch <- prometheus.MustNewConstMetric(descTopoNodes, prometheus.GaugeValue, float64(t.Nodes), t.Source)
	if g := t.Gateway; g != nil {
		ch <- prometheus.MustNewConstMetric(descTopoGateway, prometheus.GaugeValue, 1, g.Name, g.From)
	}
	for _, r := range t.Remotes {
		ch <- prometheus.MustNewConstMetric(descTopoRemote, prometheus.GaugeValue, 1, r.ID, r.GatewayIP, r.From)
	}
	ch <- prometheus.MustNewConstMetric(descTopoProblems, prometheus.GaugeValue, float64(len(t.Problems)))
}
