package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/toposource"
)

// CondTopologySynced says whether the topology is the source's live view
// (topology: kubernetes only; the file is always in sync).
const CondTopologySynced = "TopologySynced"

// errNoTopology: the source has nothing yet (first start, API away, no
// persisted topology). The pass waits; nothing is torn down.
var errNoTopology = errors.New("no topology yet: waiting for the Kubernetes API (nothing persisted in stateDir)")

// withTopology returns the configuration the pass computes the desired
// state from: cfg itself for the file source, else cfg with the source's
// nodes, gateway and remotes. It records the TopologySynced condition.
func (a *Agent) withTopology(cfg *config.Config) (*config.Config, error) {
	if !cfg.FromAPI() {
		a.mu.Lock()
		a.topoProblems = nil
		a.mu.Unlock()
		return cfg, nil
	}
	if a.d.Topology == nil {
		return cfg, errors.New("topology: kubernetes: this weftd has no Kubernetes topology source")
	}
	src, err := a.d.Topology(cfg)
	if src == nil {
		return cfg, err
	}
	// A source that runs with settings of an earlier configuration keeps
	// serving its topology; the error (a restart needed) is a problem.
	var restart []string
	if err != nil {
		restart = []string{err.Error()}
	}
	t, ok := src.Current()
	a.setTopologyCond(t.Sync)
	if !ok {
		return cfg, errNoTopology
	}
	eff, problems := toposource.Apply(cfg, t)
	if all := append(append([]string(nil), t.Problems...), problems...); len(all) > 0 {
		a.d.Log.Debug("topology problems", "problems", strings.Join(all, "; "))
	}
	a.mu.Lock()
	a.topoProblems = append(append(restart, t.Problems...), problems...)
	if r := roleOf(eff); r != a.role {
		a.d.Log.Info("role changed", "role", r, "gateway", eff.Cluster.Gateway, "from", t.Gateway.From)
		a.role = r
	}
	a.mu.Unlock()
	return eff, nil
}

func (a *Agent) setTopologyCond(s toposource.Sync) {
	fix := ""
	if !s.Synced {
		fix = "check that the API server is reachable from this node and that weft's ServiceAccount may list and watch nodes and Submariner endpoints (daemon/deploy/); weft keeps the data plane as last seen meanwhile"
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.conds[CondTopologySynced] = api.Condition{
		Type: CondTopologySynced, Status: s.Synced, Reason: s.Reason, Message: s.Message, Fix: fix, Since: s.Since,
	}
}

// WatchTopology triggers a pass at once whenever the source's topology or sync
// state changes, until ctx ends.
func (a *Agent) WatchTopology(ctx context.Context) {
	if a.d.TopologyChanged == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.d.TopologyChanged:
			// A joined node must be in the gateway's FDB within a second:
			// no MinSyncPeriod wait (the source coalesces its own bursts).
			a.TriggerNow()
		}
	}
}

