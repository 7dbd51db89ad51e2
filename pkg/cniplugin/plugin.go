package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/client"
	"github.com/weft-net/weft/pkg/spool"
)

// About is printed by the plugin when it is run without CNI_COMMAND.
const About = "weft chained plugin"

// ErrPluginNotAvailable is the CNI 1.1 well-known code STATUS returns while
// the plugin cannot serve ADD. (The cni v1.3.0 types package does not name it.)
const ErrPluginNotAvailable uint = 50

// VersionInfo lists the CNI spec versions weft speaks: flannel's conflists
// say 0.3.1, Calico's 1.0.0; STATUS and GC need 1.1.0. 0.1.0 and 0.2.0
// (older conflists, and libcni's reading of a missing cniVersion) work too:
// weft reads their ip4/ip6 result through the CNI library's conversion and
// prints it back unchanged. A version not listed here makes every ADD fail
// in the CNI library before weft's failPolicy can apply, so install-cni
// refuses to insert weft into such a conflist (conflist.Supported).
func VersionInfo() version.PluginInfo {
	return version.PluginSupports("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
}

// Plugin implements the CNI verbs. Its fields are the process environment it
// depends on, so tests can run it in-process.
type Plugin struct {
	// Stderr receives the logs when the configuration has no logFile.
	// Never stdout: stdout carries only the result or the error.
	Stderr io.Writer
	// Now stamps events.
	Now func() time.Time
}

// New returns a Plugin logging to stderr.
func New(stderr io.Writer) *Plugin {
	return &Plugin{Stderr: stderr, Now: time.Now}
}

// Funcs wires the verbs for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, GC: p.GC, Status: p.Status}
}

// Add reports the attachment to weftd and passes prevResult through.
//
// Policy when weftd cannot take the event:
//   - unreachable (dial error, timeout, 5xx, untrusted socket): open → spool
//     the event and succeed, closed → code 11 (try again later);
//   - rejected (4xx, or an answer we cannot use): the request itself is what
//     is wrong, so spooling it would only replay the same rejection. open →
//     log and succeed (a pod must not be blocked by weft); closed → code 999
//     carrying the daemon's message, since no well-known code says "the
//     daemon refused" (7 would blame the network configuration).
//
// A full or failing spool under open policy is logged and ADD still
// succeeds: the daemon's discovery is level-triggered (netlink events and
// resync), so a lost event delays convergence but loses no state for good.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	log, done := p.logger(conf, "ADD", args)
	defer done()
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "must be called as a chained plugin", "")
	}
	ev := p.event(api.VerbAdd, conf, args, log)
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout)
	defer cancel()
	err = p.ask(ctx, conf, conf.FailPolicy == FailOpen, func(ctx context.Context, c *client.Client) error { return c.Add(ctx, ev) })
	switch {
	case err == nil:
		log.Debug("event delivered")
	case errors.Is(err, client.ErrUnreachable):
		logUnreachable(log, err)
		if conf.FailPolicy == FailClosed {
			return types.NewError(types.ErrTryAgainLater, "weftd is not reachable; try again later", err.Error())
		}
		p.spool(ctx, log, conf, ev)
	default:
		log.Error("weftd rejected the ADD event", "err", err)
		if conf.FailPolicy == FailClosed {
			return types.NewError(types.ErrInternal, "weftd rejected the ADD event", err.Error())
		}
	}
	return types.PrintResult(conf.PrevResult, conf.CNIVersion)
}

