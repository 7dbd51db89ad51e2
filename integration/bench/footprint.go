package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/client"
)

// clockTicks is USER_HZ, which /proc/<pid>/stat counts in; it is 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// cpuTicks returns utime+stime of pid.
func cpuTicks(pid int) (int64, error) {
	u, st, err := cpuSplit(pid)
	return u + st, err
}

// cpuSplit returns utime and stime of pid.
func cpuSplit(pid int) (user, system int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	user, err1 := strconv.ParseInt(f[11], 10, 64)
	system, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %q", pid, s)
	}
	return user, system, nil
}

// memKiB returns VmRSS and VmHWM of pid.
func memKiB(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm, nil
}

// Footprint is figure 6: weftd's RSS and CPU while idle with 1,000
// attachments and 1,000 remote CIDRs, sampled from /proc; then its CPU
// with the health probes on and every remote gateway away.
func Footprint(ctx context.Context, env *harness.Env, o Options) ([]Row, error) {
	idle := time.Duration(o.pick(60, 10)) * time.Second
	const attachments, cidrs = 1000, 1000
	n, cfg, err := oneNode(env, harness.LayoutFlannel)
	if err != nil {
		return nil, err
	}
	// 1,000 remote /24s, spread over 4 remote clusters like a fleet.
	var remotes []any
	all := RemoteCIDRs(cidrs)
	for i := 0; i < 4; i++ {
		var pods []string
		for _, p := range all[i*cidrs/4 : (i+1)*cidrs/4] {
			pods = append(pods, p.String())
		}
		remotes = append(remotes, map[string]any{"id": fmt.Sprintf("r%d", i), "podCIDRs": pods,
			"gatewayIP": fmt.Sprintf("192.168.%d.11", 20+i)})
	}
	cfg["remotes"] = remotes
	cfg["resyncInterval"] = "30s"
	// The footprint of the attachments and CIDRs themselves: the health
	// probes are figure 10's (what they add, ≤ 0.1 %). They come on for
	// 6c-down, against these remotes' gateways, which do not exist.
	cfg["healthCheck"] = map[string]any{"enabled": false}
	// The CNI interface the attachments' gateway lives on.
	if err := addCNIBridge(n); err != nil {
		return nil, err
	}
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		return nil, err
	}
	c := client.New(n.Socket, 5*time.Second)
	for i := 0; i < attachments; i++ {
		ev := api.Event{Verb: api.VerbAdd, ContainerID: fmt.Sprintf("fp-%04d", i), IfName: "eth0", Network: "cbr0",
			PodNamespace: "bench", PodName: fmt.Sprintf("pod-%d", i),
			IPs:            []api.PodIP{{Address: fmt.Sprintf("10.1.%d.%d/24", 1+i/250, 2+i%250), Gateway: "10.1.1.1"}},
			HostInterfaces: []string{"cni0"}, Time: time.Now()}
		if err := c.Add(ctx, ev); err != nil {
			return nil, fmt.Errorf("attachment %d: %w", i, err)
		}
	}
	st, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Ready && s.Attachments == attachments })
	if err != nil {
		return nil, err
	}
	// idleWindow lets the work of the burst settle before it opens.
	quiet, err := idleWindow(ctx, []int{w.PID}, idle, false)
	if err != nil {
		return nil, err
	}
	cpuPct, wall := quiet.pct[0], quiet.wall
	rss, hwm, err := memKiB(w.PID)
	if err != nil {
		return nil, err
	}

	// The same daemon with the default health check on: every remote
	// gateway is a target that never answers (down, probed once a round
	// and retried, its socket replaced now and then).
	cfg["healthCheck"] = map[string]any{}
	if err := n.RewriteWeftdConfig(cfg.MustYAML()); err != nil {
		return nil, err
	}
	if _, err := w.WaitFor(ctx, func(s api.Status) bool {
		if s.PathHealth == nil || len(s.PathHealth.Targets) != len(remotes) {
			return false
		}
		for _, t := range s.PathHealth.Targets {
			if t.Up {
				return false
			}
		}
		return true
	}); err != nil {
		return nil, fmt.Errorf("the probes of the unreachable gateways never went down: %w", err)
	}
	down, err := idleWindow(ctx, []int{w.PID}, idle, false)
	if err != nil {
		return nil, err
	}
	downPct, downWall := down.pct[0], down.wall
	one := func(v float64) Summary { return Summary{N: 1, Median: v, P99: v, Min: v, Max: v} }
	extra := map[string]any{"idleSeconds": wall.Seconds(), "vmHWMKiB": hwm,
		"attachments": st.Attachments, "remoteCIDRs": cidrs, "resyncInterval": "30s",
		"resolution": "CPU from /proc/<pid>/task/*/schedstat (ns)", "downIdleSeconds": downWall.Seconds()}
	return []Row{
		{ID: "6r", Figure: "weftd RSS idle, 1,000 attachments + 1,000 remote CIDRs", Unit: "MiB",
			Weft: one(float64(rss) / 1024), RefName: "(no reference)", Goal: &Goal{Text: "≤ 30 MiB", Max: 30},
			Extra: extra, Note: fmt.Sprintf("VmHWM (peak) %.1f MiB", float64(hwm)/1024)},
		{ID: "6c", Figure: fmt.Sprintf("weftd CPU idle over %s (health probes off: figure 10)", idle), Unit: "%",
			Weft: one(cpuPct), RefName: "(no reference)", Goal: &Goal{Text: "≤ 0.1 %", Max: 0.1}, Extra: extra,
			Note: "schedstat of every thread; the window includes the periodic resync (30 s)"},
		{ID: "6c-down", Figure: fmt.Sprintf("same, next %s, with the default health probes to the %d remote gateways, none answering", idle, len(remotes)), Unit: "%",
			Weft: one(downPct), RefName: "probes off (6c, the window before)", Ref: ptr(one(cpuPct)), Extra: extra,
			Note: "a down target is probed once a round and its answer looked for a fastInterval later (a second wake-up a round)"},
	}, nil
}

// addCNIBridge gives n the CNI interface cni0 with 10.1.1.1/24, as the
// bridge plugin leaves it once a pod runs.
func addCNIBridge(n *harness.Node) error {
	for _, c := range [][]string{
		{"link", "add", "cni0", "type", "bridge"},
		{"addr", "add", "10.1.1.1/24", "dev", "cni0"},
		{"link", "set", "cni0", "up"},
	} {
		if _, err := n.Exec("ip", c...); err != nil {
			return err
		}
	}
	return nil
}
