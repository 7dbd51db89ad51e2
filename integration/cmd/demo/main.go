// Command demo builds weft's two-cluster scenario in network namespaces,
// shows what weft does, and removes everything again. Run as root through
// `make demo` (or `make demo BACKEND=iptables`): it needs bin/weft,
// bin/weftd and the pinned CNI tools.
//
// It prints the time from weftd's start to every node being ready, a
// connectivity matrix (every pod and every node's host network to every
// pod of the other cluster, with the source address the destination saw),
// and `weftd status` of a gateway and a non-gateway node. With
// -topology kubernetes -endpoints weft (`make demo TOPOLOGY=kubernetes
// ENDPOINTS=weft`) weft runs its own control plane: the clusters elect
// their gateways on the Lease and find each other through a broker API
// server, and the demo kills the gateway node under a probe every 100 ms
// and prints the failover's gap. With -family dual (`make demo
// DUALSTACK=1`) the clusters are dual stack (weft's VXLAN over the IPv4
// underlay) and the demo prints the matrix over IPv4 and over IPv6, rows
// from the host network bound to the node's underlay address included
// (seen as cni0's address of the family: weft's host SNAT); -family ipv6
// does the same for IPv6-only clusters on an IPv6 underlay. It exits 1 when
// any probe failed. Nothing outlives it: the namespaces, processes and
// files are removed on success, on failure and on Ctrl-C / SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/integration/scenario"
)

func main() {
	backend := flag.String("backend", "nftables", "packet-filter backend of every weftd: nftables, iptables or auto")
	nodes := flag.Int("nodes", 3, "nodes per cluster (the gateway is n2)")
	verbose := flag.Bool("v", false, "log the harness's progress to stderr")
	timeout := flag.Duration("timeout", 0, "give up after this long (default 45s; 3 min with -topology kubernetes; at least 5 min with -cluster real)")
	cluster := flag.String("cluster", "netns", "netns: nodes are network namespaces with weftd started directly; real: Kubernetes clusters with containerd and kubelet, weft from daemon/deploy/")
	topo := flag.String("topology", "file", "file (every weftd's file lists the nodes, gateway and remotes) or kubernetes (a real API server per cluster, Node and Submariner Endpoint objects)")
	family := flag.String("family", "ipv4", "address family of the clusters: ipv4, dual (dual stack, weft's VXLAN over IPv4) or ipv6 (IPv6 only, IPv6 underlay); dual and ipv6 run with -cluster netns -topology file")
	endpoints := flag.String("endpoints", "submariner", "with -topology kubernetes: submariner (Endpoint objects written as Submariner's gateway engine would) or weft (gateways elected on the Lease, clusters found through a broker API server; shows a failover)")
	flag.Parse()
	switch {
	case *endpoints == "weft" && *topo == scenario.TopologyKubernetes:
		if *cluster == "real" {
			fmt.Fprintln(os.Stderr, "demo: -endpoints weft runs with -cluster netns only")
			os.Exit(2)
		}
		*topo = scenario.TopologyWeft
	case *endpoints == "weft":
		fmt.Fprintln(os.Stderr, "demo: -endpoints weft needs -topology kubernetes")
		os.Exit(2)
	case *endpoints != "submariner":
		fmt.Fprintf(os.Stderr, "demo: -endpoints %q: want submariner or weft\n", *endpoints)
		os.Exit(2)
	}
	if *cluster != "netns" && *cluster != "real" {
		fmt.Fprintf(os.Stderr, "demo: -cluster %q: want netns or real\n", *cluster)
		os.Exit(2)
	}
	fam, err := harness.ParseFamily(*family)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: -family: %v\n", err)
		os.Exit(2)
	}
	if fam != harness.FamilyIPv4 && (*cluster != "netns" || *topo != "file") {
		fmt.Fprintf(os.Stderr, "demo: -family %s runs with -cluster netns -topology file only\n", *family)
		os.Exit(2)
	}
	if *timeout == 0 {
		*timeout = 45 * time.Second
		if *topo == scenario.TopologyKubernetes || *topo == scenario.TopologyWeft {
			*timeout = 3 * time.Minute
		}
	}
	if *cluster == "real" && *timeout < 5*time.Minute {
		*timeout = 5 * time.Minute
	}
	os.Exit(run(*backend, *topo, fam, *nodes, *verbose, *timeout, *cluster == "real"))
}

