package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/client/clienttest"
	"github.com/weft-net/weft/pkg/spool"
)

// weftBin is the real plugin binary, built once: the tests drive it the
// way a container runtime does (env + stdin in, stdout + exit status out).
var weftBin string

func TestMain(m *testing.M) {
	if path := os.Getenv(holdLockEnv); path != "" {
		holdLock(path)
		return
	}
	dir, err := os.MkdirTemp("", "weft-plugin-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	weftBin = filepath.Join(dir, "weft")
	build := exec.Command("go", "build", "-o", weftBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build plugin:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var allVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

const (
	containerID = "3f1b9c2d"
	podArgs     = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=3f1b9c2d;K8S_POD_UID=1234"
	// A netns path that does not exist: skel's "not the plugin's own netns"
	// check then passes, and weft itself never opens the netns.
	netnsPath = "/var/run/netns/weft-test-absent"
)

// cniEnv is the environment for one invocation; an empty value removes the
// variable.
func cniEnv(cmd string, over map[string]string) []string {
	env := map[string]string{
		"CNI_COMMAND":     cmd,
		"CNI_CONTAINERID": containerID,
		"CNI_NETNS":       netnsPath,
		"CNI_IFNAME":      "eth0",
		"CNI_PATH":        "/opt/cni/bin",
		"CNI_ARGS":        podArgs,
		"PATH":            "/usr/bin:/bin",
	}
	for k, v := range over {
		env[k] = v
	}
	var out []string
	for k, v := range env {
		if v != "" {
			out = append(out, k+"="+v)
		}
	}
	return out
}

type outcome struct {
	stdout, stderr []byte
	exit           int
}

func run(t *testing.T, env []string, stdin []byte) outcome {
	t.Helper()
	cmd := exec.Command(weftBin)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	o := outcome{stdout: so.Bytes(), stderr: se.Bytes()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		o.exit = ee.ExitCode()
	case err != nil:
		t.Fatalf("run plugin: %v", err)
	}
	return o
}

type cniError struct {
	CNIVersion string `json:"cniVersion"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details"`
}

// mustFail checks the CNI error contract: non-zero exit, stdout exactly one
// JSON error object with the code.
func (o outcome) mustFail(t *testing.T, code uint, msgContains string) cniError {
	t.Helper()
	if o.exit == 0 {
		t.Fatalf("exit 0, want failure with code %d; stdout %s", code, o.stdout)
	}
	dec := json.NewDecoder(bytes.NewReader(o.stdout))
	dec.DisallowUnknownFields()
	var e cniError
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("stdout is not a CNI error: %v: %q (stderr %s)", err, o.stdout, o.stderr)
	}
	if dec.More() {
		t.Fatalf("stdout holds more than one JSON value: %q", o.stdout)
	}
	if e.Code != code {
		t.Errorf("code %d (%s / %s), want %d", e.Code, e.Msg, e.Details, code)
	}
	if !strings.Contains(e.Msg, msgContains) {
		t.Errorf("msg %q does not contain %q", e.Msg, msgContains)
	}
	return e
}

func (o outcome) mustSucceed(t *testing.T) {
	t.Helper()
	if o.exit != 0 {
		t.Fatalf("exit %d; stdout %s; stderr %s", o.exit, o.stdout, o.stderr)
	}
}

// mustPrint checks a successful ADD printed exactly want (as JSON values).
func (o outcome) mustPrint(t *testing.T, want map[string]any) {
	t.Helper()
	o.mustSucceed(t)
	dec := json.NewDecoder(bytes.NewReader(o.stdout))
	var got map[string]any
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("stdout is not JSON: %v: %q", err, o.stdout)
	}
	if dec.More() {
		t.Fatalf("stdout holds more than one JSON value: %q", o.stdout)
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Errorf("result changed:\n got %s\nwant %s", g, w)
	}
}

func mustEmptyStdout(t *testing.T, o outcome) {
	t.Helper()
	o.mustSucceed(t)
	if len(bytes.TrimSpace(o.stdout)) != 0 {
		t.Errorf("stdout = %q, want nothing", o.stdout)
	}
}

// shape is a prevResult as a primary plugin prints it, and what weft
// should extract from it.
type shape struct {
	name      string
	result    func(ver string) map[string]any
	wantIPs   []api.PodIP
	wantHosts []string
}

func ip(ver string, m map[string]any) map[string]any {
	// Results before 1.0.0 carry the IP version.
	if ver < "1.0.0" {
		if strings.Contains(m["address"].(string), ":") {
			m["version"] = "6"
		} else {
			m["version"] = "4"
		}
	}
	return m
}

// withEmptyDNS mirrors how results are printed by every plugin built on the
// CNI library (the primary plugin included): before 1.0.0 an empty "dns"
// object is always present, from 1.0.0 on it is omitted.
func withEmptyDNS(r map[string]any, ver string) map[string]any {
	if ver < "1.0.0" {
		r["dns"] = map[string]any{}
	}
	return r
}

var shapes = []shape{
	{
		name: "bridge",
		result: func(ver string) map[string]any {
			return map[string]any{
				"cniVersion": ver,
				"interfaces": []any{
					map[string]any{"name": "cni0", "mac": "0a:58:0a:01:02:01"},
					map[string]any{"name": "veth9a8b7c6d", "mac": "d2:4e:2b:1a:00:11"},
					map[string]any{"name": "eth0", "mac": "0a:58:0a:01:02:05", "sandbox": netnsPath},
				},
				"ips": []any{
					ip(ver, map[string]any{"interface": 2.0, "address": "10.1.2.5/24", "gateway": "10.1.2.1"}),
					ip(ver, map[string]any{"interface": 2.0, "address": "fd00:1::5/64", "gateway": "fd00:1::1"}),
				},
				"routes": []any{map[string]any{"dst": "0.0.0.0/0", "gw": "10.1.2.1"}},
				"dns":    map[string]any{"nameservers": []any{"10.101.0.10"}, "search": []any{"svc.cluster.local"}},
			}
		},
		wantIPs:   []api.PodIP{{Address: "10.1.2.5/24", Gateway: "10.1.2.1"}, {Address: "fd00:1::5/64", Gateway: "fd00:1::1"}},
		wantHosts: []string{"cni0", "veth9a8b7c6d"},
	},
	{
		name: "ptp",
		result: func(ver string) map[string]any {
			return withEmptyDNS(map[string]any{
				"cniVersion": ver,
				"interfaces": []any{
					map[string]any{"name": "veth1f2e3d4c", "mac": "ae:12:34:56:78:9a"},
					map[string]any{"name": "eth0", "mac": "5a:11:22:33:44:55", "sandbox": netnsPath},
				},
				"ips": []any{
					ip(ver, map[string]any{"interface": 1.0, "address": "10.1.3.7/32", "gateway": "10.1.3.1"}),
				},
				"routes": []any{map[string]any{"dst": "0.0.0.0/0", "gw": "10.1.3.1"}},
			}, ver)
		},
		wantIPs:   []api.PodIP{{Address: "10.1.3.7/32", Gateway: "10.1.3.1"}},
		wantHosts: []string{"veth1f2e3d4c"},
	},
	{
		name: "calico",
		result: func(ver string) map[string]any {
			return withEmptyDNS(map[string]any{
				"cniVersion": ver,
				"interfaces": []any{map[string]any{"name": "eth0", "sandbox": netnsPath}},
				"ips":        []any{ip(ver, map[string]any{"address": "10.1.4.9/32"})},
				"routes": []any{
					map[string]any{"dst": "0.0.0.0/0"},
					map[string]any{"dst": "10.1.0.0/16"},
				},
			}, ver)
		},
		wantIPs: []api.PodIP{{Address: "10.1.4.9/32"}},
	},
}

// netconf builds a plugin configuration as libcni passes it.
func netconf(t *testing.T, ver string, keys map[string]any, prev map[string]any) []byte {
	t.Helper()
	c := map[string]any{"cniVersion": ver, "name": "k8s-pod-network", "type": "weft"}
	for k, v := range keys {
		c[k] = v
	}
	if prev != nil {
		c["prevResult"] = prev
	}
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

type env struct {
	daemon   *clienttest.Daemon
	spoolDir string
	keys     map[string]any
}

// newEnv starts a fake weftd; with away, the socket path has nobody behind it.
func newEnv(t *testing.T, policy string, away bool) env {
	d := clienttest.Start(t)
	sock := d.Socket
	if away {
		d.Close()
		sock = filepath.Join(clienttest.TempDir(t), "absent.sock")
	}
	spoolDir := filepath.Join(clienttest.TempDir(t), "spool")
	return env{daemon: d, spoolDir: spoolDir, keys: map[string]any{
		"socket": sock, "spoolDir": spoolDir, "failPolicy": policy, "timeout": "1s",
	}}
}

func (e env) spooled(t *testing.T) []api.Event {
	t.Helper()
	entries, skipped, err := spool.List(e.spoolDir)
	if err != nil || len(skipped) != 0 {
		t.Fatalf("spool.List = %v, skipped %v", err, skipped)
	}
	var evs []api.Event
	for _, en := range entries {
		evs = append(evs, en.Event)
	}
	return evs
}

func TestEveryVerbAtEveryVersion(t *testing.T) {
	for _, ver := range allVersions {
		for _, verb := range []string{"ADD", "CHECK", "DEL", "STATUS", "GC"} {
			t.Run(verb+"/"+ver, func(t *testing.T) {
				e := newEnv(t, "open", false)
				keys := e.keys
				if verb == "GC" {
					keys["cni.dev/valid-attachments"] = []any{map[string]any{"containerID": containerID, "ifname": "eth0"}}
				}
				prev := shapes[0].result(ver)
				if verb == "STATUS" || verb == "GC" {
					prev = nil
				}
				o := run(t, cniEnv(verb, nil), netconf(t, ver, keys, prev))
				tooOld := (verb == "CHECK" && ver < "0.4.0") || ((verb == "STATUS" || verb == "GC") && ver < "1.1.0")
				if tooOld {
					o.mustFail(t, 1, "does not allow "+verb)
					if n := len(e.daemon.Requests()); n != 0 {
						t.Errorf("daemon got %d requests for a refused verb", n)
					}
					return
				}
				if verb == "ADD" {
					o.mustPrint(t, shapes[0].result(ver))
				} else {
					mustEmptyStdout(t, o)
				}
				wantPath := map[string]string{"ADD": api.PathAdd, "CHECK": api.PathCheck, "DEL": api.PathDel, "GC": api.PathGC}[verb]
				reqs := e.daemon.Requests()
				switch {
				case verb == "STATUS" && len(reqs) != 0:
					t.Errorf("STATUS with failPolicy open asked the daemon: %v", reqs)
				case verb != "STATUS" && (len(reqs) != 1 || reqs[0].Path != wantPath):
					t.Errorf("daemon requests = %+v, want one to %s", reqs, wantPath)
				}
			})
		}
	}
}

func TestVersionCommand(t *testing.T) {
	o := run(t, cniEnv("VERSION", nil), []byte(`{"cniVersion":"1.1.0"}`))
	o.mustSucceed(t)
	var v struct {
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(o.stdout, &v); err != nil {
		t.Fatal(err)
	}
	if want := append([]string{"0.1.0", "0.2.0"}, allVersions...); !reflect.DeepEqual(v.SupportedVersions, want) {
		t.Errorf("supportedVersions = %v, want %v", v.SupportedVersions, want)
	}
}

// A 0.2.0 chain (ip4/ip6 results, no interfaces): ADD prints the
// primary's result back unchanged in 0.2.0 and reports its address and
// gateway to weftd.
func TestAddAtCNIVersion020(t *testing.T) {
	e := newEnv(t, "closed", false)
	prev := map[string]any{
		"cniVersion": "0.2.0",
		"ip4": map[string]any{"ip": "10.1.2.5/24", "gateway": "10.1.2.1",
			"routes": []any{map[string]any{"dst": "0.0.0.0/0", "gw": "10.1.2.1"}}},
		"dns": map[string]any{},
	}
	o := run(t, cniEnv("ADD", nil), netconf(t, "0.2.0", e.keys, prev))
	o.mustPrint(t, prev)
	evs := e.daemon.Events(t, api.PathAdd)
	if len(evs) != 1 || !reflect.DeepEqual(evs[0].IPs, []api.PodIP{{Address: "10.1.2.5/24", Gateway: "10.1.2.1"}}) {
		t.Errorf("daemon ADD events %+v", evs)
	}
}

func TestAddPassesPrevResultThroughAndReportsIt(t *testing.T) {
	for _, sh := range shapes {
		for _, ver := range allVersions {
			t.Run(sh.name+"/"+ver, func(t *testing.T) {
				e := newEnv(t, "closed", false)
				before := time.Now().UTC().Add(-time.Second)
				o := run(t, cniEnv("ADD", nil), netconf(t, ver, e.keys, sh.result(ver)))
				o.mustPrint(t, sh.result(ver))
				evs := e.daemon.Events(t, api.PathAdd)
				if len(evs) != 1 {
					t.Fatalf("daemon got %d ADD events", len(evs))
				}
				ev := evs[0]
				if ev.Time.Before(before) || ev.Time.After(time.Now().Add(time.Second)) {
					t.Errorf("event time %v is not now", ev.Time)
				}
				ev.Time = time.Time{}
				want := api.Event{
					Verb: api.VerbAdd, ContainerID: containerID, IfName: "eth0", Netns: netnsPath,
					PodNamespace: "shop", PodName: "web-0", Network: "k8s-pod-network",
					IPs: sh.wantIPs, HostInterfaces: sh.wantHosts,
				}
				if !reflect.DeepEqual(ev, want) {
					t.Errorf("event\n got %+v\nwant %+v", ev, want)
				}
			})
		}
	}
}

func TestAddWithoutPrevResult(t *testing.T) {
	for _, ver := range allVersions {
		t.Run(ver, func(t *testing.T) {
			e := newEnv(t, "open", false)
			o := run(t, cniEnv("ADD", nil), netconf(t, ver, e.keys, nil))
			o.mustFail(t, 7, "must be called as a chained plugin")
			if n := len(e.daemon.Requests()); n != 0 {
				t.Errorf("daemon got %d requests", n)
			}
		})
	}
}

func TestBadInvocations(t *testing.T) {
	e := newEnv(t, "open", false)
	good := func(keys map[string]any) []byte {
		k := map[string]any{}
		for n, v := range e.keys {
			k[n] = v
		}
		for n, v := range keys {
			k[n] = v
		}
		return netconf(t, "1.0.0", k, shapes[0].result("1.0.0"))
	}
	huge := bytes.Repeat([]byte("{"), 10<<20)
	hugeValid := good(map[string]any{"padding": strings.Repeat("x", 10<<20)})
	tests := []struct {
		name     string
		cmd      string
		env      map[string]string
		stdin    []byte
		wantCode uint
		wantMsg  string
	}{
		{"malformed stdin", "ADD", nil, []byte(`{"cniVersion":"1.0.0","name":`), 6, "network config"},
		{"stdin not an object", "DEL", nil, []byte(`[1,2,3]`), 6, ""},
		{"empty stdin", "ADD", nil, nil, 6, ""},
		{"10 MiB garbage", "ADD", nil, huge, 6, ""},
		{"missing CNI_CONTAINERID", "ADD", map[string]string{"CNI_CONTAINERID": ""}, good(nil), 4, "CNI_CONTAINERID"},
		{"missing CNI_IFNAME", "ADD", map[string]string{"CNI_IFNAME": ""}, good(nil), 4, "CNI_IFNAME"},
		{"missing CNI_NETNS on ADD", "ADD", map[string]string{"CNI_NETNS": ""}, good(nil), 4, "CNI_NETNS"},
		{"missing CNI_IFNAME on DEL", "DEL", map[string]string{"CNI_IFNAME": ""}, good(nil), 4, "CNI_IFNAME"},
		{"unknown command", "FROB", nil, good(nil), 4, "unknown CNI_COMMAND"},
		{"unknown cniVersion", "ADD", nil, []byte(`{"cniVersion":"9.9.9","name":"n","type":"weft"}`), 1, "incompatible"},
		{"cniVersion older than any spec", "ADD", nil, []byte(`{"cniVersion":"0.0.9","name":"n","type":"weft"}`), 1, "incompatible"},
		{"missing name", "ADD", nil, []byte(`{"cniVersion":"1.0.0","type":"weft"}`), 7, "name"},
		{"bad failPolicy", "ADD", nil, good(map[string]any{"failPolicy": "sometimes"}), 7, "failPolicy"},
		{"failPolicy not a string", "DEL", nil, good(map[string]any{"failPolicy": true}), 7, "failPolicy"},
		{"bad timeout", "ADD", nil, good(map[string]any{"timeout": "soon"}), 7, "timeout"},
		{"zero timeout", "ADD", nil, good(map[string]any{"timeout": "0s"}), 7, "timeout"},
		{"negative timeout", "ADD", nil, good(map[string]any{"timeout": "-1s"}), 7, "timeout"},
		{"timeout over 60s", "STATUS", nil, []byte(`{"cniVersion":"1.1.0","name":"n","timeout":"61s"}`), 7, "timeout"},
		{"numeric timeout", "ADD", nil, good(map[string]any{"timeout": 2}), 7, "timeout"},
		{"relative socket", "ADD", nil, good(map[string]any{"socket": "weft.sock"}), 7, "socket"},
		{"relative spoolDir", "ADD", nil, good(map[string]any{"spoolDir": "spool"}), 7, "spoolDir"},
		{"relative logFile", "ADD", nil, good(map[string]any{"logFile": "weft.log"}), 7, "logFile"},
		{"zero spoolLimit", "ADD", nil, good(map[string]any{"spoolLimit": 0}), 7, "spoolLimit"},
		{"string spoolLimit", "ADD", nil, good(map[string]any{"spoolLimit": "10"}), 7, "spoolLimit"},
		{"prevResult not an object", "ADD", nil, []byte(`{"cniVersion":"1.0.0","name":"n","prevResult":"x"}`), 7, "prevResult"},
		{"prevResult with a bad address", "ADD", nil, []byte(`{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"10.1.2.300/24"}]}}`), 6, "prevResult"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := run(t, cniEnv(tc.cmd, tc.env), tc.stdin)
			o.mustFail(t, tc.wantCode, tc.wantMsg)
			if bytes.Contains(o.stderr, []byte("panic")) {
				t.Errorf("stderr: %s", o.stderr)
			}
		})
	}
	t.Run("10 MiB valid config", func(t *testing.T) {
		o := run(t, cniEnv("ADD", nil), hugeValid)
		o.mustPrint(t, shapes[0].result("1.0.0"))
	})
	t.Run("no CNI_COMMAND prints about", func(t *testing.T) {
		o := run(t, cniEnv("", nil), nil)
		mustEmptyStdout(t, o)
		if !bytes.Contains(o.stderr, []byte("weft chained plugin")) {
			t.Errorf("stderr = %q, want the about string", o.stderr)
		}
	})
}

func TestMalformedCNIArgsDoesNotFailAdd(t *testing.T) {
	e := newEnv(t, "closed", false)
	for _, args := range []string{"garbage", "K8S_POD_NAME=a=b;K8S_POD_NAMESPACE=x", ";;"} {
		o := run(t, cniEnv("ADD", map[string]string{"CNI_ARGS": args}), netconf(t, "1.0.0", e.keys, shapes[2].result("1.0.0")))
		o.mustPrint(t, shapes[2].result("1.0.0"))
	}
	for i, ev := range e.daemon.Events(t, api.PathAdd) {
		if ev.PodName != "" || ev.PodNamespace != "" || ev.ContainerID != containerID {
			t.Errorf("event %d: pod %q/%q container %q, want no pod", i, ev.PodNamespace, ev.PodName, ev.ContainerID)
		}
	}
}

func TestDaemonAway(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		// setup makes the daemon unusable in some way; nil = no socket at all.
		setup     func(d *clienttest.Daemon)
		wantCode  uint // 0 = success
		wantSpool bool
	}{
		{"no socket/open", "open", nil, 0, true},
		{"no socket/closed", "closed", nil, 11, false},
		{"5xx/open", "open", func(d *clienttest.Daemon) {
			d.SetReply(api.PathAdd, clienttest.Reply{Status: 503, Body: api.Error{Error: "starting"}})
		}, 0, true},
		{"5xx/closed", "closed", func(d *clienttest.Daemon) {
			d.SetReply(api.PathAdd, clienttest.Reply{Status: 500, Body: api.Error{Error: "boom"}})
		}, 11, false},
		{"hangs/open", "open", func(d *clienttest.Daemon) { d.SetReply(api.PathAdd, clienttest.Reply{Delay: time.Minute}) }, 0, true},
		{"hangs/closed", "closed", func(d *clienttest.Daemon) { d.SetReply(api.PathAdd, clienttest.Reply{Delay: time.Minute}) }, 11, false},
		// A 4xx is a rejected request, not an absent daemon: never spooled.
		{"4xx/open", "open", func(d *clienttest.Daemon) {
			d.SetReply(api.PathAdd, clienttest.Reply{Status: 400, Body: api.Error{Error: "ifName is empty"}})
		}, 0, false},
		{"4xx/closed", "closed", func(d *clienttest.Daemon) {
			d.SetReply(api.PathAdd, clienttest.Reply{Status: 400, Body: api.Error{Error: "ifName is empty"}})
		}, 999, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.policy, tc.setup == nil)
			e.keys["timeout"] = "300ms"
			if tc.setup != nil {
				tc.setup(e.daemon)
			}
			start := time.Now()
			o := run(t, cniEnv("ADD", nil), netconf(t, "0.3.1", e.keys, shapes[1].result("0.3.1")))
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("ADD took %v with a 300ms timeout", d)
			}
			if tc.wantCode == 0 {
				o.mustPrint(t, shapes[1].result("0.3.1"))
			} else {
				o.mustFail(t, tc.wantCode, "weftd")
			}
			evs := e.spooled(t)
			if !tc.wantSpool {
				if len(evs) != 0 {
					t.Errorf("spooled %d events, want none", len(evs))
				}
				return
			}
			if len(evs) != 1 {
				t.Fatalf("spooled %d events, want 1 (stderr: %s)", len(evs), o.stderr)
			}
			ev := evs[0]
			if ev.Verb != api.VerbAdd || ev.ContainerID != containerID || ev.PodName != "web-0" ||
				!reflect.DeepEqual(ev.IPs, shapes[1].wantIPs) || !reflect.DeepEqual(ev.HostInterfaces, shapes[1].wantHosts) {
				t.Errorf("spooled event %+v", ev)
			}
		})
	}
}

