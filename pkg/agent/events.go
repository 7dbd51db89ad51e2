package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/spool"
	"github.com/weft-net/weft/pkg/state"
)

// Add records an attachment durably and, when the event can change
// discovery (the CNI network is up, or its gateway is new), asks for a
// reconcile pass at once.
// A spooled ADD is replayed through Store.Replay, which orders it against
// the DELs the store remembers (durably, so across a restart too) in the
// same critical section as the insert: a live DEL cannot slip between the
// check and the write and be undone.
func (a *Agent) Add(ctx context.Context, ev api.Event) (err error) {
	defer func() { a.d.Observer.PluginEvent("add", result(err), ev.Spooled) }()
	added := ev.Time
	if added.IsZero() {
		added = a.d.Now()
	}
	att := state.Attachment{
		ContainerID: ev.ContainerID, IfName: ev.IfName, Netns: ev.Netns,
		PodNamespace: ev.PodNamespace, PodName: ev.PodName, Network: ev.Network,
		IPs: ev.IPs, HostInterfaces: ev.HostInterfaces, Added: added.UTC(),
	}
	if ev.Spooled {
		recorded, err := a.d.Store.Replay(ctx, att, ev.Time)
		if err != nil {
			return fmt.Errorf("record attachment %s/%s: %w", ev.ContainerID, ev.IfName, err)
		}
		if !recorded {
			a.d.Log.Info("spooled ADD superseded by a later DEL or ADD, skipped", "containerID", ev.ContainerID, "ifName", ev.IfName)
			return nil
		}
	} else if err := a.d.Store.Put(ctx, att); err != nil {
		return fmt.Errorf("record attachment %s/%s: %w", ev.ContainerID, ev.IfName, err)
	}
	a.mu.Lock()
	hintChanged := a.noteGateways(ev.IPs)
	ready := a.ready
	a.mu.Unlock()
	// The kernel state does not depend on the attachments, only on what an
	// event can tell discovery: the first pod proves the CNI network up
	// (the node is not ready yet), and a new gateway may name another CNI
	// interface: those passes run at once. Any other ADD asks for no pass
	// at all, not even a coalesced one: it changes nothing a pass writes,
	// and a pass (two link dumps, a route lookup: ~2 ms of CPU) would run
	// while the plugin waits for this answer on the pod start-up path.
	if hintChanged || !ready || a.d.Store.CNI() == nil {
		a.TriggerNow()
	}
	return nil
}

// Del forgets an attachment; unknown attachments are fine (DEL is lenient).
// The store remembers the DEL durably (a tombstone) before it returns, so a
// spooled ADD it supersedes is skipped whenever it is replayed, by this
// weftd or the next.
func (a *Agent) Del(ctx context.Context, ev api.Event) (err error) {
	defer func() { a.d.Observer.PluginEvent("del", result(err), ev.Spooled) }()
	key := api.AttachmentKey{ContainerID: ev.ContainerID, IfName: ev.IfName}
	t := ev.Time
	if t.IsZero() {
		t = a.d.Now()
	}
	forget := a.d.Store.DeleteAt
	if ev.Spooled {
		forget = a.d.Store.ReplayDelete
	}
	if _, err := forget(ctx, key, t); err != nil {
		return fmt.Errorf("forget attachment %s/%s: %w", ev.ContainerID, ev.IfName, err)
	}
	if !ev.Spooled {
		a.dropSpooledAdds(key, t)
	}
	// No pass: nothing in the kernel depends on an attachment, and the
	// veth's removal is a netlink event of its own.
	return nil
}

// dropSpooledAdds removes the spooled ADDs of key that a live DEL at t
// supersedes: housekeeping, the durable tombstone already orders them (and
// also those that land later, from an ADD the runtime gave up waiting for).
func (a *Agent) dropSpooledAdds(key api.AttachmentKey, t time.Time) {
	dir := a.spoolDir()
	if dir == "" {
		return
	}
	entries, _, err := spool.List(dir)
	if err != nil {
		a.d.Log.Warn("list spool for superseded ADDs", "err", err)
		return
	}
	for _, e := range entries {
		ev := e.Event
		if ev.Verb != api.VerbAdd || ev.ContainerID != key.ContainerID || ev.IfName != key.IfName || ev.Time.After(t) {
			continue
		}
		if err := spool.Remove(dir, e.Name); err != nil {
			a.d.Log.Warn("remove superseded spooled ADD", "file", e.Name, "err", err)
			continue
		}
		a.d.Log.Info("spooled ADD superseded by a live DEL, removed", "file", e.Name, "containerID", key.ContainerID, "ifName", key.IfName)
	}
}

// spoolDir is the spool the process drains: fixed at start, whatever a
// later configuration says.
func (a *Agent) spoolDir() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.d.Startup.SpoolDir
}

