// Package agent is weftd's core: it owns the reconcile loop, the only
// goroutine that changes kernel state, and answers the plugin's events. The
// desired state is recomputed from config + topology + CNI interface on every
// trigger (config change, plugin event, netlink event, periodic resync) and
// only the difference is applied. A kernel refusal is a condition and a
// retry with backoff; nothing here ever exits the process.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/dataplane"
	"github.com/weft-net/weft/pkg/discovery"
	"github.com/weft-net/weft/pkg/errsum"
	"github.com/weft-net/weft/pkg/packetfilter"
	"github.com/weft-net/weft/pkg/state"
	"github.com/weft-net/weft/pkg/topology"
	"github.com/weft-net/weft/pkg/toposource"
)

// Condition types reported in status.
const (
	CondCNIInterfaceReady = "CNIInterfaceReady"
	CondDataplaneReady    = "DataplaneReady"
	CondPacketFilterReady = "PacketFilterReady"
	CondConfigValid       = "ConfigValid"
	CondStateHealthy      = "StateHealthy"
	CondTopologyValid     = "TopologyValid"
	CondSpoolHealthy      = "SpoolHealthy"
	// CondSubmarinerRouteAgent is present while Submariner's route agent's
	// VXLAN device is on the node (coexist.go).
	CondSubmarinerRouteAgent = "SubmarinerRouteAgent"
	// CondRestartRequired is present (status false) while the file sets
	// keys that weftd applies only at its next start.
	CondRestartRequired = "RestartRequired"
)

// RoleUnknown is the role while no configuration is valid.
const RoleUnknown = "unknown"

// maxConfigProblems bounds the problems of a refused file kept in status,
// so a file of 20,000 bad CIDRs does not make status unanswerable.
const maxConfigProblems = 20

// Kernel is what the agent needs from the host besides the data-plane and
// packet-filter managers: listing interfaces and finding the underlay.
// Production uses the netlink implementations; the narrow interface lets
// unit tests run the loop without a kernel.
type Kernel interface {
	// Interfaces lists the host's interfaces with their IPv4 addresses,
	// and with ipv6 their global IPv6 ones too.
	Interfaces(ipv6 bool) ([]discovery.Iface, error)
	// Underlay returns the interface, address and MTU of the underlay:
	// the interface holding nodeIP when valid, else the one of the
	// default route (the IPv6 one with ipv6).
	Underlay(nodeIP netip.Addr, ipv6 bool) (name string, addr netip.Addr, mtu int, err error)
}

// Observer is told what the agent does, for metrics. Methods must not block.
type Observer interface {
	ReconcileDone(d time.Duration, err error)
	// PluginEvent counts a plugin request: verb is add, del, check or gc;
	// result is ok or error; spooled marks an event replayed from the spool.
	PluginEvent(verb, result string, spooled bool)
}

type nopObserver struct{}

func (nopObserver) ReconcileDone(time.Duration, error) {}
func (nopObserver) PluginEvent(string, string, bool)   {}

// Deps are the agent's collaborators.
type Deps struct {
	Observer  Observer // nil = none
	Log       *slog.Logger
	Store     *state.Store
	Kernel    Kernel
	Dataplane dataplane.Manager
	// PacketFilter is the backend; when nil, NewPacketFilter chooses it
	// from the first valid configuration (none is chosen without one).
	PacketFilter    packetfilter.Backend
	NewPacketFilter func(context.Context, *config.Config) (packetfilter.Backend, error)
	// Startup is what the process serves and stores with for its whole
	// life (socket, state and spool directories, metrics address); zero =
	// taken from the first configuration.
	Startup config.Startup
	// ConfigPath names the file in status.
	ConfigPath string
	Now        func() time.Time
	Version    string
	// MinSyncPeriod is the least time between two reconcile passes (see
	// DefaultMinSyncPeriod, used when zero; negative disables it).
	MinSyncPeriod time.Duration
	// Topology hands out the topology source for a configuration with
	// topology: kubernetes (started on first use); nil = the file only.
	// TopologyChanged is signalled when that source's topology changed.
	Topology        func(*config.Config) (toposource.Source, error)
	TopologyChanged <-chan struct{}
	// Desired, when set, is told every desired state a pass computed
	// (pathhealth.go).
	Desired DesiredFunc
}

