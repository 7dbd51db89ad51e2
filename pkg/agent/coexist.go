package agent

import (
	"fmt"

	"github.com/weft-net/weft/pkg/dataplane"
)

// submarinerFinder is what a data-plane manager that lists the node's
// devices can tell about Submariner's route agent (dataplane.Netlink does).
type submarinerFinder interface {
	Submariner() (dataplane.ForeignVXLAN, bool)
}

// otherRouteAgent reports Submariner's route agent on this node even when
// its device does not collide with weft's (another port or VNI): both then
// route the node's traffic to the remote clusters. When it does collide,
// DataplaneReady already says so (conflict) and this stays quiet.
func (a *Agent) otherRouteAgent(conflict *dataplane.ConflictError) {
	sf, ok := a.d.Dataplane.(submarinerFinder)
	if !ok {
		return
	}
	dev, found := sf.Submariner()
	if !found || conflict != nil && conflict.Foreign == dev.Name {
		a.mu.Lock()
		delete(a.conds, CondSubmarinerRouteAgent)
		a.mu.Unlock()
		return
	}
	a.setCond(CondSubmarinerRouteAgent, false, "RouteAgentRunning",
		fmt.Sprintf("%s (VNI %d, UDP port %d) is on this node: Submariner's route agent runs here too, and both route this node's traffic to the remote clusters", dev.Name, dev.VNI, dev.Port),
		"stop Submariner's route agent on this node (README: \"Replacing Submariner's route agent\"); with disableIntraClusterConnectivity it stays on the gateway nodes only, where this is expected")
}
