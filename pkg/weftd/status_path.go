package weftd

import (
	"fmt"
	"io"
	"strings"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/pathhealth"
)

// pathLine is the one-line health of the targets of one remote cluster
// (its whole path and, on a gateway, its cable), or "" when none is
// probed.
func pathLine(h *api.PathHealth, cluster string) string {
	if h == nil {
		return ""
	}
	var parts []string
	for _, t := range h.Targets {
		if t.Cluster != cluster || t.Hop == string(pathhealth.HopGateway) {
			continue
		}
		what := "path"
		if t.Hop == string(pathhealth.HopCable) {
			what = "cable"
		}
		parts = append(parts, what+" "+targetText(t))
	}
	return strings.Join(parts, "; ")
}

func targetText(t api.PathTarget) string {
	if !t.Up {
		return fmt.Sprintf("DOWN (%s)", t.Message)
	}
	if t.Sent == 0 {
		return "probing"
	}
	return fmt.Sprintf("up, rtt %.2f ms (min %.2f, max %.2f), loss %d/%d", t.RTT.LastMs, t.RTT.MinMs, t.RTT.MaxMs, t.Lost, t.Sent)
}

// printGatewayPath prints the node → gateway line of a non-gateway node.
func printGatewayPath(w io.Writer, h *api.PathHealth) {
	if h == nil {
		return
	}
	for _, t := range h.Targets {
		if t.Hop == string(pathhealth.HopGateway) {
			fmt.Fprintf(w, "gateway path   %s %s: %s\n", t.Node, t.Address, targetText(t))
		}
	}
}
