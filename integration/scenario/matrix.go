package scenario

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/netnstest"
)

// Source kinds of a probe.
const (
	SourcePod  = "pod"
	SourceHost = "host"
)

// Probe is one TCP exchange from a pod or a node's host network to a pod of
// the other cluster.
type Probe struct {
	// Kind is SourcePod or SourceHost.
	Kind string
	// SrcNode, SrcCluster and SrcRole describe where the probe started;
	// SrcRole is the role under the configuration in force.
	SrcNode    string
	SrcCluster string
	SrcRole    string
	// DstNode and DstRole describe the remote pod's node.
	DstNode string
	DstRole string
	Dst     netip.AddrPort
	// Seen is the source address the remote pod saw; Expected is what it
	// must be: the pod's own IP for a pod, the node's CNI IP (cni0) for
	// the host network.
	Seen     netip.Addr
	Expected netip.Addr
	// OK: the exchange succeeded and Seen == Expected.
	OK  bool
	Err error
	// Took is how long the probe ran.
	Took time.Duration
}

// From names the source for tables and messages: "pod c1-n1", "host c1-n1".
func (p Probe) From() string { return p.Kind + " " + p.SrcNode }

func (p Probe) String() string {
	s := fmt.Sprintf("%s (%s) -> pod %s (%s) %s: ", p.From(), p.SrcRole, p.DstNode, p.DstRole, p.Dst)
	switch {
	case p.Err != nil:
		return s + "FAILED: " + p.Err.Error()
	case !p.OK:
		return s + fmt.Sprintf("reached, but remote saw source %s, want %s", p.Seen, p.Expected)
	}
	return s + "ok, source " + p.Seen.String()
}

// Failed returns the probes that are not OK.
func Failed(ps []Probe) []Probe {
	var out []Probe
	for _, p := range ps {
		if !p.OK {
			out = append(out, p)
		}
	}
	return out
}

// Matrix probes every pod -> every pod of the other cluster, and every
// node's host network -> every pod of the other cluster, in both
// directions, concurrently. Results are in a stable order (members order,
// pods before hosts, then destinations).
func (s *Scenario) Matrix(ctx context.Context) []Probe {
	return s.MatrixFrom(ctx)
}

// MatrixFrom is Matrix restricted to the rows whose source node is one of
// nodes (all rows when none is given).
func (s *Scenario) MatrixFrom(ctx context.Context, nodes ...*harness.Node) []Probe {
	type job struct {
		probe Probe
		ns    *netnstest.NS
	}
	var jobs []job
	for _, kind := range []string{SourcePod, SourceHost} {
		for _, src := range s.Members {
			if len(nodes) > 0 && !slices.Contains(nodes, src.Node) {
				continue
			}
			for _, dst := range s.Members {
				if dst.Cluster == src.Cluster {
					continue
				}
				p := Probe{
					Kind: kind, SrcNode: src.Node.Name, SrcCluster: src.Cluster.ID, SrcRole: s.Role(src.Node),
					DstNode: dst.Node.Name, DstRole: s.Role(dst.Node), Dst: dst.PodAddr(),
				}
				j := job{probe: p}
				if kind == SourcePod {
					j.ns, j.probe.Expected = src.Pod.NS, src.Pod.IP
				} else {
					j.ns, j.probe.Expected = src.Node.NS, src.CNIIP()
				}
				jobs = append(jobs, j)
			}
		}
	}
	out := make([]Probe, len(jobs))
	// Bounded: each probe pins an OS thread in a namespace.
	sem := make(chan struct{}, 12)
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i] = s.probe(ctx, j.ns, j.probe)
		}()
	}
	wg.Wait()
	return out
}

func (s *Scenario) probe(ctx context.Context, from *netnstest.NS, p Probe) Probe {
	ctx, cancel := context.WithTimeout(ctx, s.Opts.ProbeTimeout)
	defer cancel()
	start := time.Now()
	payload := []byte(fmt.Sprintf("weft %s -> %s", p.From(), p.Dst))
	r, err := harness.ProbeTCP(ctx, from, p.Dst.String(), payload)
	p.Took = time.Since(start)
	p.Seen = r.Src.Addr()
	p.Err = err
	p.OK = err == nil && p.Seen == p.Expected
	return p
}

// WaitGreen runs MatrixFrom(nodes...) until every probe is OK or ctx ends.
// It returns the last matrix and the time it took to turn green.
func (s *Scenario) WaitGreen(ctx context.Context, nodes ...*harness.Node) ([]Probe, time.Duration, error) {
	start := time.Now()
	for {
		ps := s.MatrixFrom(ctx, nodes...)
		bad := Failed(ps)
		if len(bad) == 0 {
			return ps, time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return ps, time.Since(start), fmt.Errorf("matrix not green after %s: %d of %d probes failed, first: %s",
				time.Since(start).Round(time.Millisecond), len(bad), len(ps), bad[0])
		case <-time.After(100 * time.Millisecond):
		}
	}
}