// Agent is the daemon core.
type Agent struct {
	d       Deps
	trigger chan struct{}
	urgent  chan struct{} // TriggerNow: a pass without the MinSyncPeriod wait
	// triggers counts Trigger and TriggerNow calls, passes the passes run
	// (under mu): their ratio is what coalescing saves.
	triggers atomic.Uint64
	passes   uint64
	// ifaces is the last interface listing, watch what of it matters for
	// NetlinkEvent (relevance.go).
	ifaces []discovery.Iface
	watch  *watched
	// cniPartial says which family of a dual-stack node's CNI interface
	// discovery did not find ("" when none is missing); the node is not
	// ready meanwhile. Only the Run goroutine uses it.
	cniPartial string

	mu        sync.Mutex
	cfg       *config.Config // nil while no configuration was ever valid
	cfgStatus api.ConfigStatus
	pf        packetfilter.Backend
	pfSetting [2]string    // packetFilter, iptablesMode pf was chosen with
	passed    bool         // a pass with a configuration has completed
	gwHints   []netip.Addr // pod gateways the plugin reported, newest first
	gwHints6  []netip.Addr // the IPv6 ones
	conds     map[string]api.Condition
	last      *api.Reconcile
	ready     bool
	notReady  string
	role      string
	remotes   []api.Remote
	spool     api.Spool
	// topoProblems are the source's and Apply's problems of the last pass.
	topoProblems []string
	// pathHealth is the last data-path health report (nil: none).
	pathHealth *api.PathHealth

	// appliedFilter is the rule model of the last successful packet-filter
	// apply; only the reconcile pass touches it.
	appliedFilter *packetfilter.Model
	// kernelChanged is set by a relevant netlink event (NetlinkEvent) and
	// taken by the next pass, which then re-reads the route table.
	kernelChanged atomic.Bool
}

// New returns an agent for cfg. Call Run to start the loop. cfg may be nil
// (the file is missing or refused, see ConfigRejected): the agent then
// records and answers plugin events but computes no desired state and
// touches no kernel object until SetConfig gives it a valid one.
func New(cfg *config.Config, d Deps) *Agent {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Observer == nil {
		d.Observer = nopObserver{}
	}
	if d.Startup == (config.Startup{}) && cfg != nil {
		d.Startup = config.StartupOf(cfg)
	}
	if d.MinSyncPeriod == 0 {
		d.MinSyncPeriod = DefaultMinSyncPeriod
	}
	a := &Agent{
		d:         d,
		trigger:   make(chan struct{}, 1),
		urgent:    make(chan struct{}, 1),
		cfg:       cfg,
		cfgStatus: api.ConfigStatus{File: d.ConfigPath, Valid: cfg != nil},
		pf:        d.PacketFilter,
		conds:     map[string]api.Condition{},
		role:      roleOf(cfg),
		notReady:  "no reconcile yet",
	}
	if cfg != nil {
		if a.pf != nil {
			a.pfSetting = pfSettingOf(cfg)
		}
		a.configAccepted(cfg, "Loaded", "")
		a.cfgStatus.Warnings, a.cfgStatus.MoreWarnings = configWarnings(cfg)
	} else {
		a.notReady = "no valid configuration yet"
		a.setCond(CondConfigValid, false, "NotLoaded", "no configuration read yet", "")
	}
	if p := d.Store.LoadProblem(); p != "" {
		a.setCond(CondStateHealthy, false, "CorruptStateRebuilt", p, "none needed: attachments are rebuilt from plugin events; keep any state.json.corrupt-* file for a bug report")
	} else {
		a.setCond(CondStateHealthy, true, "Loaded", "", "")
	}
	return a
}

func roleOf(cfg *config.Config) string {
	if cfg == nil {
		return RoleUnknown
	}
	if cfg.NodeName == cfg.Cluster.Gateway {
		return "gateway"
	}
	return "non-gateway"
}

