package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/integration/harness"
)

// fakeDaemon listens on a unix socket and misbehaves: "garbage" answers
// bytes that are not HTTP, "hang" accepts and never answers.
func fakeDaemon(t *testing.T, dir, mode string) (string, *atomic.Int64) {
	t.Helper()
	sock := filepath.Join(dir, mode+".sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var held []net.Conn
	t.Cleanup(func() {
		ln.Close()
		for _, c := range held {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			if mode == "garbage" {
				_, _ = c.Write([]byte("\x00\x01 not http at all {\"code\":0}\r\n\r\n"))
				c.Close()
				continue
			}
			held = append(held, c) // hang: read nothing, answer nothing
		}
	}()
	return sock, &accepted
}

// pluginRun is one execution of the real bin/weft.
type pluginRun struct {
	stdout, stderr []byte
	exit           int
	took           time.Duration
}

func execPlugin(t *testing.T, n *harness.Node, bin string, env map[string]string, stdin []byte) pluginRun {
	t.Helper()
	var r pluginRun
	err := n.NS.Do(func(ns.NetNS) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		for k, v := range env {
			if v != "" {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
		}
		cmd.Stdin = bytes.NewReader(stdin)
		var so, se bytes.Buffer
		cmd.Stdout, cmd.Stderr = &so, &se
		start := time.Now()
		err := cmd.Run()
		r = pluginRun{stdout: so.Bytes(), stderr: se.Bytes(), took: time.Since(start)}
		if ee, ok := err.(*exec.ExitError); ok {
			r.exit = ee.ExitCode()
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatalf("run plugin: %v", err)
	}
	return r
}

// Promise 5: malformed input to the real plugin binary, against a real
// weftd where the daemon matters. Each case gives the documented CNI code
// or succeeds by policy, never panics, prints at most one JSON object on
// stdout, and ends within its timeout.
func TestPluginBadInput(t *testing.T) {
	defer run.sum.TrackSkip(t, PPlugin)() // its cases are subtests; a skip before them counts too
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 120*time.Second)
	n, cfg := oneNode(t, env, nodeSpec{})
	if _, err := n.StartWeftd(ctx, cfg.MustYAML()); err != nil {
		t.Fatal(err)
	}
	bin := env.Bin("weft")
	dir, err := env.TempDir("weft-fake-")
	if err != nil {
		t.Fatal(err)
	}
	garbage, garbageHits := fakeDaemon(t, dir, "garbage")
	hang, hangHits := fakeDaemon(t, dir, "hang")
	regular := filepath.Join(dir, "regular.sock")
	if err := os.WriteFile(regular, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	pod, err := n.NewPod("default", "bad-input")
	if err != nil {
		t.Fatal(err)
	}
	prev := func(ver string) map[string]any {
		return map[string]any{
			"cniVersion": ver,
			"interfaces": []any{map[string]any{"name": "cni0"}, map[string]any{"name": "veth1"}, map[string]any{"name": "eth0", "sandbox": pod.NS.Path}},
			"ips":        []any{map[string]any{"interface": 2, "address": "10.1.1.5/24", "gateway": "10.1.1.1"}},
		}
	}
	conf := func(over map[string]any) []byte {
		c := map[string]any{"cniVersion": "1.0.0", "name": "cbr0", "type": "weft", "socket": n.Socket,
			"spoolDir": n.SpoolDir, "timeout": "1s", "logFile": n.PluginLogPath(), "prevResult": prev("1.0.0")}
		for k, v := range over {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	baseEnv := func(cmd string, over map[string]string) map[string]string {
		e := map[string]string{"CNI_COMMAND": cmd, "CNI_CONTAINERID": "bad-input-1", "CNI_NETNS": pod.NS.Path,
			"CNI_IFNAME": "eth0", "CNI_PATH": env.BinDir, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bad"}
		for k, v := range over {
			e[k] = v
		}
		return e
	}
	huge := bytes.Repeat([]byte("["), 10<<20)
	longSock := "/" + strings.Repeat("s", 120)
	cases := []struct {
		name  string
		cmd   string
		env   map[string]string
		stdin []byte
		code  int // 0: success
	}{
		{"valid ADD, real daemon", "ADD", nil, conf(nil), 0},
		{"valid DEL, real daemon", "DEL", nil, conf(nil), 0},
		{"repeated DEL", "DEL", nil, conf(nil), 0},
		{"JSON syntax error", "ADD", nil, []byte(`{"cniVersion":"1.0.0","name":`), 6},
		{"stdin is an array", "ADD", nil, []byte(`[1,2]`), 6},
		{"stdin is a string", "DEL", nil, []byte(`"weft"`), 6},
		{"empty stdin", "ADD", nil, nil, 6},
		{"10 MiB of garbage", "ADD", nil, huge, 6},
		{"10 MiB valid config", "ADD", nil, conf(map[string]any{"padding": strings.Repeat("x", 10<<20)}), 0},
		{"missing CNI_COMMAND", "", nil, conf(nil), -1},
		{"unknown CNI_COMMAND", "FROB", nil, conf(nil), 4},
		{"missing CNI_CONTAINERID", "ADD", map[string]string{"CNI_CONTAINERID": ""}, conf(nil), 4},
		{"missing CNI_IFNAME", "ADD", map[string]string{"CNI_IFNAME": ""}, conf(nil), 4},
		{"missing CNI_NETNS on ADD", "ADD", map[string]string{"CNI_NETNS": ""}, conf(nil), 4},
		{"missing CNI_PATH", "ADD", map[string]string{"CNI_PATH": ""}, conf(nil), 4},
		{"malformed CNI_ARGS", "ADD", map[string]string{"CNI_ARGS": "K8S_POD_NAME=a=b;;garbage"}, conf(nil), 0},
		{"unknown cniVersion", "ADD", nil, conf(map[string]any{"cniVersion": "9.9.9", "prevResult": prev("1.0.0")}), 1},
		// weft speaks 0.2.0, but a prevResult in another version than the
		// config's is a decode failure.
		{"cniVersion 0.2.0, prevResult 1.0.0", "ADD", nil, conf(map[string]any{"cniVersion": "0.2.0"}), 6},
		{"cniVersion older than any spec", "ADD", nil, conf(map[string]any{"cniVersion": "0.0.9"}), 1},
		{"cniVersion wrong type", "ADD", nil, conf(map[string]any{"cniVersion": 1}), 6},
		{"missing name", "ADD", nil, conf(map[string]any{"name": nil}), 7},
		{"name wrong type", "ADD", nil, conf(map[string]any{"name": []int{1}}), 6}, // skel's own decode
		{"failPolicy unknown", "ADD", nil, conf(map[string]any{"failPolicy": "maybe"}), 7},
		{"failPolicy wrong type", "ADD", nil, conf(map[string]any{"failPolicy": true}), 7},
		{"timeout unparsable", "ADD", nil, conf(map[string]any{"timeout": "soon"}), 7},
		{"timeout a number", "ADD", nil, conf(map[string]any{"timeout": 5}), 7},
		{"timeout negative", "DEL", nil, conf(map[string]any{"timeout": "-1s"}), 7},
		{"socket relative", "ADD", nil, conf(map[string]any{"socket": "weft.sock"}), 7},
		{"socket path too long", "ADD", nil, conf(map[string]any{"socket": longSock}), 7},
		{"spoolDir relative", "ADD", nil, conf(map[string]any{"spoolDir": "spool"}), 7},
		{"spoolLimit a string", "ADD", nil, conf(map[string]any{"spoolLimit": "10"}), 7},
		{"prevResult missing on ADD", "ADD", nil, conf(map[string]any{"prevResult": nil}), 7},
		{"prevResult not an object", "ADD", nil, conf(map[string]any{"prevResult": "x"}), 7},
		{"prevResult bad address", "ADD", nil, conf(map[string]any{"prevResult": map[string]any{"cniVersion": "1.0.0", "ips": []any{map[string]any{"address": "10.1.1.500/24"}}}}), 6},
		{"prevResult missing on DEL", "DEL", nil, conf(map[string]any{"prevResult": nil}), 0},
		{"prevResult broken on DEL", "DEL", nil, conf(map[string]any{"prevResult": map[string]any{"ips": []any{map[string]any{"address": "bogus"}}}}), 0},
		{"non-existent netns on ADD", "ADD", map[string]string{"CNI_NETNS": "/var/run/netns/weft-does-not-exist"}, conf(nil), 0},
		{"non-existent netns on DEL", "DEL", map[string]string{"CNI_NETNS": "/var/run/netns/weft-does-not-exist"}, conf(nil), 0},
		{"no daemon at socket, open", "ADD", nil, conf(map[string]any{"socket": filepath.Join(dir, "none", "weft.sock")}), 0},
		{"no daemon at socket, closed", "ADD", nil, conf(map[string]any{"socket": filepath.Join(dir, "none", "weft.sock"), "failPolicy": "closed"}), 11},
		{"socket is a regular file, open", "ADD", nil, conf(map[string]any{"socket": regular}), 0},
		{"socket is a regular file, closed", "ADD", nil, conf(map[string]any{"socket": regular, "failPolicy": "closed"}), 11},
		{"daemon answers garbage, open", "ADD", nil, conf(map[string]any{"socket": garbage}), 0},
		{"daemon answers garbage, closed", "ADD", nil, conf(map[string]any{"socket": garbage, "failPolicy": "closed"}), 11},
		{"daemon hangs, open", "ADD", nil, conf(map[string]any{"socket": hang}), 0},
		{"daemon hangs, closed", "ADD", nil, conf(map[string]any{"socket": hang, "failPolicy": "closed"}), 11},
		{"daemon hangs, CHECK", "CHECK", nil, conf(map[string]any{"socket": hang}), 11},
		{"daemon hangs, DEL open", "DEL", nil, conf(map[string]any{"socket": hang}), 0},
		{"STATUS 1.1.0, real daemon", "STATUS", nil, conf(map[string]any{"cniVersion": "1.1.0", "prevResult": nil}), 0},
		{"GC attachments wrong type", "GC", nil, conf(map[string]any{"cniVersion": "1.1.0", "prevResult": nil, "cni.dev/valid-attachments": "all"}), 7},
		{"VERSION with garbage stdin", "VERSION", nil, []byte(`{{{`), 0}, // skel answers VERSION from the binary alone
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			defer run.sum.Track(t, PPlugin)()
			r := execPlugin(t, n, bin, baseEnv(c.cmd, c.env), c.stdin)
			if bytes.Contains(r.stderr, []byte("panic:")) || bytes.Contains(r.stderr, []byte("goroutine ")) {
				t.Fatalf("plugin panicked:\n%s", r.stderr)
			}
			// 1 s plugin timeout + start-up; a hang would show here.
			if r.took > 4*time.Second {
				t.Errorf("took %v, want under 4 s (timeout 1 s)", r.took)
			}
			var obj map[string]any
			dec := json.NewDecoder(bytes.NewReader(r.stdout))
			if len(bytes.TrimSpace(r.stdout)) > 0 {
				if err := dec.Decode(&obj); err != nil {
					t.Fatalf("stdout is not a JSON object: %v: %q", err, truncate(r.stdout))
				}
				if dec.More() {
					t.Fatalf("stdout holds more than one JSON value: %q", truncate(r.stdout))
				}
			}
			switch {
			case c.code == -1: // no command: the about text on stderr, nothing on stdout
				if len(bytes.TrimSpace(r.stdout)) != 0 {
					t.Fatalf("stdout %q, want nothing", truncate(r.stdout))
				}
			case c.code == 0:
				if r.exit != 0 {
					t.Fatalf("exit %d, stdout %q, want success", r.exit, truncate(r.stdout))
				}
				if c.cmd == "ADD" {
					ver, _ := obj["cniVersion"].(string)
					if ver == "" || obj["ips"] == nil {
						t.Fatalf("ADD printed %q, want the prevResult", truncate(r.stdout))
					}
				}
			default:
				if r.exit == 0 || obj == nil {
					t.Fatalf("exit %d stdout %q, want CNI error %d", r.exit, truncate(r.stdout), c.code)
				}
				if code, _ := obj["code"].(float64); int(code) != c.code {
					t.Fatalf("CNI code %v (%v), want %d", obj["code"], obj["msg"], c.code)
				}
				if msg, _ := obj["msg"].(string); msg == "" {
					t.Errorf("error without a message: %q", r.stdout)
				}
			}
		})
	}
	if garbageHits.Load() == 0 || hangHits.Load() == 0 {
		t.Errorf("the misbehaving daemons were never reached (garbage %d, hang %d)", garbageHits.Load(), hangHits.Load())
	}
	run.sum.Figure(PPlugin, "%d malformed invocations", len(cases))
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return fmt.Sprintf("%s… (%d bytes)", b[:300], len(b))
	}
	return string(b)
}