func run(backend, topo string, fam harness.Family, nodes int, verbose bool, timeout time.Duration, real bool) (code int) {
	opts := scenario.Options{NodesPerCluster: nodes, Backend: backend, Family: fam}
	if fam != harness.FamilyIPv4 {
		opts.HostUnderlayProbes = true
	}
	switch topo {
	case "file", "":
	case scenario.TopologyKubernetes, scenario.TopologyWeft:
		opts.Topology = topo
	default:
		fmt.Fprintf(os.Stderr, "demo: -topology %q: want file or kubernetes\n", topo)
		return 2
	}
	// Without a handler a write to a closed stdout (`make demo | head`)
	// kills the process by SIGPIPE before it has removed the namespaces.
	// A caught signal, unlike an ignored one, is not inherited by weftd.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// stop runs after env.Close: a second Ctrl-C during cleanup must not
	// kill the process half-way through it.
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	env, err := harness.NewEnv(log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return 2
	}
	defer func() {
		fmt.Println("\ncleaning up (weftd stopped, namespaces and files removed) …")
		if err := env.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "demo: cleanup: %v\n", err)
			code = 1
		}
	}()
	for _, b := range []string{"weft", "weftd"} {
		if !env.HasBin(b) {
			fmt.Fprintf(os.Stderr, "demo: %s not built (make build)\n", env.Bin(b))
			return 2
		}
	}
	show := func() error {
		return demo(ctx, env, os.Stdout, opts)
	}
	if real {
		show = func() error { return demoReal(ctx, env, os.Stdout, nodes, opts.Topology != "") }
	}
	if err := show(); err != nil {
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			fmt.Fprintln(os.Stderr, "demo: interrupted")
		} else {
			fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		}
		return 1
	}
	return 0
}

