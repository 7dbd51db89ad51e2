package weftd

import (
	"fmt"
	"io"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

// printTopology writes where the topology comes from: the source, in sync
// or stale since when, the node count, and the object that named the
// gateway and each remote.
func printTopology(w io.Writer, t *api.Topology, now time.Time) {
	if t == nil {
		return
	}
	state := "in sync"
	if !t.Synced {
		state = "NOT IN SYNC (" + t.Reason + ")"
	}
	since := ""
	if t.Since != nil {
		since = fmt.Sprintf(" since %s (%s ago)", t.Since.Format(time.RFC3339), now.Sub(*t.Since).Round(time.Second))
	}
	fmt.Fprintf(w, "topology       %s, %s%s, %d nodes\n", t.Source, state, since, t.Nodes)
	if !t.Synced && t.Message != "" {
		fmt.Fprintf(w, "               %s\n", t.Message)
	}
	if g := t.Gateway; g != nil {
		fmt.Fprintf(w, "  gateway      %s %s from %s\n", g.Name, g.IP, g.From)
	} else {
		fmt.Fprintf(w, "  gateway      none known\n")
	}
	for _, r := range t.Remotes {
		fmt.Fprintf(w, "  remote       %s gateway %s from %s\n", r.ID, r.GatewayIP, r.From)
	}
	for _, p := range t.Problems {
		fmt.Fprintf(w, "  problem      %s\n", p)
	}
}
