package weftd

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

// PrintStatus writes the one-screen human view of a status document.
func PrintStatus(w io.Writer, st api.Status, now time.Time) {
	ready := "NOT READY"
	if st.Ready {
		ready = "ready"
	}
	fmt.Fprintf(w, "node %s  cluster %s  role %s  %s", st.Node, st.Cluster, st.Role, ready)
	if st.Version != "" {
		fmt.Fprintf(w, "  (weftd %s)", st.Version)
	}
	fmt.Fprintln(w)
	if c := st.CNIInterface; c != nil {
		if c.Name == "" { // dual stack, the IPv6 half found first
			fmt.Fprintf(w, "CNI interface  no IPv4 address found yet (since %s, %s ago)\n", c.Since.Format(time.RFC3339), now.Sub(c.Since).Round(time.Second))
		} else {
			fmt.Fprintf(w, "CNI interface  %s %s (via %s, since %s, %s ago)\n", c.Name, c.IP, c.Source,
				c.Since.Format(time.RFC3339), now.Sub(c.Since).Round(time.Second))
		}
		if c.IP6 != "" {
			fmt.Fprintf(w, "CNI IPv6       %s %s (via %s)\n", c.Name6, c.IP6, c.Source6)
		}
	} else {
		fmt.Fprintf(w, "CNI interface  not found yet\n")
	}
	printTopology(w, st.Topology, now)
	if st.PacketFilter != "" {
		fmt.Fprintf(w, "packet filter  %s\n", st.PacketFilter)
	} else {
		fmt.Fprintf(w, "packet filter  not chosen yet (waits for a valid configuration)\n")
	}
	if c := st.Config; c != nil && len(c.RestartRequired) > 0 {
		fmt.Fprintf(w, "restart needed %s (changed in %s; the running values stay until weftd restarts)\n", strings.Join(c.RestartRequired, ", "), c.File)
	}
	fmt.Fprintf(w, "attachments    %d\n", st.Attachments)
	if st.Spool.Replayed+st.Spool.Dropped+st.Spool.Skipped > 0 {
		fmt.Fprintf(w, "spool          replayed %d, dropped %d, skipped %d\n", st.Spool.Replayed, st.Spool.Dropped, st.Spool.Skipped)
	}
	if r := st.LastReconcile; r != nil {
		res := "ok"
		if r.Error != "" {
			res = "error: " + r.Error
		}
		fmt.Fprintf(w, "last reconcile %s ago, %.1f ms, %s\n", now.Sub(r.At).Round(time.Millisecond), r.DurationMs, res)
	}
	printGatewayPath(w, st.PathHealth)
	if len(st.Remotes) > 0 {
		fmt.Fprintln(w, "remotes:")
		for _, r := range st.Remotes {
			routes := "routes missing"
			if r.RoutesInstalled {
				routes = "routes in place"
			}
			if len(r.Families) > 1 {
				// Dual stack: which family is missing, when one is.
				var fs []string
				for _, f := range r.Families {
					state := "in place"
					if !f.RoutesInstalled {
						state = "missing"
					}
					fs = append(fs, f.Family+" "+state)
				}
				routes = "routes " + strings.Join(fs, ", ")
			}
			if p := pathLine(st.PathHealth, r.ID); p != "" {
				routes += "; " + p
			}
			fmt.Fprintf(w, "  %-10s %-40s %s\n", r.ID, strings.Join(r.CIDRs, ","), routes)
		}
	}
	fmt.Fprintln(w, "conditions:")
	for _, c := range st.Conditions {
		mark := "ok  "
		if !c.Status {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s %-22s %s", mark, c.Type, c.Reason)
		if c.Message != "" {
			fmt.Fprintf(w, ": %s", c.Message)
		}
		fmt.Fprintln(w)
		if !c.Status && c.Fix != "" {
			fmt.Fprintf(w, "       fix: %s\n", c.Fix)
		}
	}
}