// Del reports the removal to weftd. It never fails for anything but an
// invalid configuration: a missing or broken prevResult, netns, daemon or
// record are all fine, and repeated DELs succeed. When weftd is unreachable
// the event is spooled whatever the fail policy, so the daemon still learns
// about it; when weftd rejects it there is nothing better to do than log.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	conf, err := decodeConfig(args.StdinData)
	if err != nil {
		return err
	}
	log, done := p.logger(conf, "DEL", args)
	defer done()
	if err := conf.parsePrevResult(); err != nil {
		log.Warn("ignoring prevResult on DEL", "err", err)
		conf.PrevResult, conf.Prev = nil, nil
	}
	ev := p.event(api.VerbDel, conf, args, log)
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout)
	defer cancel()
	err = p.ask(ctx, conf, true, func(ctx context.Context, c *client.Client) error { return c.Del(ctx, ev) })
	switch {
	case err == nil:
		log.Debug("event delivered")
	case errors.Is(err, client.ErrUnreachable):
		logUnreachable(log, err)
		p.spool(ctx, log, conf, ev)
	default:
		log.Error("weftd rejected the DEL event", "err", err)
	}
	return nil
}

// Check asks weftd whether it knows the attachment and the node is ready.
//
// Codes: weftd unreachable → 11. Not ready → 11 as well: readiness is a
// transient condition ("try again later" is exactly what the spec says 11
// is for). Attachment unknown → 999: the closest well-known code, 3
// ("container unknown"), tells the runtime the container needs no cleanup,
// which is not what a daemon that lost its record means. A 4xx answer → 999
// with the daemon's message.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	log, done := p.logger(conf, "CHECK", args)
	defer done()
	// Like portmap/bandwidth/tuning: CHECK (>= 0.4.0) of a chained plugin
	// always has the result of the plugins before it.
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "must be called as a chained plugin", "")
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout)
	defer cancel()
	resp, err := client.New(conf.Socket, conf.Timeout).Check(ctx, api.CheckRequest{ContainerID: args.ContainerID, IfName: args.IfName})
	switch {
	case errors.Is(err, client.ErrUnreachable):
		logUnreachable(log, err)
		return types.NewError(types.ErrTryAgainLater, "weftd is not reachable; try again later", err.Error())
	case err != nil:
		return types.NewError(types.ErrInternal, "weftd rejected the CHECK request", err.Error())
	case !resp.Known:
		return types.NewError(types.ErrInternal, fmt.Sprintf("attachment %s/%s is unknown to weftd", args.ContainerID, args.IfName), resp.Reason)
	case !resp.Ready:
		reason := resp.Reason
		if reason == "" {
			reason = "no reason given"
		}
		return types.NewError(types.ErrTryAgainLater, "weft node is not ready: "+reason, "")
	}
	return nil
}

// Status: with failPolicy open ADD never depends on weftd, so a valid
// configuration is all STATUS needs. With closed, ADD fails while weftd is
// away, so STATUS asks weftd and reports code 50 when it cannot be reached
// or refuses us (either way ADD would fail).
func (p *Plugin) Status(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.FailPolicy == FailOpen {
		return nil
	}
	log, done := p.logger(conf, "STATUS", args)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout)
	defer cancel()
	if _, err := client.New(conf.Socket, conf.Timeout).Status(ctx); err != nil {
		logUnreachable(log, err)
		return types.NewError(ErrPluginNotAvailable, "weftd is not available", err.Error())
	}
	return nil
}