// Trigger asks for a reconcile soon; many triggers coalesce into one pass,
// and passes are at least MinSyncPeriod apart (coalesce.go).
func (a *Agent) Trigger() {
	a.triggers.Add(1)
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

// Config returns the configuration in force.
func (a *Agent) Config() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// SetConfig replaces the configuration (a reload, or the first valid one)
// and triggers a reconcile. Every key is applied by the next pass except
// those the process fixed when it started (socket, spoolDir, stateDir,
// metricsAddress) and the packet-filter backend once chosen
// (packetFilter, iptablesMode): those are reported in the condition
// RestartRequired, never passed off as reloaded.
func (a *Agent) SetConfig(cfg *config.Config) {
	a.mu.Lock()
	first := a.cfg == nil
	a.cfg = cfg
	a.role = roleOf(cfg)
	if a.d.Startup == (config.Startup{}) {
		a.d.Startup = config.StartupOf(cfg)
	}
	restart := a.d.Startup.Differences(cfg)
	if a.pf != nil {
		have, want := a.pfSetting, pfSettingOf(cfg)
		if have[0] != want[0] {
			restart = append(restart, "packetFilter")
		}
		// iptablesMode matters only to the iptables backend.
		if have[1] != want[1] && a.pf.Name() == config.PacketFilterIptables {
			restart = append(restart, "iptablesMode")
		}
	}
	a.cfgStatus = api.ConfigStatus{File: a.d.ConfigPath, Valid: true, RestartRequired: restart}
	a.cfgStatus.Warnings, a.cfgStatus.MoreWarnings = configWarnings(cfg)
	if first {
		a.notReady = "no reconcile yet"
	}
	a.mu.Unlock()

	reason := "Reloaded"
	if first {
		reason = "Loaded"
	}
	if len(restart) == 0 {
		a.configAccepted(cfg, reason, "")
		a.clearCond(CondRestartRequired)
	} else {
		names := strings.Join(restart, ", ")
		a.configAccepted(cfg, reason+"ExceptRestartRequired", fmt.Sprintf("applied, except %s (see RestartRequired)", names))
		a.setCond(CondRestartRequired, false, "FieldsChanged", a.restartMessage(cfg, restart),
			"restart weftd to apply them: the data plane stays in place and the plugin spools pod events while it restarts")
	}
	a.d.Log.Info("configuration applied", "first", first, "role", roleOf(cfg), "gateway", cfg.Cluster.Gateway, "restartRequired", restart)
	a.TriggerNow()
}

// restartMessage says, per key, what the file asks and what stays in use.
func (a *Agent) restartMessage(cfg *config.Config, keys []string) string {
	s := a.d.Startup
	a.mu.Lock()
	pf := a.pfSetting
	a.mu.Unlock()
	inUse := map[string][2]string{
		"socket":         {cfg.Socket, s.Socket},
		"spoolDir":       {cfg.SpoolDir, s.SpoolDir},
		"stateDir":       {cfg.StateDir, s.StateDir},
		"metricsAddress": {cfg.Metrics(), s.MetricsAddress},
		"packetFilter":   {cfg.PacketFilter, pf[0]},
		"iptablesMode":   {cfg.IptablesMode, pf[1]},
	}
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		v := inUse[k]
		parts = append(parts, fmt.Sprintf("%s: the file says %q, weftd keeps %q until restarted", k, v[0], v[1]))
	}
	return strings.Join(parts, "; ")
}

func pfSettingOf(cfg *config.Config) [2]string {
	return [2]string{cfg.PacketFilter, cfg.IptablesMode}
}

// configAccepted records that cfg is in force: ConfigValid true with
// reason and msg. What validation merged (nested or duplicate CIDRs of one
// cluster) stays visible in the condition, and under config.warnings,
// until the file is tidied.
func (a *Agent) configAccepted(cfg *config.Config, reason, msg string) {
	w := cfg.WarningSummary()
	if w == "" {
		a.setCond(CondConfigValid, true, reason, msg, "")
		return
	}
	a.d.Log.Warn("configuration accepted with warnings", "warnings", len(cfg.Parsed.Warnings), "first", cfg.Parsed.Warnings[0].Error())
	if msg != "" {
		msg += "; "
	}
	a.setCond(CondConfigValid, true, reason+"WithWarnings", msg+w, "remove the merged entries from the file; routes and sets already use what covers them")
}

// configWarnings is what status lists under config.warnings, bounded like
// the problems of a refused file.
func configWarnings(cfg *config.Config) (ws []api.ConfigProblem, more int) {
	for i, w := range cfg.Parsed.Warnings {
		if i == maxConfigProblems {
			return ws, len(cfg.Parsed.Warnings) - i
		}
		ws = append(ws, api.ConfigProblem{Field: w.Path, Reason: w.Reason, Fix: "remove it from the file: what covers it is in force"})
	}
	return ws, 0
}