// topologyStatus is the status document's view of the topology source:
// which source, in sync since when, how many nodes, and where the gateway
// and each remote came from.
func (a *Agent) topologyStatus(cfg *config.Config) *api.Topology {
	if cfg == nil {
		return nil // no valid configuration yet: no source either
	}
	var t toposource.Topology
	if a.d.Topology != nil && cfg.FromAPI() {
		if src, err := a.d.Topology(cfg); src != nil {
			t, _ = src.Current()
		} else if err != nil {
			t.Sync.Reason, t.Sync.Message = "Unavailable", err.Error()
		}
	} else {
		t = toposource.FromConfig(cfg)
	}
	st := &api.Topology{
		Source: cfg.Topology, Synced: t.Sync.Synced, Reason: t.Sync.Reason, Message: t.Sync.Message,
		Nodes: len(t.Nodes), Problems: t.Problems,
	}
	if st.Source == "" {
		st.Source = toposource.File
	}
	if !t.Sync.Since.IsZero() {
		since := t.Sync.Since
		st.Since = &since
	}
	if t.Gateway.Name != "" {
		st.Gateway = &api.TopologyGateway{Name: t.Gateway.Name, From: t.Gateway.From}
		if t.Gateway.IP.IsValid() {
			st.Gateway.IP = t.Gateway.IP.String()
		}
		if t.Gateway.IP6.IsValid() {
			st.Gateway.IP6 = t.Gateway.IP6.String()
		}
	}
	if c := t.Control; c != nil {
		st.Control = &api.TopologyControl{Candidate: c.Candidate, Leading: c.Leading, LeaseHolder: c.LeaseHolder, LeadershipChanges: c.LeadershipChanges, Message: c.Message}
		if !c.LeaseRenewTime.IsZero() {
			rt := c.LeaseRenewTime
			st.Control.LeaseRenewTime = &rt
		}
		if c.Broker {
			b := &api.BrokerSync{Synced: c.BrokerSynced, Reason: c.BrokerReason, Message: c.BrokerMessage, Remotes: c.BrokerRemotes, Errors: c.BrokerSyncErrors}
			if !c.BrokerSince.IsZero() {
				since := c.BrokerSince
				b.Since = &since
			}
			if !c.BrokerLastSync.IsZero() {
				ls := c.BrokerLastSync
				b.LastSync = &ls
			}
			st.Control.Broker = b
		}
	}
	for _, r := range t.Remotes {
		tr := api.TopologyRemote{ID: r.ID, From: r.From}
		if r.GatewayIP.IsValid() {
			tr.GatewayIP = r.GatewayIP.String()
		}
		if r.GatewayIP6.IsValid() {
			tr.GatewayIP6 = r.GatewayIP6.String()
		}
		st.Remotes = append(st.Remotes, tr)
	}
	return st
}

func (a *Agent) noTopology(err error) {
	a.setCond(CondTopologyValid, false, "NoTopology", err.Error(), "weft waits for the API server; see the TopologySynced condition")
}

// withTopologyProblems adds the topology source's problems of this pass to
// the desired-state computation's.
func (a *Agent) withTopologyProblems(ps []string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append(append([]string(nil), a.topoProblems...), ps...)
}

// CondBrokerSynced says whether the leader's last pass with the broker
// succeeded (kubernetes.endpoints: weft with a broker, on the Lease holder
// only: no other node talks to the broker).
const CondBrokerSynced = "BrokerSynced"

// brokerCond is the BrokerSynced condition of a topology status, false
// when this node does not lead a cluster with a broker. It is computed from
// the live control-plane state on every status read: the broker going away
// starts no reconcile pass (nothing in the data plane changes).
func brokerCond(t *api.Topology) (api.Condition, bool) {
	if t == nil || t.Control == nil || !t.Control.Leading || t.Control.Broker == nil {
		return api.Condition{}, false
	}
	b := t.Control.Broker
	c := api.Condition{Type: CondBrokerSynced, Status: b.Synced, Reason: b.Reason}
	if b.Since != nil {
		c.Since = *b.Since
	}
	if b.Synced {
		c.Message = fmt.Sprintf("%d remote ClusterEndpoints copied from the broker", b.Remotes)
		return c, true
	}
	since := "the start of this leadership"
	if b.Since != nil {
		since = b.Since.Format(time.RFC3339)
	}
	switch b.Reason {
	case toposource.BrokerUnreachable:
		c.Message = fmt.Sprintf("broker unreachable since %s (%d failed passes): %s", since, b.Errors, b.Message)
		c.Fix = "check that the broker's API server (broker.kubeconfig) is up and reachable from this gateway node; the ClusterEndpoints copied so far stay in force, a cluster that joins or changes its gateway meanwhile is not seen"
	case toposource.BrokerRefused:
		c.Message = fmt.Sprintf("broker refuses the sync since %s (%d failed passes): %s", since, b.Errors, b.Message)
		c.Fix = "check broker.kubeconfig's credentials and the broker's Role for them (daemon/deploy/broker/) in broker.namespace; the ClusterEndpoints copied so far stay in force"
	case toposource.BrokerPublish:
		c.Message = fmt.Sprintf("publishing in this cluster fails since %s (%d failed passes): %s", since, b.Errors, b.Message)
		c.Fix = "check that this cluster's API server is reachable and that weft's ServiceAccount may write ClusterEndpoints in kubernetes.namespace (daemon/deploy/)"
	default:
		c.Message = "leading since " + since + ": the first pass with the broker has not finished yet"
		c.Fix = "wait a retryPeriod; if it stays, check that the broker (broker.kubeconfig) is reachable from this gateway node"
	}
	return c, true
}