func demo(ctx context.Context, env *harness.Env, out io.Writer, opts scenario.Options) error {
	start := time.Now()
	fmt.Fprintf(out, "building two clusters (flannel-like bridge + host-local + host-gw + ipMasq, weft chained last), packet filter %s …\n", backendName(opts.Backend))
	weft := opts.Topology == scenario.TopologyWeft
	switch opts.Family {
	case harness.FamilyDual:
		fmt.Fprintln(out, "dual stack: every node has an IPv4 and an IPv6 underlay address, every pod one address of each family (host-local ranges), host-gw routes and ipMasq per family; weft's VXLAN runs over the IPv4 underlay")
	case harness.FamilyIPv6:
		fmt.Fprintln(out, "IPv6 only: nodes, pods and services have IPv6 addresses only; weft's VXLAN runs over the IPv6 underlay")
	}
	switch {
	case weft:
		fmt.Fprintln(out, "topology: kubernetes, endpoints: weft — one kube-apiserver per cluster and one for the broker; n2 and n3 of each cluster carry weft.dev/gateway=true and elect the gateway on the Lease weft-gateway (duration 3s); the leaders publish their ClusterEndpoint through the broker. No node, gateway or remote in any file")
	case opts.Topology != "":
		fmt.Fprintln(out, "topology: kubernetes — one kube-apiserver per cluster; weftd reads Node objects and Submariner Endpoints (written here as Submariner's gateway engine would), no node, gateway or remote in any file")
	}
	s, err := scenario.Build(ctx, env, opts)
	if err != nil {
		return err
	}
	took, err := s.WaitAllReady(ctx)
	if err != nil {
		return fmt.Errorf("waiting for weftd: %w", err)
	}
	if weft {
		if err := elected(ctx, out, s); err != nil {
			return err
		}
	}
	printTopology(out, s)
	fmt.Fprintf(out, "\nweftd start -> all %d nodes ready: %s\n", len(s.Members), took.Round(time.Millisecond))
	// weftd ran before any pod: cni0 appeared during each node's first ADD
	// (the bridge plugin creates it), and weftd recorded it from there.
	fmt.Fprintf(out, "first pod ADD -> CNI interface recorded by weftd:")
	for _, m := range s.Members {
		st, err := m.Weftd.Status(ctx)
		if err != nil || st.CNIInterface == nil {
			return fmt.Errorf("status of %s: %v", m.Node.Name, err)
		}
		fmt.Fprintf(out, "  %s %s", m.Node.Name, st.CNIInterface.Since.Sub(m.FirstADD).Round(time.Millisecond))
	}
	fmt.Fprintln(out)

	probes := s.Matrix(ctx)
	printMatrix(out, s, probes)

	for _, role := range []string{scenario.RoleGateway, scenario.RoleNonGateway} {
		m := firstWithRole(s, role)
		fmt.Fprintf(out, "\n$ weftd status   # on %s (%s)\n", m.Node.Name, role)
		stdout, stderr, err := m.Node.WeftdCommand(ctx, "status", "--socket", m.Weftd.Socket)
		out.Write(stdout)
		if err != nil {
			return fmt.Errorf("weftd status on %s: %w: %s", m.Node.Name, err, strings.TrimSpace(stderr))
		}
	}

	if weft {
		more, err := demoFailover(ctx, out, s)
		if err != nil {
			return err
		}
		probes = append(probes, more...)
	} else if s.Kube != nil {
		more, err := demoJoin(ctx, out, s)
		if err != nil {
			return err
		}
		probes = append(probes, more...)
	}

	failed := scenario.Failed(probes)
	fmt.Fprintf(out, "\n%d of %d probes ok, %s in total\n", len(probes)-len(failed), len(probes), time.Since(start).Round(time.Millisecond))
	if len(failed) > 0 {
		for _, p := range failed {
			fmt.Fprintf(out, "  %s\n", p)
		}
		return fmt.Errorf("%d probes failed", len(failed))
	}
	return nil
}

func backendName(b string) string {
	if b == "" {
		return "auto"
	}
	return b
}

func firstWithRole(s *scenario.Scenario, role string) *scenario.Member {
	for _, m := range s.Members {
		if s.Role(m.Node) == role {
			return m
		}
	}
	return s.Members[0]
}