// GC sends the runtime's valid attachments of this network to weftd, which
// forgets the others. GC is best-effort and periodic: the runtime calls it
// again later with the full list, and nothing is spooled for it. So it
// follows the fail policy like ADD: open → log and succeed (a daemon that
// is away must not turn into runtime errors), closed → unreachable is code
// 11 and a rejection code 999.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	log, done := p.logger(conf, "GC", args)
	defer done()
	req := api.GCRequest{Network: conf.Name, ValidAttachments: make([]api.AttachmentKey, 0, len(conf.Attachments))}
	for _, a := range conf.Attachments {
		req.ValidAttachments = append(req.ValidAttachments, api.AttachmentKey{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout)
	defer cancel()
	resp, err := client.New(conf.Socket, conf.Timeout).GC(ctx, req)
	switch {
	case err == nil:
		log.Info("gc done", "valid", len(req.ValidAttachments), "removed", resp.Removed)
	case errors.Is(err, client.ErrUnreachable):
		logUnreachable(log, err)
		if conf.FailPolicy == FailClosed {
			return types.NewError(types.ErrTryAgainLater, "weftd is not reachable; try again later", err.Error())
		}
	default:
		log.Error("weftd rejected the GC request", "err", err)
		if conf.FailPolicy == FailClosed {
			return types.NewError(types.ErrInternal, "weftd rejected the GC request", err.Error())
		}
	}
	return nil
}

// spoolShare is the part of the timeout kept for the spool when an event
// may have to be spooled, at most maxSpoolShare: a daemon that accepts and
// never answers must not leave the spool write without time.
const (
	spoolShare    = 4 // 1/4
	maxSpoolShare = 500 * time.Millisecond
)

// ask runs one request to weftd within ctx. When the event may be spooled
// on failure, the request gets ctx's time minus the spool's share, so that
// the whole verb, spool included, ends within the configured timeout.
func (p *Plugin) ask(ctx context.Context, conf *Config, spoolable bool, req func(context.Context, *client.Client) error) error {
	if spoolable {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, conf.Timeout-min(conf.Timeout/spoolShare, maxSpoolShare))
		defer cancel()
	}
	return req(ctx, client.New(conf.Socket, conf.Timeout))
}

// spool writes ev to the spool within what is left of ctx (the verb's
// timeout).
func (p *Plugin) spool(ctx context.Context, log *slog.Logger, conf *Config, ev api.Event) {
	w, err := spool.Write(ctx, conf.SpoolDir, conf.SpoolLimit, ev)
	if err != nil {
		log.Error("event lost: weftd unreachable and spooling failed", "spoolDir", conf.SpoolDir, "err", err)
		return
	}
	if w.Unlocked {
		log.Warn("event spooled without the spool lock: another writer held it until the timeout came near (a stuck plugin process?)",
			"spoolDir", conf.SpoolDir, "file", w.Name)
		return
	}
	log.Info("event spooled for weftd", "spoolDir", conf.SpoolDir, "file", w.Name)
}

func logUnreachable(log *slog.Logger, err error) {
	if errors.Is(err, client.ErrUntrustedSocket) {
		// Someone other than root may be impersonating weftd: say so loudly.
		log.Error("refusing to talk to an untrusted weftd socket", "err", err)
		return
	}
	log.Warn("weftd unreachable", "err", err)
}

// event builds what the daemon is told about this attachment from the CNI
// arguments and the prevResult (if any). Pod IPs are the result's addresses
// except those explicitly assigned to a host-side interface.
func (p *Plugin) event(verb string, conf *Config, args *skel.CmdArgs, log *slog.Logger) api.Event {
	ev := api.Event{
		Verb:        verb,
		ContainerID: args.ContainerID,
		IfName:      args.IfName,
		Netns:       args.Netns,
		Network:     conf.Name,
		Time:        p.Now().UTC(),
	}
	podNS, podName, err := PodFromArgs(args.Args)
	if err != nil {
		log.Warn("ignoring malformed CNI_ARGS", "err", err)
	}
	ev.PodNamespace, ev.PodName = podNS, podName
	if conf.Prev == nil {
		return ev
	}
	ev.IPs, ev.HostInterfaces = fromResult(conf.Prev)
	return ev
}

func fromResult(r *types100.Result) ([]api.PodIP, []string) {
	var ips []api.PodIP
	var host []string
	for _, ifc := range r.Interfaces {
		if ifc != nil && ifc.Sandbox == "" && ifc.Name != "" {
			host = append(host, ifc.Name)
		}
	}
	for _, ip := range r.IPs {
		if ip == nil || ip.Address.IP == nil {
			continue
		}
		if ip.Interface != nil {
			i := *ip.Interface
			if i >= 0 && i < len(r.Interfaces) && r.Interfaces[i] != nil && r.Interfaces[i].Sandbox == "" {
				continue
			}
		}
		pip := api.PodIP{Address: ip.Address.String()}
		if ip.Gateway != nil {
			pip.Gateway = ip.Gateway.String()
		}
		ips = append(ips, pip)
	}
	return ips, host
}