// ConfigRejected records that the file was refused (unreadable, not
// parsable or invalid). With a configuration in force it stays in force;
// without one, weftd stays not ready, keeps recording plugin events and
// leaves the kernel as it is, until the file is fixed.
func (a *Agent) ConfigRejected(err error) {
	problems := config.Explain(err)
	if len(problems) == 0 {
		return
	}
	a.mu.Lock()
	inForce := a.cfg != nil
	cs := api.ConfigStatus{File: a.d.ConfigPath, Valid: false, RestartRequired: a.cfgStatus.RestartRequired}
	for i, p := range problems {
		if i == maxConfigProblems {
			cs.MoreProblems = len(problems) - i
			break
		}
		cs.Problems = append(cs.Problems, api.ConfigProblem(p))
	}
	a.cfgStatus = cs
	if !inForce {
		a.ready = false
		a.notReady = "no valid configuration: " + problemLine(problems[0])
	}
	a.mu.Unlock()

	reason := "InvalidConfig"
	var fe *config.FileError
	var ve *config.ValidationError
	switch {
	case errors.As(err, &fe) && fe.Read:
		reason = "FileUnreadable"
	case !errors.As(err, &ve):
		reason = "ParseError"
	}
	fix := problems[0].Fix
	if len(problems) > 1 {
		fix += fmt.Sprintf(" (and %d more: weftd status --json lists them under config.problems)", len(problems)-1)
	}
	summary := summarizeProblems(problems)
	if inForce {
		a.d.Log.Error("configuration refused; keeping the last good configuration", "problems", len(problems), "first", summary)
		fix += "; the last good configuration stays in force until then"
	} else {
		a.d.Log.Error("no valid configuration: not ready; plugin events are recorded and the data plane is left as it is until the file is fixed",
			"problems", len(problems), "first", summary)
		fix += "; weftd applies the file as soon as it is valid, no restart needed"
	}
	a.setCond(CondConfigValid, false, reason, summary, fix)
}

// problemLine is one problem on one line: field = value: reason.
func problemLine(p config.Problem) string {
	s := p.Reason
	if p.Value != "" {
		s = p.Value + ": " + s
	}
	if p.Field != "" {
		s = p.Field + " = " + s
	}
	return s
}

// summarizeProblems joins the first few problems and counts the rest.
func summarizeProblems(ps []config.Problem) string {
	const show = 3
	lines := make([]string, 0, show+1)
	for i, p := range ps {
		if i == show {
			lines = append(lines, fmt.Sprintf("and %d more", len(ps)-show))
			break
		}
		lines = append(lines, problemLine(p))
	}
	return strings.Join(lines, "; ")
}

// resyncInterval is the configured resync period, or the default while
// there is no configuration.
func (a *Agent) resyncInterval() time.Duration {
	if cfg := a.Config(); cfg != nil {
		return cfg.ResyncInterval.Duration
	}
	return config.DefaultResyncInterval
}

// packetFilter returns the backend, choosing it on first use.
func (a *Agent) packetFilter(ctx context.Context, cfg *config.Config) (packetfilter.Backend, error) {
	a.mu.Lock()
	pf := a.pf
	a.mu.Unlock()
	if pf != nil {
		return pf, nil
	}
	if a.d.NewPacketFilter == nil {
		return nil, errors.New("no packet-filter backend")
	}
	pf, err := a.d.NewPacketFilter(ctx, cfg)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.pf, a.pfSetting = pf, pfSettingOf(cfg)
	a.mu.Unlock()
	return pf, nil
}

// Run reconciles until ctx ends. resync is read from the config on each
// pass so a reload can change it.
//
// The first pass, every periodic resync and every pass after a failed one
// verify: they re-read all of weft's objects from the kernel and repair any
// drift. Passes triggered by events (plugin, netlink, config) trust what the
// last Apply verified for what they were not told about, so their cost
// follows what changed rather than the number of peers.
func (a *Agent) Run(ctx context.Context) {
	backoff := time.Duration(0)
	var retry <-chan time.Time
	resync := time.NewTimer(a.resyncInterval())
	defer resync.Stop()
	verify := true
	pace := pacer{min: a.d.MinSyncPeriod}
	for {
		err := a.reconcile(ctx, verify)
		pace.passEnded(a.d.Now())
		if err != nil {
			if backoff == 0 {
				backoff = 100 * time.Millisecond
			} else if backoff < 30*time.Second {
				backoff *= 2
			}
			a.d.Log.Warn("reconcile failed, retrying", "err", err, "in", backoff)
			retry = time.After(backoff)
		} else {
			backoff, retry = 0, nil
		}
		// A failed write leaves the kernel unknown: verify after one.
		verify = err != nil
		select {
		case <-ctx.Done():
			return
		case <-a.trigger:
			if !a.holdBack(ctx, &pace) {
				return
			}
		case <-a.urgent:
		case <-retry:
			if !a.holdBack(ctx, &pace) {
				return
			}
		case <-resync.C:
			verify = true
			resync.Reset(a.resyncInterval())
		}
	}
}

