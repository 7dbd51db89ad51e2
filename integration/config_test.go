package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
)

const probeAddr = "127.0.0.1:9469"

// probe GETs path on weftd's metrics address inside the node namespace (the
// kubelet's liveness and readiness probes) and returns the status code.
func probe(t *testing.T, n *harness.Node, path string) int {
	t.Helper()
	var code int
	err := n.NS.Do(func(ns.NetNS) error {
		// The socket is created here, in the node's namespace, and stays
		// there whatever thread uses it afterwards.
		conn, err := net.DialTimeout("tcp", probeAddr, 2*time.Second)
		if err != nil {
			return err
		}
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
			DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil },
		}}
		resp, err := c.Get("http://" + probeAddr + path)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		code = resp.StatusCode
		return nil
	})
	if err != nil {
		t.Fatalf("GET %s in %s: %v", path, n.Name, err)
	}
	return code
}

func condOf(st api.Status, typ string) (api.Condition, bool) {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c, true
		}
	}
	return api.Condition{}, false
}

func spoolFiles(t *testing.T, n *harness.Node) []string {
	t.Helper()
	ents, err := os.ReadDir(n.SpoolDir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

// weftRoutes is `ip route show table N proto 247` in the node.
func weftRoutes(t *testing.T, n *harness.Node, table int) string {
	t.Helper()
	out, err := n.Exec("ip", "route", "show", "table", fmt.Sprint(table), "proto", "247")
	if err != nil && strings.Contains(err.Error(), "FIB table does not exist") {
		return "" // no route was ever added to it
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// An invalid, unparsable or missing configuration at start does not stop
// weftd: it serves its socket, status and probes (healthy, not ready),
// says which field holds which value and what to write instead, records
// and acknowledges real cnitool ADDs (nothing spooled), touches no kernel
// object, and becomes ready without a restart once the file is fixed.
func TestConfigInvalidAtStart(t *testing.T) {
	cases := []struct {
		name string
		// bad returns the file content (nil with noFile) for the node.
		bad    func(cfg harness.WeftdConfig) []byte
		noFile bool
		// flags: without a readable file, weftd learns the node's paths
		// from its flags; an invalid but parsable file gives them itself.
		flags     bool
		field     string // ConfigProblem.Field
		value     string // ConfigProblem.Value contains
		condition string // the ConfigValid message contains
		reason    string // of ConfigValid
	}{
		{name: "invalid", bad: func(cfg harness.WeftdConfig) []byte {
			cfg["remotes"] = []any{map[string]any{"id": "c2", "podCIDRs": []string{"10.2.0.0/33"}, "gatewayIP": "192.168.20.11"}}
			return cfg.MustYAML()
		}, field: "remotes[0].podCIDRs[0]", value: `"10.2.0.0/33"`, condition: `remotes[0].podCIDRs[0] = "10.2.0.0/33": "10.2.0.0/33" is not a CIDR`, reason: "InvalidConfig"},
		{name: "unparsable", bad: func(cfg harness.WeftdConfig) []byte {
			return []byte("nodeName: c1-n1\ncluster: {id: c1, podCIDRs: [10.1.0.0/16\nremotes: []\n")
		}, flags: true, field: "line ", value: "", condition: "yaml", reason: "ParseError"},
		{name: "missing", noFile: true, flags: true, field: "--config", value: "weft.yaml", condition: "no such file", reason: "FileUnreadable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := harness.NewTestEnv(t)
			ctx := ctxFor(t, 90*time.Second)
			n, cfg := handoffNode(t, env, harness.CNIOptions{Layout: harness.LayoutFlannel})
			cfg["metricsAddress"] = probeAddr
			good := cfg.MustYAML()
			start := harness.WeftdStart{NoFile: tc.noFile}
			if tc.bad != nil {
				start.Config = tc.bad(cfg)
			}
			if tc.flags {
				start.Args = []string{"--socket", n.Socket, "--spool-dir", n.SpoolDir, "--state-dir", n.StateDir, "--metrics-address", probeAddr}
			}
			w, err := n.StartWeftdWith(ctx, start)
			if err != nil {
				t.Fatalf("weftd did not come up with a %s config: %v", tc.name, err)
			}
			pid := w.PID

			st, err := w.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			c, ok := condOf(st, "ConfigValid")
			if !ok || c.Status || c.Reason != tc.reason || !strings.Contains(c.Message, tc.condition) || c.Fix == "" {
				t.Fatalf("ConfigValid = %+v, want false/%s with %q and a fix", c, tc.reason, tc.condition)
			}
			if st.Ready || st.Node != "c1-n1" || st.Config == nil || st.Config.Valid || len(st.Config.Problems) == 0 {
				t.Fatalf("status = %+v", st)
			}
			p := st.Config.Problems[0]
			if !strings.HasPrefix(p.Field, tc.field) || !strings.Contains(p.Value, tc.value) || p.Reason == "" || !strings.Contains(p.Fix, n.WeftdConfigPath()) {
				t.Fatalf("problem = %+v, want field %q, value %q, a reason and a fix naming the file", p, tc.field, tc.value)
			}
			if tc.name == "unparsable" && p.Value != "cluster: {id: c1, podCIDRs: [10.1.0.0/16" && p.Value != "remotes: []" {
				t.Errorf("value of the syntax error = %q, want the offending line", p.Value)
			}
			if code := probe(t, n, "/healthz"); code != http.StatusOK {
				t.Errorf("/healthz = %d, want 200", code)
			}
			if code := probe(t, n, "/readyz"); code != http.StatusServiceUnavailable {
				t.Errorf("/readyz = %d, want 503", code)
			}
			human, _, err := n.WeftdCommand(ctx, "status", "--socket", w.Socket)
			if err != nil || !strings.Contains(string(human), "FAIL ConfigValid") || !strings.Contains(string(human), "fix: ") {
				t.Errorf("weftd status: %v\n%s", err, human)
			}
			t.Logf("weftd status with the %s file:\n%s", tc.name, human)

			// Real pod ADDs through cnitool: acknowledged and recorded by
			// the daemon itself, nothing left in the spool.
			var pods []*harness.Pod
			for i := 0; i < 3; i++ {
				pod, err := n.NewPod("default", fmt.Sprintf("nocfg-%d", i))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := n.AttachCNITool(ctx, pod); err != nil {
					t.Fatalf("ADD %d without a valid config: %v\n%s", i, err, w.LogTail(2000))
				}
				pods = append(pods, pod)
			}
			if st, err = w.Status(ctx); err != nil || st.Attachments != 3 || st.Spool.Replayed != 0 {
				t.Fatalf("after 3 ADDs: attachments=%d replayed=%d (%v), want 3 recorded live", st.Attachments, st.Spool.Replayed, err)
			}
			if f := spoolFiles(t, n); len(f) != 0 {
				t.Fatalf("events spooled although weftd was up: %v", f)
			}
			if err := n.DetachCNITool(ctx, pods[2]); err != nil {
				t.Fatal(err)
			}
			if st, err = w.Status(ctx); err != nil || st.Attachments != 2 {
				t.Fatalf("after a DEL: attachments=%d (%v), want 2", st.Attachments, err)
			}
			// Nothing computed, nothing touched.
			time.Sleep(time.Second)
			if out, err := n.Exec("ip", "link", "show", "vx-weft"); err == nil {
				t.Fatalf("weft device created without a valid config:\n%s", out)
			}
			if r := weftRoutes(t, n, 240); r != "" {
				t.Fatalf("routes written without a valid config:\n%s", r)
			}

			// The file is fixed: ready without a restart.
			fixed := time.Now()
			if err := os.WriteFile(w.ConfigPath, good, 0o644); err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			st, err = w.WaitReady(wctx)
			cancel()
			if err != nil {
				t.Fatalf("not ready after the file was fixed: %v\n%s", err, w.LogTail(3000))
			}
			t.Logf("ready %v after the file was fixed", time.Since(fixed).Round(time.Millisecond))
			if w.PID != pid || !w.Running() {
				t.Fatal("weftd was restarted")
			}
			c, _ = condOf(st, "ConfigValid")
			if !c.Status || c.Reason != "Loaded" || st.Attachments != 2 || !st.Config.Valid || len(st.Config.RestartRequired) != 0 {
				t.Fatalf("after the fix: ConfigValid=%+v attachments=%d config=%+v", c, st.Attachments, st.Config)
			}
			if _, rr := condOf(st, "RestartRequired"); rr {
				t.Fatalf("RestartRequired with the same paths: %+v", st.Conditions)
			}
			if r := weftRoutes(t, n, 240); !strings.Contains(r, "10.2.0.0/16") || !strings.Contains(r, "10.102.0.0/16") {
				t.Fatalf("routes not in place after the fix:\n%s", r)
			}
			if code := probe(t, n, "/readyz"); code != http.StatusOK {
				t.Errorf("/readyz after the fix = %d, want 200", code)
			}
		})
	}
}

// A weftd killed and restarted with a broken file keeps the data plane the
// previous one built (device, routes, rule, FDB, nftables table: the same),
// keeps recording pod events, and takes the fixed file back without a
// restart.
func TestConfigBrokenAtRestartKeepsDataplane(t *testing.T) {
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 90*time.Second)
	n, cfg := handoffNode(t, env, harness.CNIOptions{Layout: harness.LayoutFlannel})
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.RunPod(ctx, "default", "before"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Ready && s.Attachments == 1 }); err != nil {
		t.Fatal(err)
	}
	snap := func() string {
		var b strings.Builder
		for _, c := range [][]string{
			{"ip", "-d", "-o", "link", "show", "vx-weft"},
			{"ip", "route", "show", "table", "240"},
			{"ip", "rule", "show"},
			{"bridge", "fdb", "show", "dev", "vx-weft"},
			{"nft", "list", "table", "ip", "weft"},
		} {
			out, err := n.Exec(c[0], c[1:]...)
			if err != nil {
				t.Fatalf("%v: %v", c, err)
			}
			b.WriteString(out)
		}
		return b.String()
	}
	before := snap()
	if !strings.Contains(before, "vxlan id 100") || !strings.Contains(before, "10.2.0.0/16 via") || !strings.Contains(before, "lookup 240") || !strings.Contains(before, "nat-postrouting") {
		t.Fatalf("data plane not built:\n%s", before)
	}
	if err := w.Kill(); err != nil {
		t.Fatal(err)
	}

	broken := append(cfg.MustYAML(), "routeTable: 254\n"...) // the main table: refused
	w, err = n.StartWeftdWith(ctx, harness.WeftdStart{Config: broken})
	if err != nil {
		t.Fatal(err)
	}
	st, err := w.WaitFor(ctx, func(s api.Status) bool {
		c, ok := condOf(s, "ConfigValid")
		return ok && !c.Status
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Ready || st.Attachments != 1 || len(st.Config.Problems) != 1 || st.Config.Problems[0].Field != "routeTable" || st.Config.Problems[0].Value != "254" {
		t.Fatalf("status with a broken file = %+v %+v", st, st.Config)
	}
	if _, err := n.RunPod(ctx, "default", "during"); err != nil {
		t.Fatalf("ADD with a broken file: %v", err)
	}
	time.Sleep(2 * time.Second) // longer than the old resync would wait for a first pass
	if got := snap(); got != before {
		t.Fatalf("the data plane changed while the file was broken:\nbefore:\n%s\nafter:\n%s", before, got)
	}
	if st, err = w.Status(ctx); err != nil || st.Attachments != 2 || len(spoolFiles(t, n)) != 0 {
		t.Fatalf("attachments=%d spool=%v (%v), want 2 recorded live", st.Attachments, spoolFiles(t, n), err)
	}

	if err := os.WriteFile(w.ConfigPath, cfg.MustYAML(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Ready && s.Attachments == 2 }); err != nil {
		t.Fatalf("fixed file not taken: %v\n%s", err, w.LogTail(3000))
	}
	if got := snap(); got != before {
		t.Fatalf("the data plane changed after the fix (same config as before):\nbefore:\n%s\nafter:\n%s", before, got)
	}
}

// A reload moves the routes and the rule to a new routeTable and
// rulePriority, leaving nothing in the old table or at the old priority;
// keys a running weftd cannot move (here socket and stateDir) are
// reported as RestartRequired, by name, and the old socket keeps serving.
func TestConfigReloadTableAndRestartRequired(t *testing.T) {
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 90*time.Second)
	n, cfg := handoffNode(t, env, harness.CNIOptions{Layout: harness.LayoutFlannel})
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.RunPod(ctx, "default", "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Ready && s.Attachments == 1 }); err != nil {
		t.Fatal(err)
	}
	if r := weftRoutes(t, n, 240); !strings.Contains(r, "10.2.0.0/16") {
		t.Fatalf("routes not in table 240:\n%s", r)
	}

	cfg["routeTable"] = 250
	cfg["rulePriority"] = 251
	cfg["socket"] = filepath.Join(n.Dir, "elsewhere", "weft.sock")
	cfg["stateDir"] = filepath.Join(n.Dir, "elsewhere")
	if err := os.WriteFile(w.ConfigPath, cfg.MustYAML(), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := w.WaitFor(ctx, func(s api.Status) bool {
		_, ok := condOf(s, "RestartRequired")
		return ok && s.Ready && weftRoutes(t, n, 250) != ""
	})
	if err != nil {
		t.Fatalf("reload not applied: %v\n%s", err, w.LogTail(3000))
	}
	rr, _ := condOf(st, "RestartRequired")
	if rr.Status || !strings.Contains(rr.Message, "socket") || !strings.Contains(rr.Message, "stateDir") || strings.Contains(rr.Message, "routeTable") {
		t.Fatalf("RestartRequired = %+v, want socket and stateDir named", rr)
	}
	if got := st.Config.RestartRequired; len(got) != 2 || got[0] != "socket" || got[1] != "stateDir" {
		t.Fatalf("config.restartRequired = %v", got)
	}
	if c, _ := condOf(st, "ConfigValid"); c.Reason == "Reloaded" {
		t.Fatalf("ConfigValid = %+v: says Reloaded while two keys are not applied", c)
	}
	if r := weftRoutes(t, n, 250); !strings.Contains(r, "10.2.0.0/16") || !strings.Contains(r, "10.102.0.0/16") {
		t.Fatalf("routes not moved to table 250:\n%s", r)
	}
	if r := weftRoutes(t, n, 240); r != "" {
		t.Fatalf("weft's routes left in table 240:\n%s", r)
	}
	rules, err := n.Exec("ip", "rule", "show")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rules, "251:\tfrom all lookup 250 proto 247") || strings.Contains(rules, "lookup 240") || strings.Contains(rules, "240:") {
		t.Fatalf("ip rule after the move:\n%s", rules)
	}
	// The old socket still serves (status above came through it); a pod
	// ADD through it is recorded.
	if _, err := n.RunPod(ctx, "default", "web-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Attachments == 2 }); err != nil {
		t.Fatal(err)
	}
}

// Only flags weftd cannot run with end it, with exit status 1 and one line
// on stderr naming the flag.
func TestConfigUnusableFlagsExit(t *testing.T) {
	env := harness.NewTestEnv(t)
	n, _ := handoffNode(t, env, harness.CNIOptions{Layout: harness.LayoutFlannel})
	paths := []string{"--socket", n.Socket, "--spool-dir", n.SpoolDir, "--state-dir", n.StateDir, "--metrics-address", "none"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", ""}, "--config: empty path"},
		{[]string{"--config", n.WeftdConfigPath(), "--socket", "weft.sock"}, `--socket: "weft.sock" is not an absolute path`},
		{[]string{"--config", n.WeftdConfigPath(), "--metrics-address", "9469"}, `--metrics-address: "9469" is not host:port`},
		{[]string{"--config", n.WeftdConfigPath(), "--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
		{[]string{"--config", n.WeftdConfigPath(), "extra"}, `unexpected argument "extra"`},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		// The node's own paths come first so that a weftd that wrongly
		// starts serves inside the test's directory, not /run/weft.
		_, stderr, err := n.WeftdCommand(ctx, append(append([]string{"run"}, paths...), tc.args...)...)
		timedOut := ctx.Err() != nil
		cancel()
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if err == nil || timedOut || len(lines) != 1 || !strings.Contains(lines[0], tc.want) || !strings.HasPrefix(lines[0], "weftd run: ") {
			t.Errorf("weftd run %v: err=%v, stderr=%q; want exit 1 with one line containing %q", tc.args, err, stderr, tc.want)
		}
	}
}
