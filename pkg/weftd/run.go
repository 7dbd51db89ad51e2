// Package weftd composes the daemon: it builds the real kernel-facing
// collaborators (netlink data plane, nftables or iptables backend), the
// durable store, the API server and the watchers, and hands them to the
// agent. daemon/main.go only parses the command line and calls in here.
package weftd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/weft-net/weft/pkg/agent"
	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/apiserver"
	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/dataplane"
	"github.com/weft-net/weft/pkg/discovery"
	"github.com/weft-net/weft/pkg/metrics"
	"github.com/weft-net/weft/pkg/packetfilter"
	"github.com/weft-net/weft/pkg/pathhealth"
	"github.com/weft-net/weft/pkg/pathprobe"
	"github.com/weft-net/weft/pkg/state"
	"github.com/weft-net/weft/pkg/topology"
)

// netlinkKernel is the production agent.Kernel.
type netlinkKernel struct{}

func (netlinkKernel) Interfaces(ipv6 bool) ([]discovery.Iface, error) {
	return discovery.InterfacesWith(ipv6)
}

func (netlinkKernel) Underlay(nodeIP netip.Addr, ipv6 bool) (string, netip.Addr, int, error) {
	if nodeIP.IsValid() {
		name, mtu, err := dataplane.InterfaceForAddr(nodeIP)
		return name, nodeIP, mtu, err
	}
	if ipv6 {
		return dataplane.DefaultRouteInterface6()
	}
	return dataplane.DefaultRouteInterface()
}

// Options are weftd run's flags.
type Options struct {
	ConfigPath string
	Version    string
	Log        *slog.Logger
	// Env gives the defaults of the keys the file may leave out, and of
	// the socket, directories and metrics address weftd uses while the
	// file cannot be read. Zero Getenv/Hostname = the process's.
	Env config.Env
	// OnSnapshot hooks receive every data-path health snapshot (one per
	// healthCheck.interval) from the prober's goroutine; they must not
	// block (see pathprobe.Options.OnSnapshot).
	OnSnapshot []func(pathhealth.Snapshot)
}

// CheckFlags refuses flag values weftd cannot run with at all; everything
// about the file itself is reported in status instead.
func CheckFlags(o Options) error {
	if o.ConfigPath == "" {
		return errors.New("--config: empty path")
	}
	if strings.ContainsRune(o.ConfigPath, 0) {
		return errors.New("--config: path contains a NUL byte")
	}
	for _, f := range []struct{ flag, v string }{
		{"--socket", o.Env.Socket}, {"--spool-dir", o.Env.SpoolDir}, {"--state-dir", o.Env.StateDir},
	} {
		if f.v != "" && !filepath.IsAbs(f.v) {
			return fmt.Errorf("%s: %q is not an absolute path", f.flag, f.v)
		}
	}
	if a := o.Env.MetricsAddress; a != nil && *a != "" {
		if _, port, err := net.SplitHostPort(*a); err != nil || port == "" {
			return fmt.Errorf("--metrics-address: %q is not host:port (none disables it)", *a)
		}
	}
	return nil
}

