package agent

import (
	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/topology"
)

// Condition types of the data-path health (pkg/pathprobe reports them).
const (
	CondGatewayReachable = "GatewayReachable"
	CondRemotesReachable = "RemotesReachable"
)

// DesiredFunc is told, after every pass that computed a desired state,
// the effective configuration (topology applied), the run-time inputs and
// the result: the health prober derives its targets from them. It must
// not block the reconcile loop.
type DesiredFunc func(cfg *config.Config, in topology.Inputs, res topology.Result)

// SetPathHealth records the data-path health (nil = the health check is
// off: both conditions go away). The conditions never change readiness:
// ready means weft's objects are in place, these say whether packets get
// through.
func (a *Agent) SetPathHealth(h *api.PathHealth, conds []api.Condition) {
	if h == nil {
		a.clearCond(CondGatewayReachable)
		a.clearCond(CondRemotesReachable)
	}
	for _, c := range conds {
		a.setCond(c.Type, c.Status, c.Reason, c.Message, c.Fix)
	}
	a.mu.Lock()
	a.pathHealth = h
	a.mu.Unlock()
}