func printTopology(out io.Writer, s *scenario.Scenario) {
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "NODE\tROLE")
	for _, fam := range s.Families() {
		if len(s.Families()) == 1 && fam == scenario.IPv4 {
			fmt.Fprint(tw, "\tUNDERLAY IP\tPOD CIDR\tCNI IP (cni0)\tPOD IP")
			continue
		}
		fmt.Fprintf(tw, "\tUNDERLAY %[1]s\tPOD CIDR %[1]s\tCNI %[1]s (cni0)\tPOD %[1]s", fam)
	}
	fmt.Fprintln(tw)
	for _, m := range s.Members {
		fmt.Fprintf(tw, "%s\t%s", m.Node.Name, s.Role(m.Node))
		for _, fam := range s.Families() {
			cidr := m.Node.PodCIDR
			if fam == scenario.IPv6 {
				cidr = m.Node.PodCIDR6
			}
			fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s", m.UnderlayIPOf(fam), cidr, m.CNIIPOf(fam), m.PodIPOf(fam))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

// printMatrix prints one table per direction and family: rows are the
// sources (pods and host networks), columns the remote pods, cells ✓/✗
// and the source address the remote pod saw.
func printMatrix(out io.Writer, s *scenario.Scenario, probes []scenario.Probe) {
	kinds := []string{scenario.SourcePod, scenario.SourceHost}
	if s.Opts.HostUnderlayProbes {
		kinds = append(kinds, scenario.SourceHostUnderlay)
	}
	for _, fam := range s.Families() {
		over := ""
		if len(s.Families()) > 1 || fam != scenario.IPv4 {
			over = " over " + fam
		}
		for _, c := range s.Clusters.Clusters() {
			var dsts []*scenario.Member
			for _, m := range s.Members {
				if m.Cluster != c {
					dsts = append(dsts, m)
				}
			}
			fmt.Fprintf(out, "\nfrom %s to the pods of the other cluster%s (cell: result, source address seen by the destination)\n", c.ID, over)
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprint(tw, "SOURCE\tROLE")
			for _, d := range dsts {
				fmt.Fprintf(tw, "\tpod %s (%s)", d.Node.Name, s.Role(d.Node))
			}
			fmt.Fprintln(tw)
			for _, kind := range kinds {
				for _, m := range s.Members {
					if m.Cluster != c {
						continue
					}
					src := m.PodIPOf(fam)
					switch kind {
					case scenario.SourceHost:
						src = m.CNIIPOf(fam)
					case scenario.SourceHostUnderlay:
						src = m.UnderlayIPOf(fam)
					}
					fmt.Fprintf(tw, "%s %s [%s]\t%s", kind, m.Node.Name, src, s.Role(m.Node))
					for _, d := range dsts {
						fmt.Fprintf(tw, "\t%s", cell(find(probes, fam, kind, m.Node.Name, d.Node.Name)))
					}
					fmt.Fprintln(tw)
				}
			}
			tw.Flush()
		}
	}
}

func find(ps []scenario.Probe, fam, kind, src, dst string) *scenario.Probe {
	for i := range ps {
		if ps[i].Family == fam && ps[i].Kind == kind && ps[i].SrcNode == src && ps[i].DstNode == dst {
			return &ps[i]
		}
	}
	return nil
}

func cell(p *scenario.Probe) string {
	switch {
	case p == nil:
		return "-"
	case p.OK:
		return "✓ " + p.Seen.String()
	case p.Err != nil:
		return "✗ no answer"
	}
	return fmt.Sprintf("✗ %s (want %s)", p.Seen, p.Expected)
}

// demoJoin adds a node to c1 without editing any file: a new node with the
// same weftd configuration, and its Node object. It prints how long the
// gateway took to put it in its FDB, and its pod's probes.
func demoJoin(ctx context.Context, out io.Writer, s *scenario.Scenario) ([]scenario.Probe, error) {
	c := s.Clusters.C1
	gw := s.Gateway(c.ID)
	m, err := s.JoinNode(ctx, c)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "\na node joins c1: %s (%s), same weftd configuration as every node; its Node object created …\n", m.Node.Name, m.Node.IP)
	start := time.Now()
	if err := s.Kube.CreateNode(ctx, m.Node); err != nil {
		return nil, err
	}
	if _, err := scenario.WaitFDB(ctx, gw, m.Node.IP.String(), true, 10*time.Second); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "gateway %s has %s in its vx-weft FDB %s after the Node object was created\n", gw.Name, m.Node.Name, time.Since(start).Round(time.Millisecond))
	if err := s.StartPod(ctx, m); err != nil {
		return nil, err
	}
	if _, err := m.Weftd.WaitReady(ctx); err != nil {
		return nil, err
	}
	ps, took, err := s.WaitGreen(ctx, m.Node)
	for _, p := range ps {
		fmt.Fprintf(out, "  %s\n", p)
	}
	if err == nil {
		fmt.Fprintf(out, "its pod and host network reach every pod of c2 (%s after its pod started)\n", took.Round(time.Millisecond))
	}
	return ps, nil
}
