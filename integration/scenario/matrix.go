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
	// SourceHostUnderlay: the host network from a socket bound to the
	// node's underlay address (Options.HostUnderlayProbes).
	SourceHostUnderlay = "host-ul"
)

// Address families of a probe.
const (
	IPv4 = "IPv4"
	IPv6 = "IPv6"
)

// Probe is one TCP exchange from a pod or a node's host network to a pod of
// the other cluster.
type Probe struct {
	// Kind is SourcePod, SourceHost or SourceHostUnderlay.
	Kind string
	// Family is IPv4 or IPv6: the family of Dst, Seen and Expected.
	Family string
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
	// must be: the pod's own IP for a pod, the node's CNI IP (cni0) of the
	// family for the host network.
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
// directions, over every family of the plan, concurrently. Results are in
// a stable order (families, then members order, pods before hosts, then
// destinations).
func (s *Scenario) Matrix(ctx context.Context) []Probe {
	return s.MatrixFrom(ctx)
}

// MatrixFrom is Matrix restricted to the rows whose source node is one of
// nodes (all rows when none is given).
func (s *Scenario) MatrixFrom(ctx context.Context, nodes ...*harness.Node) []Probe {
	type job struct {
		probe Probe
		ns    *netnstest.NS
		bind  netip.Addr
	}
	kinds := []string{SourcePod, SourceHost}
	if s.Opts.HostUnderlayProbes {
		kinds = append(kinds, SourceHostUnderlay)
	}
	var jobs []job
	for _, fam := range s.Families() {
		for _, kind := range kinds {
			for _, src := range s.Members {
				if len(nodes) > 0 && !slices.Contains(nodes, src.Node) {
					continue
				}
				for _, dst := range s.Members {
					if dst.Cluster == src.Cluster {
						continue
					}
					p := Probe{
						Kind: kind, Family: fam, SrcNode: src.Node.Name, SrcCluster: src.Cluster.ID, SrcRole: s.Role(src.Node),
						DstNode: dst.Node.Name, DstRole: s.Role(dst.Node), Dst: dst.PodAddrOf(fam),
					}
					j := job{probe: p}
					switch kind {
					case SourcePod:
						j.ns, j.probe.Expected = src.Pod.NS, src.PodIPOf(fam)
					case SourceHost:
						j.ns, j.probe.Expected = src.Node.NS, src.CNIIPOf(fam)
					case SourceHostUnderlay:
						j.ns, j.bind, j.probe.Expected = src.Node.NS, src.UnderlayIPOf(fam), src.CNIIPOf(fam)
					}
					jobs = append(jobs, j)
				}
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
			out[i] = s.probe(ctx, j.ns, j.bind, j.probe)
		}()
	}
	wg.Wait()
	return out
}

func (s *Scenario) probe(ctx context.Context, from *netnstest.NS, bind netip.Addr, p Probe) Probe {
	ctx, cancel := context.WithTimeout(ctx, s.Opts.ProbeTimeout)
	defer cancel()
	start := time.Now()
	payload := []byte(fmt.Sprintf("weft %s -> %s", p.From(), p.Dst))
	r, err := harness.ProbeTCPFrom(ctx, from, bind, p.Dst.String(), payload)
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