// PodFromArgs reads K8S_POD_NAMESPACE and K8S_POD_NAME from CNI_ARGS
// ("K=V;K=V"). Unknown keys are always ignored (IgnoreUnknown semantics). A
// malformed CNI_ARGS (a pair without exactly one "=", as types.LoadArgs
// defines it) yields no pod at all and an error to log, never a failed verb.
func PodFromArgs(cniArgs string) (namespace, name string, err error) {
	if cniArgs == "" {
		return "", "", nil
	}
	for _, pair := range strings.Split(cniArgs, ";") {
		kv := strings.Split(pair, "=")
		if len(kv) != 2 {
			return "", "", fmt.Errorf("CNI_ARGS: invalid pair %q", truncate(pair))
		}
		switch kv[0] {
		case "K8S_POD_NAMESPACE":
			namespace = kv[1]
		case "K8S_POD_NAME":
			name = kv[1]
		}
	}
	return namespace, name, nil
}

// logger returns the verb's logger and a func that closes the log file.
// A log file that cannot be opened falls back to Stderr: logging must not
// fail a pod. Nothing is built or opened until a record is logged: a pod
// start-up that goes well logs nothing at Info, and the handler with its
// attributes (and the log file's open and close) cost the plugin a tenth
// of a millisecond it would otherwise spend on every ADD.
func (p *Plugin) logger(conf *Config, verb string, args *skel.CmdArgs) (*slog.Logger, func()) {
	lh := &lazyHandler{build: func() (slog.Handler, func(), error) {
		var w io.Writer = p.Stderr
		if w == nil {
			w = io.Discard
		}
		done := func() {}
		var openErr error
		if conf.LogFile != "" {
			f, err := os.OpenFile(conf.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
			if err != nil {
				openErr = err
			} else {
				w, done = f, func() { f.Close() }
			}
		}
		h := slog.NewTextHandler(w, &slog.HandlerOptions{Level: pluginLogLevel}).WithAttrs([]slog.Attr{
			slog.String("plugin", "weft"), slog.String("verb", verb), slog.String("containerID", args.ContainerID),
			slog.String("ifName", args.IfName), slog.String("network", conf.Name)})
		return h, done, openErr
	}}
	log := slog.New(lh)
	lh.warnOpen = func(err error) {
		log.Warn("cannot open logFile, logging to stderr", "logFile", conf.LogFile, "err", err)
	}
	return log, lh.close
}

// pluginLogLevel is the least level the plugin logs.
const pluginLogLevel = slog.LevelInfo

// lazyHandler builds its handler (and opens its file) at the first record
// that is logged.
type lazyHandler struct {
	build    func() (slog.Handler, func(), error)
	warnOpen func(error)
	h        slog.Handler
	done     func()
}

func (l *lazyHandler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= pluginLogLevel
}

func (l *lazyHandler) Handle(ctx context.Context, r slog.Record) error {
	return l.handler().Handle(ctx, r)
}

// WithAttrs and WithGroup are not used by the plugin (its logger is made
// with all its attributes); they work, building the handler.
func (l *lazyHandler) WithAttrs(as []slog.Attr) slog.Handler { return l.handler().WithAttrs(as) }

func (l *lazyHandler) WithGroup(name string) slog.Handler { return l.handler().WithGroup(name) }

func (l *lazyHandler) handler() slog.Handler {
	if l.h == nil {
		var err error
		l.h, l.done, err = l.build()
		if err != nil {
			l.warnOpen(err)
		}
	}
	return l.h
}

func (l *lazyHandler) close() {
	if l.done != nil {
		l.done()
	}
}
