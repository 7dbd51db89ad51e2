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
	"github.com/weft-net/weft/pkg/state"
)

// netlinkKernel is the production agent.Kernel.
type netlinkKernel struct{}

func (netlinkKernel) Interfaces() ([]discovery.Iface, error) { return discovery.Interfaces() }

func (netlinkKernel) Underlay(nodeIP netip.Addr) (string, netip.Addr, int, error) {
	if nodeIP.IsValid() {
		name, mtu, err := dataplane.InterfaceForAddr(nodeIP)
		return name, nodeIP, mtu, err
	}
	return dataplane.DefaultRouteInterface()
}

// Run runs the daemon until ctx ends (SIGTERM). It returns an error only
// for what makes starting impossible (invalid config, socket in use);
// after start-up nothing the kernel says ends it. On return the data plane
// is left in place: an upgrade must not cut traffic.
func Run(ctx context.Context, cfgPath, version string, log *slog.Logger) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return fmt.Errorf("load config %s: %w", cfgPath, err)
	}
	store, err := state.Open(cfg.StateDir, log)
	if err != nil {
		return fmt.Errorf("open state: %w", err)
	}
	pf, err := SelectBackend(ctx, cfg, log)
	if err != nil {
		return err
	}
	// The metrics read the agent's status at scrape time; scrapes start
	// only after the agent exists.
	var a *agent.Agent
	m := metrics.New(func() api.Status { return a.Status() })
	a = agent.New(cfg, agent.Deps{
		Log: log, Store: store, Kernel: netlinkKernel{}, Observer: m,
		Dataplane: dataplane.New(log), PacketFilter: pf, Version: version,
	})

	// Replay what the plugin spooled while we were away before serving, so
	// that events are recorded in the order they happened.
	if err := os.MkdirAll(cfg.SpoolDir, 0o700); err != nil {
		return fmt.Errorf("create spool dir %s: %w", cfg.SpoolDir, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	goRun := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	// The spool watch starts before the first drain: a file the plugin
	// spools while that drain runs leaves a notification that the
	// WatchSpool loop (started after it) acts on at once.
	spoolNotify := make(chan struct{}, 1)
	watchDir(ctx, log, cfg.SpoolDir, spoolNotify, goRun)
	if err := a.DrainSpool(ctx, cfg.SpoolDir); err != nil {
		log.Warn("initial spool drain incomplete, will retry", "err", err)
	}

	srv, err := apiserver.Listen(apiserver.Options{Socket: cfg.Socket, Log: log}, a)
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
	goRun(func() { a.Run(ctx) })
	goRun(func() {
		discovery.Watch(ctx, log, cfg.RouteTable, func(string) { a.Trigger() })
	})
	goRun(func() { a.WatchSpool(ctx, cfg.SpoolDir, spoolNotify, 5*time.Second) })
	goRun(func() {
		w := &config.Watcher{Last: cfg, Logger: log}
		if err := w.Watch(ctx, cfgPath, a.SetConfig, a.ConfigRejected); err != nil {
			log.Error("config watch stopped; reloads need a restart", "err", err)
		}
	})
	if addr := cfg.Metrics(); addr != "" {
		goRun(func() { serveMetrics(ctx, log, addr, metrics.NewMux(m, a.Ready)) })
	}
	log.Info("weftd started", "node", cfg.NodeName, "cluster", cfg.Cluster.ID, "role", a.Status().Role,
		"packetFilter", pf.Name(), "socket", cfg.Socket, "version", version)

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
