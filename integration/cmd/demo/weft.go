package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/weft-net/weft/integration/scenario"
)

// elected waits for both clusters' Lease holders and for every node to
// follow them and the other cluster's ClusterEndpoint (copied through the
// broker), and prints who won.
func elected(ctx context.Context, out io.Writer, s *scenario.Scenario) error {
	start := time.Now()
	for _, c := range s.Clusters.Clusters() {
		gw, err := s.WaitHolder(ctx, c, "", 30*time.Second)
		if err != nil {
			return err
		}
		s.Elected(gw)
	}
	if _, _, err := s.WaitFollow(ctx); err != nil {
		return fmt.Errorf("nodes do not follow the elected gateways: %w", err)
	}
	fmt.Fprintf(out, "\nelected: c1 %s, c2 %s; every node follows them and the other cluster's ClusterEndpoint (copied through the broker) %s after all were ready\n",
		s.Gateway("c1").Name, s.Gateway("c2").Name, time.Since(start).Round(time.Millisecond))
	return nil
}

// demoFailover kills c1's gateway node (underlay down, weftd SIGKILL)
// while a pod of c2 probes a pod of c1 every 100 ms, both on
// non-candidates so that every probe crosses both gateways; it prints the
// takeover, the probe gap, the matrix after it and the new gateway's
// status.
func demoFailover(ctx context.Context, out io.Writer, s *scenario.Scenario) ([]scenario.Probe, error) {
	c1 := s.Clusters.C1
	old := s.Member(s.Gateway(c1.ID).Name)
	from, to := s.Member(s.Clusters.C2.Nodes[0].Name), s.Member(c1.Nodes[0].Name)
	fmt.Fprintf(out, "\nfailover: pod %s probes pod %s every 100 ms; c1's gateway %s dies (underlay down, weftd SIGKILL) …\n", from.Node.Name, to.Node.Name, old.Node.Name)
	p := scenario.StartProber(from, to)
	time.Sleep(time.Second)
	start := time.Now()
	revive, err := scenario.KillNode(old)
	// Back without weftd at the end, so that the API servers' connections
	// to the dead weftd are reset and the cleanup does not wait on them.
	defer func() {
		if err := revive(); err != nil {
			fmt.Fprintf(out, "revive %s: %v\n", old.Node.Name, err)
		}
	}()
	if err != nil {
		p.Finish()
		return nil, err
	}
	gw, err := s.WaitHolder(ctx, c1, old.Node.Name, 30*time.Second)
	if err != nil {
		p.Finish()
		return nil, err
	}
	took := time.Since(start)
	s.Elected(gw)
	if err := s.RemoveMember(old); err != nil {
		p.Finish()
		return nil, err
	}
	if _, _, err := s.WaitFollow(ctx); err != nil {
		p.Finish()
		return nil, err
	}
	followed := time.Since(start)
	time.Sleep(time.Second)
	p.Finish()
	fmt.Fprintf(out, "%s took the Lease %s after the death, every node of both clusters followed after %s\n", gw.Name, took.Round(time.Millisecond), followed.Round(time.Millisecond))
	fmt.Fprintf(out, "probe gap %s: %d of %d probes lost (promise: at most the Lease duration 3s + 2 s)\n", p.Gap.Round(time.Millisecond), p.Lost, p.Sent)
	ps, _, err := s.WaitGreen(ctx)
	printMatrix(out, s, ps)
	if err != nil {
		return ps, err
	}
	m := s.Member(gw.Name)
	fmt.Fprintf(out, "\n$ weftd status   # on %s (the new gateway)\n", gw.Name)
	stdout, stderr, err := m.Node.WeftdCommand(ctx, "status", "--socket", m.Weftd.Socket)
	out.Write(stdout)
	if err != nil {
		return ps, fmt.Errorf("weftd status on %s: %w: %s", gw.Name, err, strings.TrimSpace(stderr))
	}
	return ps, nil
}