// Reconcile makes one verifying pass: discover, compute the desired state,
// re-read weft's objects, apply the difference, record conditions. It
// returns the first error, for backoff.
func (a *Agent) Reconcile(ctx context.Context) error {
	return a.reconcile(ctx, true)
}

// reconcile is one pass; verify as in dataplane.State.Verify, and only a
// verifying pass inspects the host's foreign packet filter (Findings lists
// every table: a few ms that event-driven passes need not pay, and what it
// reports changes only behind weft's back, which the resync catches).
func (a *Agent) reconcile(ctx context.Context, verify bool) error {
	cfg := a.Config()
	if cfg == nil {
		// Nothing to compute a desired state from: the kernel is left as
		// it is (a data plane from an earlier run keeps carrying traffic).
		return nil
	}
	if !a.passed {
		verify = true // the first pass with a configuration reads everything
	}
	start := a.d.Now()
	// Taken before reading the kernel: an event during the pass makes the
	// next one re-read again.
	rereadRoutes := a.kernelChanged.Swap(false)
	cfg, topoErr := a.withTopology(cfg)
	var errs []error
	ph := phases{log: a.d.Log, now: a.d.Now, last: start}

	// A changed CNI interface is recorded durably (a state write) while the
	// kernel is programmed; the pass, and readiness, wait for both.
	cni, recorded, cniErr := a.discover(ctx, cfg, &ph)
	ph.mark("discover")
	if cniErr != nil {
		errs = append(errs, cniErr)
	}

	in := topology.Inputs{NodeIP: cfg.Parsed.NodeIP}
	if cfg.Parsed.Underlay6 {
		in.NodeIP = cfg.Parsed.NodeIP6
	}
	cni6 := ""
	if cni != nil {
		in.CNIIf = cni.Name
		in.CNIIP, _ = netip.ParseAddr(cni.IP)
		in.CNIIP6, _ = netip.ParseAddr(cni.IP6)
		cni6 = cni.Name6
	}
	ul, addr, mtu, err := a.d.Kernel.Underlay(in.NodeIP, cfg.Parsed.Underlay6)
	ph.mark("underlay")
	a.noteWatched(cfg, a.ifaces, in.CNIIf, in.CNIIP, ul, cni6)
	var remotes []api.Remote
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("find underlay: %w", err))
		a.setCond(CondDataplaneReady, false, "NoUnderlay", err.Error(), "set nodeIP in the config to an address of this node, or give the node a default route")
	case topoErr != nil:
		errs = append(errs, topoErr)
		a.noTopology(topoErr)
	default:
		in.UnderlayIf, in.UnderlayMTU = ul, mtu
		if !in.NodeIP.IsValid() {
			in.NodeIP = addr
		}
		res, err := topology.Desired(cfg, in)
		ph.mark("topology")
		if err != nil {
			errs = append(errs, fmt.Errorf("compute desired state: %w", err))
			a.setCond(CondTopologyValid, false, "Invalid", err.Error(), "fix cluster.nodes / remotes in the config")
		} else {
			if probs := a.withTopologyProblems(res.Problems); len(probs) > 0 {
				a.setCond(CondTopologyValid, false, "Problems", errsum.Strings(probs, "problems"), "fix cluster.nodes / vtepCIDR so every node maps to its own VTEP address")
			} else {
				a.setCond(CondTopologyValid, true, "Valid", "", "")
			}
			res.Dataplane.Verify = verify
			res.Dataplane.RereadRoutes = rereadRoutes
			dpErr := errsum.Bound(a.d.Dataplane.Apply(ctx, res.Dataplane))
			ph.mark("dataplane")
			var ce *dataplane.ConflictError
			errors.As(dpErr, &ce)
			a.otherRouteAgent(ce)
			if dpErr != nil {
				errs = append(errs, fmt.Errorf("apply data plane: %w", dpErr))
				reason, fix := "ApplyFailed", "see weftd logs; weft retries with backoff"
				if errors.As(dpErr, &ce) {
					// Another VXLAN device (Submariner's route agent's) holds
					// weft's VNI and port: only the operator can choose.
					reason, fix = "VXLANConflict", ce.Fix()
				}
				a.setCond(CondDataplaneReady, false, reason, dpErr.Error(), fix)
			} else {
				a.setCond(CondDataplaneReady, true, "Applied", "", "")
			}
			// An event-driven pass with the same rule model as the last
			// successful apply has nothing to send: skip the backend, whose
			// steady-state check is O(rules) for iptables (a save and the
			// ipset listings). Verifying passes always apply, repairing
			// drift made behind weft's back.
			pf, pfErr := a.packetFilter(ctx, cfg)
			if pfErr != nil {
				errs = append(errs, fmt.Errorf("start packet filter: %w", pfErr))
				a.setCond(CondPacketFilterReady, false, "BackendUnavailable", pfErr.Error(), "see weftd logs; set packetFilter to a backend this node supports; weft retries with backoff")
			} else if verify || a.appliedFilter == nil || !a.appliedFilter.Equal(res.Filter) {
				a.appliedFilter = nil
				pm := res.Filter
				pm.Verify = verify // the iptables backend trusts its cache otherwise
				pfErr = errsum.Bound(pf.Apply(ctx, pm))
				ph.mark("packetFilter")
				switch {
				case errors.Is(pfErr, packetfilter.ErrDegraded):
					// Traffic rules are in place; the periodic resync
					// retries the rest without holding readiness back.
					a.d.Log.Warn("packet filter degraded", "backend", pf.Name(), "err", pfErr)
					a.setCond(CondPacketFilterReady, false, "Degraded", pfErr.Error(), "see the other conditions for the foreign rules involved; weft retries on every resync")
					pfErr = nil
					m := res.Filter
					a.appliedFilter = &m
				case pfErr != nil:
					errs = append(errs, fmt.Errorf("apply packet filter (%s): %w", pf.Name(), pfErr))
					a.setCond(CondPacketFilterReady, false, "ApplyFailed", pfErr.Error(), "see weftd logs; weft retries with backoff")
				default:
					m := res.Filter
					a.appliedFilter = &m
					a.setCond(CondPacketFilterReady, true, "Applied", "", "")
				}
			}
			if verify && pf != nil {
				a.applyFindings(pf.Findings(ctx))
				ph.mark("findings")
			}
			remotes = remoteStatus(cfg, res.Dataplane, dpErr == nil)
			// After the apply: probes that leave before weft's routes and
			// NAT rules would take (and conntrack would remember) another
			// path.
			if a.d.Desired != nil {
				a.d.Desired(cfg, in, res)
			}
		}
	}

	if err := recorded(); err != nil {
		errs = append(errs, err)
	}
	ph.mark("record")
	// Bounded: this error is lastReconcile, the readiness reason and so
	// the CHECK reason, all of which must fit in one API answer.
	err = errsum.Join(errs...)
	end := a.d.Now()
	ph.log.Debug("reconcile pass", append([]any{"verify", verify, "ms", ms(end.Sub(start)), "err", err != nil}, ph.attrs...)...)
	a.mu.Lock()
	a.passes++
	a.last = &api.Reconcile{At: end.UTC(), DurationMs: float64(end.Sub(start).Microseconds()) / 1000,
		Passes: a.passes, Triggers: a.triggers.Load()}
	if err != nil {
		a.last.Error = err.Error()
	}
	a.remotes = remotes
	a.passed = true
	a.d.Observer.ReconcileDone(end.Sub(start), err)
	switch {
	case cni == nil:
		a.ready, a.notReady = false, "CNI interface not found yet"
	case a.cniPartial != "":
		a.ready, a.notReady = false, "CNI interface: "+a.cniPartial
	case err != nil:
		a.ready, a.notReady = false, "last reconcile failed: "+err.Error()
	default:
		a.ready, a.notReady = true, ""
	}
	a.mu.Unlock()
	return err
}

