package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/toposource"
)

func TestBrokerCond(t *testing.T) {
	since := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	broker := func(synced bool, reason, msg string) *api.Topology {
		return &api.Topology{Control: &api.TopologyControl{Leading: true, Candidate: true,
			Broker: &api.BrokerSync{Synced: synced, Reason: reason, Message: msg, Since: &since, Remotes: 2, Errors: 4}}}
	}
	for _, tc := range []struct {
		name   string
		t      *api.Topology
		want   bool // a condition at all
		status bool
		msg    string // substring of the message
		fix    bool
	}{
		{name: "no topology", t: nil},
		{name: "file source", t: &api.Topology{Source: "file"}},
		{name: "candidate, not leading", t: &api.Topology{Control: &api.TopologyControl{Candidate: true, Broker: &api.BrokerSync{}}}},
		{name: "leading without a broker", t: &api.Topology{Control: &api.TopologyControl{Leading: true}}},
		{name: "synced", t: broker(true, toposource.BrokerSynced, ""), want: true, status: true, msg: "2 remote ClusterEndpoints"},
		{name: "unreachable", t: broker(false, toposource.BrokerUnreachable, "dial tcp: connection refused"), want: true,
			msg: "broker unreachable since 2026-03-01T12:00:00Z (4 failed passes): dial tcp: connection refused", fix: true},
		{name: "refused", t: broker(false, toposource.BrokerRefused, "forbidden"), want: true, msg: "broker refuses the sync since 2026-03-01T12:00:00Z", fix: true},
		{name: "local publish", t: broker(false, toposource.BrokerPublish, "publish locally: forbidden"), want: true, msg: "publishing in this cluster fails", fix: true},
		{name: "pending", t: broker(false, toposource.BrokerPending, ""), want: true, msg: "has not finished yet", fix: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := brokerCond(tc.t)
			if ok != tc.want {
				t.Fatalf("condition present %v, want %v (%+v)", ok, tc.want, c)
			}
			if !ok {
				return
			}
			if c.Type != CondBrokerSynced || c.Status != tc.status || !strings.Contains(c.Message, tc.msg) || (c.Fix != "") != tc.fix || !c.Since.Equal(since) {
				t.Errorf("got %+v; want status %v, message with %q, fix %v, since %s", c, tc.status, tc.msg, tc.fix, since)
			}
		})
	}
}