// Run runs the daemon until ctx ends (SIGTERM). A configuration file that
// is missing, does not parse or does not validate does not stop it: weftd
// then serves its socket, status and probes (not ready), records every
// plugin event, leaves the kernel as it is, and applies the file as soon as
// it is valid. Run returns an error only for what makes serving
// impossible (unusable flags, the socket in use, the state directory not
// writable). On return the data plane is left in place: an upgrade must
// not cut traffic.
func Run(ctx context.Context, o Options) error {
	if err := CheckFlags(o); err != nil {
		return err
	}
	log, env := o.Log, o.Env
	if env.Getenv == nil && env.Hostname == nil {
		env.Getenv, env.Hostname = os.Getenv, os.Hostname
	}
	cfg, boot, cfgData, loadErr := config.LoadStartupData(o.ConfigPath, env)
	store, err := state.Open(boot.StateDir, log)
	if err != nil {
		return fmt.Errorf("open state: %w", err)
	}
	// After the API server and the loops are done (defers run last in,
	// first out): a snapshot being written in the background completes.
	defer store.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	goRun := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	// The metrics read the agent's status at scrape time; scrapes start
	// only after the agent exists.
	var a *agent.Agent
	m := metrics.New(func() api.Status { return a.Status() })
	// The leader publishes its CNI interface IPs as the other clusters'
	// health-check targets (endpoints: weft).
	topo := newTopologySources(ctx, log, boot.StateDir, goRun, func() (v4, v6 netip.Addr) {
		if c := store.CNI(); c != nil {
			v4, _ = netip.ParseAddr(c.IP)
			v6, _ = netip.ParseAddr(c.IP6)
		}
		return v4, v6
	}, healthDeps{Version: o.Version, Observer: m})
	probes := pathprobe.NewService(pathprobe.ServiceOptions{
		Node: boot.NodeName, Cluster: boot.ClusterID, Log: log.With("component", "pathprobe"),
		OnReport: func(s pathhealth.Snapshot, p pathprobe.Plan) { a.SetPathHealth(pathprobe.Report(s, p)) },
		// The cluster publisher (the node's RouteAgent or NodePath) keeps
		// the latest snapshot only: it never holds the prober up.
		OnSnapshot: append(slices.Clone(o.OnSnapshot), topo.PublishHealth),
		OnStop:     func() { a.SetPathHealth(nil, nil) }, ObserveRTT: m.ObservePathRTT,
	})
	a = agent.New(cfg, agent.Deps{
		Log: log, Store: store, Kernel: netlinkKernel{}, Observer: m,
		Dataplane: dataplane.New(log), Version: o.Version, Startup: boot, ConfigPath: o.ConfigPath,
		NewPacketFilter: func(ctx context.Context, cfg *config.Config) (packetfilter.Backend, error) {
			return SelectBackend(ctx, cfg, log)
		},
		Topology: topo.For, TopologyChanged: topo.Changed(),
		Desired: func(cfg *config.Config, in topology.Inputs, res topology.Result) {
			probes.Update(pathprobe.PlanFor(cfg, in, res.Role))
		},
	})
	if loadErr != nil {
		a.ConfigRejected(loadErr)
	}

	// Replay what the plugin spooled while we were away before serving, so
	// that events are recorded in the order they happened.
	if err := os.MkdirAll(boot.SpoolDir, 0o700); err != nil {
		cancel()
		wg.Wait()
		return fmt.Errorf("create spool dir %s: %w", boot.SpoolDir, err)
	}
	// The spool watch starts before the first drain: a file the plugin
	// spools while that drain runs leaves a notification that the
	// WatchSpool loop (started after it) acts on at once.
	spoolNotify := make(chan struct{}, 1)
	watchDir(ctx, log, boot.SpoolDir, spoolNotify, goRun)
	if err := a.DrainSpool(ctx, boot.SpoolDir); err != nil {
		log.Warn("initial spool drain incomplete, will retry", "err", err)
	}

	srv, err := apiserver.Listen(apiserver.Options{Socket: boot.Socket, Log: log}, a)
	if err != nil {
		cancel()
		wg.Wait()
		return err
	}

	goRun(func() {
		if err := srv.Serve(); err != nil {
			log.Error("API server stopped", "err", err)
		}
	})
	goRun(func() { a.WatchTopology(ctx) })
	goRun(func() { probes.Run(ctx) })
	goRun(func() { a.Run(ctx) })
	goRun(func() {
		discovery.WatchEvents(ctx, log, func() int {
			if c := a.Config(); c != nil {
				return c.RouteTable
			}
			return 0
		}, a.NetlinkEvent)
	})
	goRun(func() { a.WatchSpool(ctx, boot.SpoolDir, spoolNotify, 5*time.Second) })
	goRun(func() {
		// Without a valid file at start (Last nil), the first valid content
		// is reported through SetConfig: ready without a restart.
		// LastData: the file parsed above is not parsed again.
		w := &config.Watcher{Last: cfg, LastData: cfgData, Env: env, Logger: log}
		if err := w.Watch(ctx, o.ConfigPath, a.SetConfig, a.ConfigRejected); err != nil {
			log.Error("config watch stopped; reloads need a restart", "err", err)
		}
	})
	if addr := boot.MetricsAddress; addr != "" {
		goRun(func() { serveMetrics(ctx, log, addr, metrics.NewMux(m, a.Ready)) })
	}
	st := a.Status()
	log.Info("weftd started", "node", st.Node, "cluster", st.Cluster, "role", st.Role,
		"configValid", cfg != nil, "socket", boot.Socket, "version", o.Version)

	<-ctx.Done()
	log.Info("stopping: the data plane stays in place (use `weftd cleanup` to remove it)")
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = srv.Shutdown(sctx)
	wg.Wait()
	return nil
}

// watchDir starts watching dir and returns once the watch is in place; a
// goroutine (tracked by goRun) then signals notify whenever a file appears
// in dir, until ctx ends. Without a watch, the periodic drain still runs.
func watchDir(ctx context.Context, log *slog.Logger, dir string, notify chan<- struct{}, goRun func(func())) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		log.Warn("spool watch unavailable, relying on periodic drain", "err", err)
		return
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		log.Warn("spool watch unavailable, relying on periodic drain", "dir", dir, "err", err)
		return
	}
	poke := func() {
		select {
		case notify <- struct{}{}:
		default:
		}
	}
	goRun(func() {
		defer w.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Rename) {
					poke()
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warn("spool watch error", "err", err)
				poke()
			}
		}
	})
}

// serveMetrics serves /metrics, /healthz and /readyz on addr (the
// kubelet's probes and Prometheus). A port in use is logged, not fatal:
// the data plane matters more than its metrics.
func serveMetrics(ctx context.Context, log *slog.Logger, addr string, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error("metrics and health endpoint unavailable", "address", addr, "err", err)
		return
	}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("metrics and health endpoint stopped", "err", err)
	}
}