// phases times the steps of a pass for the debug log.
type phases struct {
	log   *slog.Logger
	now   func() time.Time
	last  time.Time
	attrs []any
}

func (p *phases) mark(name string) {
	t := p.now()
	p.attrs = append(p.attrs, name+"Ms", ms(t.Sub(p.last)))
	p.last = t
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// discover evaluates the CNI interface from the kernel as it is now and
// starts recording a change durably. It returns the current choice, or
// nil, and recorded, which waits for the record and returns its error.
func (a *Agent) discover(ctx context.Context, cfg *config.Config, ph *phases) (_ *api.CNIInterface, recorded func() error, _ error) {
	recorded = func() error { return nil }
	record := func(c *api.CNIInterface) {
		done := make(chan error, 1)
		go func() { done <- a.d.Store.SetCNI(ctx, c) }()
		recorded = func() error {
			if err := <-done; err != nil {
				return fmt.Errorf("record CNI interface: %w", err)
			}
			return nil
		}
	}
	v4, v6 := podFamilies(cfg)
	ifaces, err := a.d.Kernel.Interfaces(v6)
	ph.mark("interfaces")
	a.ifaces = ifaces
	if err != nil {
		a.setCond(CondCNIInterfaceReady, false, "ListFailed", err.Error(), "")
		return a.d.Store.CNI(), recorded, fmt.Errorf("list interfaces: %w", err)
	}
	a.mu.Lock()
	hints := discovery.Hints{
		Pinned:     cfg.CNIInterface,
		GatewayIPs: slices.Concat(a.gwHints, a.gwHints6),
		Exclude:    []string{cfg.VXLAN.Name, cfg.CableVXLAN.Name},
	}
	a.mu.Unlock()
	cands := discovery.Filter(ifaces, cfg.Parsed.PodCIDRs, hints.Exclude)
	// One choice per family the pods have, by the same rules. A missing
	// family keeps the node not ready; the other is programmed all the
	// same (its routes' source, its host SNAT), whichever family came
	// first: Calico creates vxlan-v6.calico and vxlan.calico in no fixed
	// order. A dual-stack record without its IPv4 half has no name and
	// IP, only the IPv6 fields.
	rec := &api.CNIInterface{Since: a.d.Now().UTC()}
	var cerr error
	found := false
	a.cniPartial = ""
	if v4 {
		if c, err := discovery.Choose(cands, hints); err != nil {
			cerr = err
		} else {
			rec.Name, rec.IP, rec.Source = c.Name, c.IP.String(), c.Source
			found = true
		}
	}
	if v6 {
		if c, err := discovery.Choose6(cands, hints); err != nil {
			cerr = errors.Join(cerr, err)
		} else {
			if !v4 {
				rec.Name, rec.Source = c.Name, c.Source
			}
			rec.Name6, rec.IP6, rec.Source6 = c.Name, c.IP.String(), c.Source
			found = true
		}
	}
	if !found {
		rec = nil
	}
	prev := a.d.Store.CNI()
	if rec == nil {
		a.setCond(CondCNIInterfaceReady, false, "NotFound", cerr.Error(),
			"weft waits for the primary CNI (no restart needed); if the CNI interface has an unusual name, set cniInterface in the config")
		if prev != nil {
			a.d.Log.Warn("CNI interface gone", "name", prev.Name, "ip", prev.IP)
			record(nil)
		}
		return nil, recorded, nil
	}
	report := func() {
		if cerr != nil { // a dual-stack node with one family found
			a.cniPartial = cerr.Error()
			a.setCond(CondCNIInterfaceReady, false, "NotFound", cerr.Error(),
				"weft waits for the primary CNI to give its interface an address of that family (no restart needed)")
			return
		}
		a.setCond(CondCNIInterfaceReady, true, "Found", describeCNI(rec), "")
	}
	if prev != nil && prev.Name == rec.Name && prev.IP == rec.IP && prev.Name6 == rec.Name6 && prev.IP6 == rec.IP6 {
		rec.Since = prev.Since
		if prev.SameAddresses(rec) {
			report()
			return prev, recorded, nil
		}
	}
	a.d.Log.Info("CNI interface discovered", "name", rec.Name, "ip", rec.IP, "source", rec.Source, "name6", rec.Name6, "ip6", rec.IP6)
	record(rec)
	report()
	return rec, recorded, nil
}

// describeCNI is the CNIInterfaceReady message: "cni0 10.1.2.1
// (well-known)", and the IPv6 address and its interface when known.
func describeCNI(c *api.CNIInterface) string {
	var parts []string
	if c.IP != "" {
		parts = append(parts, fmt.Sprintf("%s %s (%s)", c.Name, c.IP, c.Source))
	}
	if c.IP6 != "" {
		parts = append(parts, fmt.Sprintf("%s %s (%s)", c.Name6, c.IP6, c.Source6))
	}
	return strings.Join(parts, ", ")
}

// podFamilies says which families the local cluster's pods have.
func podFamilies(cfg *config.Config) (v4, v6 bool) {
	for _, p := range cfg.Parsed.PodCIDRs {
		if p.Addr().Is6() {
			v6 = true
		} else {
			v4 = true
		}
	}
	return v4, v6
}

func remoteStatus(cfg *config.Config, s dataplane.State, ok bool) []api.Remote {
	// s.Routes is sorted by destination (topology sorts it): a binary
	// search per CIDR instead of a set of 20,000.
	has := func(p netip.Prefix) bool {
		_, found := slices.BinarySearchFunc(s.Routes, p, func(r dataplane.Route, p netip.Prefix) int { return dataplane.CompareDst(r.Dst, p) })
		return found
	}
	// A remote's CIDRs of a family the local pods lack are never routed
	// (TopologyValid names them): they do not make its routes missing.
	v4, v6 := podFamilies(cfg)
	out := make([]api.Remote, 0, len(cfg.Parsed.Remotes))
	for _, r := range cfg.Parsed.Remotes {
		rs := api.Remote{ID: r.ID, RoutesInstalled: ok, CIDRs: make([]string, 0, len(r.PodCIDRs)+len(r.ServiceCIDRs))}
		// fam[0] IPv4, fam[1] IPv6: routed at all, and every route there.
		var routed, installed [2]bool
		installed = [2]bool{ok, ok}
		for _, list := range [][]netip.Prefix{r.PodCIDRs, r.ServiceCIDRs} {
			for _, p := range list {
				rs.CIDRs = append(rs.CIDRs, p.String())
				f := 0
				if p.Addr().Is6() {
					f = 1
				}
				if !(v6 && f == 1 || v4 && f == 0) {
					continue
				}
				routed[f] = true
				if installed[f] && !has(p) {
					installed[f] = false
				}
			}
		}
		for f, name := range []string{"ipv4", "ipv6"} {
			if routed[f] {
				rs.Families = append(rs.Families, api.RemoteFamily{Family: name, RoutesInstalled: installed[f]})
				rs.RoutesInstalled = rs.RoutesInstalled && installed[f]
			}
		}
		out = append(out, rs)
	}
	return out
}

// applyFindings turns the backend's findings into conditions, clearing the
// finding conditions that are no longer reported.
func (a *Agent) applyFindings(fs []packetfilter.Finding) {
	seen := map[string]bool{}
	for _, f := range fs {
		seen[f.Type] = true
		a.setCond(f.Type, false, f.Reason, f.Message, f.Fix)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for t := range a.conds {
		if isFindingType(t) && !seen[t] {
			delete(a.conds, t)
		}
	}
}

func isFindingType(t string) bool {
	switch t {
	case CondCNIInterfaceReady, CondDataplaneReady, CondPacketFilterReady, CondConfigValid, CondStateHealthy, CondTopologyValid, CondSpoolHealthy,
		CondSubmarinerRouteAgent, CondRestartRequired, CondTopologySynced, CondGatewayReachable, CondRemotesReachable:
		return false
	}
	return true
}

// setCond records a condition; Since changes only when status or reason do.
func (a *Agent) setCond(typ string, status bool, reason, msg, fix string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.conds[typ]
	if !ok || c.Status != status || c.Reason != reason {
		c.Since = a.d.Now().UTC()
	}
	// A message may quote many errors (a config with thousands of bad
	// CIDRs): bounded like every error that reaches status.
	c.Type, c.Status, c.Reason, c.Message, c.Fix = typ, status, reason, errsum.Text(msg), fix
	a.conds[typ] = c
}

// clearCond removes a condition that no longer applies.
func (a *Agent) clearCond(typ string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.conds, typ)
}

// Status builds the status document.
func (a *Agent) Status() api.Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	node, cluster := a.d.Startup.NodeName, a.d.Startup.ClusterID
	if a.cfg != nil {
		node, cluster = a.cfg.NodeName, a.cfg.Cluster.ID
	}
	cs := a.cfgStatus
	cs.Problems = append([]api.ConfigProblem(nil), cs.Problems...)
	cs.RestartRequired = append([]string(nil), cs.RestartRequired...)
	st := api.Status{
		Node:         node,
		Cluster:      cluster,
		Role:         a.role,
		Ready:        a.ready,
		CNIInterface: a.d.Store.CNI(),
		Attachments:  a.d.Store.Len(),
		Remotes:      append([]api.Remote(nil), a.remotes...),
		Spool:        a.spool,
		Config:       &cs,
		Version:      a.d.Version,
		Topology:     a.topologyStatus(a.cfg),
		PathHealth:   a.pathHealth,
	}
	if a.pf != nil {
		st.PacketFilter = a.pf.Name()
	}
	if a.last != nil {
		l := *a.last
		st.LastReconcile = &l
	}
	for _, c := range a.conds {
		st.Conditions = append(st.Conditions, c)
	}
	if c, ok := brokerCond(st.Topology); ok {
		st.Conditions = append(st.Conditions, c)
	}
	sort.Slice(st.Conditions, func(i, j int) bool { return st.Conditions[i].Type < st.Conditions[j].Type })
	return st
}

// Ready reports readiness and, when not ready, why.
func (a *Agent) Ready() (bool, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ready, a.notReady
}