// noteGateways remembers the pod gateways, newest first, deduplicated, and
// says whether that changed the hints discovery sees. Each family has its
// own list (a dual-stack pod reports one gateway of each), so IPv6 ones
// never push the IPv4 ones out. Caller holds a.mu.
func (a *Agent) noteGateways(ips []api.PodIP) bool {
	before, before6 := a.gwHints, a.gwHints6
	for _, ip := range ips {
		gw, err := netip.ParseAddr(ip.Gateway)
		if err != nil || gw.Zone() != "" {
			continue
		}
		gw = gw.Unmap()
		hints := &a.gwHints
		if gw.Is6() {
			hints = &a.gwHints6
		}
		out := []netip.Addr{gw}
		for _, g := range *hints {
			if g != gw && len(out) < 8 {
				out = append(out, g)
			}
		}
		*hints = out
	}
	return !slices.Equal(before, a.gwHints) || !slices.Equal(before6, a.gwHints6)
}

// Check answers the plugin's CHECK.
func (a *Agent) Check(ctx context.Context, req api.CheckRequest) api.CheckResponse {
	defer a.d.Observer.PluginEvent("check", "ok", false)
	_, known := a.d.Store.Get(api.AttachmentKey{ContainerID: req.ContainerID, IfName: req.IfName})
	ready, why := a.Ready()
	resp := api.CheckResponse{Known: known, Ready: ready}
	switch {
	case !known:
		resp.Reason = "attachment not recorded by weftd"
	case !ready:
		resp.Reason = "node not ready: " + why
	}
	return resp
}

// GC forgets the attachments of a network that the runtime no longer has.
func (a *Agent) GC(ctx context.Context, req api.GCRequest) (api.GCResponse, error) {
	n, err := a.d.Store.GC(ctx, req.Network, req.ValidAttachments)
	a.d.Observer.PluginEvent("gc", result(err), false)
	if err != nil {
		return api.GCResponse{}, fmt.Errorf("garbage-collect network %q: %w", req.Network, err)
	}
	if n > 0 {
		a.d.Log.Info("garbage-collected attachments", "network", req.Network, "removed", n)
	}
	return api.GCResponse{Removed: n}, nil
}

// DrainSpool replays the plugin's spooled events in order and removes each
// once recorded. A file that cannot be read (torn by a crash) is skipped
// with a logged reason and removed; the rest are replayed.
func (a *Agent) DrainSpool(ctx context.Context, dir string) error {
	entries, skipped, err := spool.List(dir)
	if err != nil {
		return fmt.Errorf("list spool %s: %w", dir, err)
	}
	for _, s := range skipped {
		a.d.Log.Warn("skipping unreadable spool file", "file", s.Name, "reason", s.Reason)
		if err := spool.Remove(dir, s.Name); err != nil {
			a.d.Log.Warn("remove unreadable spool file", "file", s.Name, "err", err)
		}
	}
	var replayed uint64
	for _, e := range entries {
		ev := e.Event
		ev.Spooled = true
		var herr error
		switch ev.Verb {
		case api.VerbAdd:
			herr = a.Add(ctx, ev)
		case api.VerbDel:
			herr = a.Del(ctx, ev)
		default:
			a.d.Log.Warn("skipping spool file with unknown verb", "file", e.Name, "verb", ev.Verb)
		}
		if herr != nil {
			// Keep the file: the next drain retries it, in order.
			return fmt.Errorf("replay spool file %s: %w", e.Name, herr)
		}
		if err := spool.Remove(dir, e.Name); err != nil {
			return fmt.Errorf("remove replayed spool file %s: %w", e.Name, err)
		}
		replayed++
	}
	dropped, derr := spool.Dropped(dir)
	a.mu.Lock()
	a.spool.Replayed += replayed
	a.spool.Skipped += uint64(len(skipped))
	if derr == nil {
		a.spool.Dropped = dropped
	}
	a.mu.Unlock()
	if replayed > 0 || len(skipped) > 0 {
		a.d.Log.Info("drained spool", "replayed", replayed, "skipped", len(skipped))
	}
	if dropped > 0 {
		a.setCond(CondSpoolHealthy, false, "EventsDropped",
			fmt.Sprintf("the plugin dropped %d events because the spool was full while weftd was away", dropped),
			"run `weftd status` after pod churn; recreate affected pods or raise spoolLimit in the plugin config")
	} else {
		a.setCond(CondSpoolHealthy, true, "OK", "", "")
	}
	return nil
}

// WatchSpool drains the spool whenever notify fires (new files) and at
// least every interval, until ctx ends.
func (a *Agent) WatchSpool(ctx context.Context, dir string, notify <-chan struct{}, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-notify:
		case <-t.C:
		}
		if err := a.DrainSpool(ctx, dir); err != nil {
			a.d.Log.Warn("drain spool", "err", err)
		}
	}
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}
