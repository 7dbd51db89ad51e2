package weftd

import (
	"fmt"
	"io"
	"strings"
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
		ip := g.IP
		if g.IP6 != "" {
			ip = strings.TrimSpace(ip + " " + g.IP6)
		}
		fmt.Fprintf(w, "  gateway      %s %s from %s\n", g.Name, ip, g.From)
	} else {
		fmt.Fprintf(w, "  gateway      none known\n")
	}
	for _, r := range t.Remotes {
		fmt.Fprintf(w, "  remote       %s gateway %s from %s\n", r.ID, strings.TrimSpace(r.GatewayIP+" "+r.GatewayIP6), r.From)
	}
	if c := t.Control; c != nil {
		printControl(w, c, now)
	}
	for _, p := range t.Problems {
		fmt.Fprintf(w, "  problem      %s\n", p)
	}
}

// printControl writes the election as this node sees it and, on the
// leader, the broker sync.
func printControl(w io.Writer, c *api.TopologyControl, now time.Time) {
	role := "not a candidate"
	switch {
	case c.Leading:
		role = "candidate, holds the Lease"
	case c.Candidate:
		role = "candidate"
	}
	holder := "no holder known"
	if c.LeaseHolder != "" {
		holder = "held by " + c.LeaseHolder
		if c.LeaseRenewTime != nil {
			holder += fmt.Sprintf(", renewed %s ago", now.Sub(*c.LeaseRenewTime).Round(time.Millisecond))
		}
	}
	fmt.Fprintf(w, "  election     %s; Lease %s; %d leadership changes seen\n", role, holder, c.LeadershipChanges)
	if b := c.Broker; b != nil && c.Leading {
		state := fmt.Sprintf("in sync, %d remotes copied", b.Remotes)
		if b.LastSync != nil {
			state += fmt.Sprintf(", last pass %s ago", now.Sub(*b.LastSync).Round(time.Millisecond))
		}
		if !b.Synced {
			state = "NOT IN SYNC (" + b.Reason + "): " + b.Message
		}
		fmt.Fprintf(w, "  broker       %s; %d failed passes\n", state, b.Errors)
	}
	if c.Message != "" {
		fmt.Fprintf(w, "  control      %s\n", c.Message)
	}
}