func TestUnusableSpoolDoesNotFailOpenAdd(t *testing.T) {
	e := newEnv(t, "open", true)
	blocker := filepath.Join(clienttest.TempDir(t), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e.keys["spoolDir"] = filepath.Join(blocker, "spool") // parent is a file
	logFile := filepath.Join(clienttest.TempDir(t), "weft.log")
	e.keys["logFile"] = logFile
	o := run(t, cniEnv("ADD", nil), netconf(t, "1.0.0", e.keys, shapes[0].result("1.0.0")))
	o.mustPrint(t, shapes[0].result("1.0.0"))
	logged, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(logged, []byte("event lost")) {
		t.Errorf("log file does not report the lost event:\n%s", logged)
	}
	if len(o.stderr) != 0 {
		t.Errorf("stderr used although logFile is set: %s", o.stderr)
	}
}

func TestSpoolLimitOnAdd(t *testing.T) {
	e := newEnv(t, "open", true)
	e.keys["spoolLimit"] = 2
	for i := range 3 {
		o := run(t, cniEnv("ADD", map[string]string{"CNI_CONTAINERID": fmt.Sprintf("c%d", i)}), netconf(t, "1.0.0", e.keys, shapes[2].result("1.0.0")))
		o.mustPrint(t, shapes[2].result("1.0.0"))
	}
	evs := e.spooled(t)
	if len(evs) != 2 || evs[0].ContainerID != "c0" || evs[1].ContainerID != "c1" {
		t.Errorf("spooled %+v, want c0, c1", evs)
	}
	if d, err := spool.Dropped(e.spoolDir); err != nil || d != 1 {
		t.Errorf("Dropped = %d, %v; want 1", d, err)
	}
}

func TestDel(t *testing.T) {
	t.Run("twice with daemon", func(t *testing.T) {
		e := newEnv(t, "closed", false)
		for range 2 {
			mustEmptyStdout(t, run(t, cniEnv("DEL", nil), netconf(t, "1.0.0", e.keys, shapes[0].result("1.0.0"))))
		}
		evs := e.daemon.Events(t, api.PathDel)
		if len(evs) != 2 || evs[0].Verb != api.VerbDel || evs[0].PodName != "web-0" || !reflect.DeepEqual(evs[0].IPs, shapes[0].wantIPs) {
			t.Errorf("daemon DEL events %+v", evs)
		}
	})
	t.Run("daemon does not know it", func(t *testing.T) {
		e := newEnv(t, "closed", false)
		e.daemon.SetReply(api.PathDel, clienttest.Reply{Status: 404, Body: api.Error{Error: "no such attachment"}})
		mustEmptyStdout(t, run(t, cniEnv("DEL", nil), netconf(t, "0.4.0", e.keys, nil)))
		if n := len(e.spooled(t)); n != 0 {
			t.Errorf("rejected DEL spooled %d events", n)
		}
	})
	for _, ver := range allVersions {
		t.Run("no prevResult, no netns, daemon away/"+ver, func(t *testing.T) {
			e := newEnv(t, "closed", true)
			env := cniEnv("DEL", map[string]string{"CNI_NETNS": ""})
			for range 2 {
				mustEmptyStdout(t, run(t, env, netconf(t, ver, e.keys, nil)))
			}
			evs := e.spooled(t)
			if len(evs) != 2 {
				t.Fatalf("spooled %d events, want 2", len(evs))
			}
			for _, ev := range evs {
				if ev.Verb != api.VerbDel || ev.ContainerID != containerID || ev.IfName != "eth0" || ev.Netns != "" || ev.PodName != "web-0" || ev.Network != "k8s-pod-network" {
					t.Errorf("spooled %+v", ev)
				}
			}
		})
	}
	t.Run("broken prevResult", func(t *testing.T) {
		e := newEnv(t, "closed", false)
		stdin := []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"n","socket":%q,"prevResult":{"ips":[{"address":"bogus"}]}}`, e.keys["socket"]))
		mustEmptyStdout(t, run(t, cniEnv("DEL", nil), stdin))
		if evs := e.daemon.Events(t, api.PathDel); len(evs) != 1 || len(evs[0].IPs) != 0 {
			t.Errorf("daemon DEL events %+v", evs)
		}
	})
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name     string
		away     bool
		reply    *clienttest.Reply
		noPrev   bool
		wantCode uint
		wantMsg  string
	}{
		{name: "known and ready"},
		{name: "unknown", reply: &clienttest.Reply{Body: api.CheckResponse{Known: false, Ready: true}}, wantCode: 999, wantMsg: "unknown to weftd"},
		{name: "not ready", reply: &clienttest.Reply{Body: api.CheckResponse{Known: true, Ready: false, Reason: "CNI interface not found"}}, wantCode: 11, wantMsg: "CNI interface not found"},
		{name: "rejected", reply: &clienttest.Reply{Status: 403, Body: api.Error{Error: "uid 1000 not allowed"}}, wantCode: 999, wantMsg: "rejected"},
		{name: "daemon away", away: true, wantCode: 11, wantMsg: "not reachable"},
		{name: "no prevResult", noPrev: true, wantCode: 7, wantMsg: "must be called as a chained plugin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "open", tc.away)
			if tc.reply != nil {
				e.daemon.SetReply(api.PathCheck, *tc.reply)
			}
			prev := shapes[1].result("1.0.0")
			if tc.noPrev {
				prev = nil
			}
			o := run(t, cniEnv("CHECK", nil), netconf(t, "1.0.0", e.keys, prev))
			if tc.wantCode == 0 {
				mustEmptyStdout(t, o)
			} else {
				o.mustFail(t, tc.wantCode, tc.wantMsg)
			}
			if tc.away || tc.noPrev {
				return
			}
			reqs := e.daemon.Requests()
			if len(reqs) != 1 || string(reqs[0].Body) != `{"containerID":"3f1b9c2d","ifName":"eth0"}` {
				t.Errorf("daemon requests %+v", reqs)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	tests := []struct {
		policy   string
		away     bool
		wantCode uint
	}{
		{"open", false, 0},
		{"open", true, 0},
		{"closed", false, 0},
		{"closed", true, 50},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/away=%v", tc.policy, tc.away), func(t *testing.T) {
			e := newEnv(t, tc.policy, tc.away)
			o := run(t, cniEnv("STATUS", map[string]string{"CNI_CONTAINERID": "", "CNI_IFNAME": "", "CNI_NETNS": ""}), netconf(t, "1.1.0", e.keys, nil))
			if tc.wantCode == 0 {
				mustEmptyStdout(t, o)
			} else {
				o.mustFail(t, tc.wantCode, "not available")
			}
		})
	}
}

func TestGC(t *testing.T) {
	t.Run("both attachment keys", func(t *testing.T) {
		e := newEnv(t, "closed", false)
		e.keys["cni.dev/valid-attachments"] = []any{
			map[string]any{"containerID": "a", "ifname": "eth0"},
			map[string]any{"containerID": "b", "ifname": "eth0"},
		}
		e.keys["cni.dev/attachments"] = []any{
			map[string]any{"containerID": "b", "ifname": "eth0"},
			map[string]any{"containerID": "c", "ifname": "net1"},
		}
		mustEmptyStdout(t, run(t, cniEnv("GC", map[string]string{"CNI_CONTAINERID": "", "CNI_IFNAME": "", "CNI_NETNS": ""}), netconf(t, "1.1.0", e.keys, nil)))
		reqs := e.daemon.Requests()
		if len(reqs) != 1 {
			t.Fatalf("daemon got %d requests", len(reqs))
		}
		var got api.GCRequest
		if err := json.Unmarshal(reqs[0].Body, &got); err != nil {
			t.Fatal(err)
		}
		want := api.GCRequest{Network: "k8s-pod-network", ValidAttachments: []api.AttachmentKey{{ContainerID: "a", IfName: "eth0"}, {ContainerID: "b", IfName: "eth0"}, {ContainerID: "c", IfName: "net1"}}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("GC request %+v, want %+v", got, want)
		}
	})
	t.Run("no attachments sends an empty list", func(t *testing.T) {
		e := newEnv(t, "open", false)
		mustEmptyStdout(t, run(t, cniEnv("GC", nil), netconf(t, "1.1.0", e.keys, nil)))
		reqs := e.daemon.Requests()
		if len(reqs) != 1 || !bytes.Contains(reqs[0].Body, []byte(`"validAttachments":[]`)) {
			t.Errorf("daemon requests %+v", reqs)
		}
	})
	for _, tc := range []struct {
		policy   string
		wantCode uint
	}{{"open", 0}, {"closed", 11}} {
		t.Run("daemon away/"+tc.policy, func(t *testing.T) {
			e := newEnv(t, tc.policy, true)
			o := run(t, cniEnv("GC", nil), netconf(t, "1.1.0", e.keys, nil))
			if tc.wantCode == 0 {
				mustEmptyStdout(t, o)
			} else {
				o.mustFail(t, tc.wantCode, "not reachable")
			}
		})
	}
}

// holdLockEnv makes the test binary a helper process that takes the spool
// directory's flock, says "locked" and keeps it until stdin closes: another
// writer that is stuck (or frozen) while holding the lock.
const holdLockEnv = "WEFT_TEST_HOLD_SPOOL_LOCK"

func holdLock(path string) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err == nil {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// lockSpool starts the helper process on dir's lock and waits until it
// holds it; the process ends with the test.
func lockSpool(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), holdLockEnv+"="+filepath.Join(dir, ".lock"))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("lock holder: %q, %v", line, err)
	}
}

// runWithin runs the plugin like run, but gives up (and fails the test)
// after limit instead of hanging with a plugin that never returns.
func runWithin(t *testing.T, limit time.Duration, env []string, stdin []byte) (outcome, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit+5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, weftBin)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("plugin still running %v after start (killed); stderr: %s", took, se.Bytes())
	}
	o := outcome{stdout: so.Bytes(), stderr: se.Bytes()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		o.exit = ee.ExitCode()
	case err != nil:
		t.Fatalf("run plugin: %v", err)
	}
	if took > limit {
		t.Errorf("plugin took %v, more than %v", took, limit)
	}
	return o, took
}

// Another process holds the spool lock forever (a stuck or frozen plugin):
// every verb still ends within its timeout + 1 s, and the event is spooled
// (without the lock) or the verb fails by its policy (issue 9, point 5).
func TestSpoolLockHeldByAnotherProcess(t *testing.T) {
	const timeout = time.Second
	tests := []struct {
		name, verb, policy string
		hang               bool // daemon accepts and never answers (else: no socket)
		wantCode           uint // 0 = success
		wantSpool          bool
	}{
		{"ADD/open/no daemon", "ADD", "open", false, 0, true},
		{"ADD/open/daemon hangs", "ADD", "open", true, 0, true},
		{"ADD/closed/no daemon", "ADD", "closed", false, 11, false},
		{"DEL/no daemon", "DEL", "closed", false, 0, true},
		{"DEL/daemon hangs", "DEL", "open", true, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.policy, !tc.hang)
			e.keys["timeout"] = timeout.String()
			if tc.hang {
				e.daemon.SetReply(api.PathAdd, clienttest.Reply{Delay: time.Minute})
				e.daemon.SetReply(api.PathDel, clienttest.Reply{Delay: time.Minute})
			}
			lockSpool(t, e.spoolDir)
			o, took := runWithin(t, timeout+time.Second, cniEnv(tc.verb, nil), netconf(t, "1.0.0", e.keys, shapes[0].result("1.0.0")))
			switch {
			case tc.wantCode != 0:
				o.mustFail(t, tc.wantCode, "weftd")
			case tc.verb == "ADD":
				o.mustPrint(t, shapes[0].result("1.0.0"))
			default:
				mustEmptyStdout(t, o)
			}
			evs := e.spooled(t)
			if !tc.wantSpool {
				if len(evs) != 0 {
					t.Errorf("spooled %d events, want none", len(evs))
				}
				return
			}
			if len(evs) != 1 || evs[0].Verb != tc.verb || evs[0].ContainerID != containerID {
				t.Fatalf("spooled %+v, want the %s event (took %v; stderr %s)", evs, tc.verb, took, o.stderr)
			}
			if !bytes.Contains(o.stderr, []byte("without the spool lock")) {
				t.Errorf("the log does not say the lock was bypassed:\n%s", o.stderr)
			}
		})
	}
}
