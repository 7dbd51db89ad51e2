package reliability

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
)

// Promise 9: file modes, socket ownership and capabilities.
func TestSecurity(t *testing.T) {
	defer run.sum.TrackSkip(t, PSecurity)() // its cases are subtests; a skip before them counts too
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 90*time.Second)
	n, cfg := oneNode(t, env, nodeSpec{})
	w, err := n.StartWeftd(ctx, cfg.MustYAML())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.RunPod(ctx, "default", "sec-live"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	t.Run("socket_modes", func(t *testing.T) {
		defer run.sum.Track(t, PSecurity)()
		for _, c := range []struct {
			path string
			want fs.FileMode
		}{{filepath.Dir(w.Socket), 0o700}, {w.Socket, 0o600}} {
			st, err := os.Stat(c.path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != c.want {
				t.Errorf("%s mode %o, want %o", c.path, st.Mode().Perm(), c.want)
			}
			if uid := st.Sys().(*syscall.Stat_t).Uid; uid != 0 {
				t.Errorf("%s owned by uid %d, want root", c.path, uid)
			}
		}
	})

	t.Run("no_world_writable_files", func(t *testing.T) {
		defer run.sum.Track(t, PSecurity)()
		// Some events spooled too: stop the daemon, ADD, restart.
		if err := w.Stop(); err != nil {
			t.Fatal(err)
		}
		if _, err := n.RunPod(ctx, "default", "sec-spooled"); err != nil {
			t.Fatal(err)
		}
		spooled, _ := filepath.Glob(filepath.Join(n.SpoolDir, "*.json"))
		if len(spooled) == 0 {
			t.Fatal("nothing spooled: the walk would not see spool files")
		}
		checked := 0
		walk := func(root string) {
			_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return nil
				}
				st, err := os.Lstat(p)
				if err != nil || st.Mode()&fs.ModeSymlink != 0 {
					return nil
				}
				checked++
				if st.Mode().Perm()&0o002 != 0 {
					t.Errorf("%s is world-writable (%v)", p, st.Mode())
				}
				return nil
			})
		}
		walk(n.StateDir) // state, socket, spool (weftd's and the plugin's files)
		walk(n.PluginLogPath())
		w2, err := n.StartWeftd(ctx, cfg.MustYAML())
		if err != nil {
			t.Fatal(err)
		}
		w = w2
		if _, err := w.WaitFor(ctx, func(s2 api.Status) bool { return s2.Ready && s2.Attachments == 2 }); err != nil {
			t.Fatal(err)
		}
		walk(n.StateDir)
		t.Logf("%d paths checked", checked)
	})

	t.Run("plugin_refuses_socket_not_owned_by_root", func(t *testing.T) {
		defer run.sum.Track(t, PSecurity)()
		dir, err := env.TempDir("weft-owner-")
		if err != nil {
			t.Fatal(err)
		}
		sock, hits := fakeDaemon(t, dir, "hang")
		if err := os.Chown(sock, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		spool := filepath.Join(dir, "spool")
		pod, err := n.NewPod("default", "sec-owner")
		if err != nil {
			t.Fatal(err)
		}
		for _, policy := range []string{"closed", "open"} {
			stdin := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"cbr0","type":"weft","socket":%q,"spoolDir":%q,"failPolicy":%q,"timeout":"1s",
				"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"cni0"}],"ips":[{"address":"10.1.1.9/24","gateway":"10.1.1.1"}]}}`, sock, spool, policy)
			r := execPlugin(t, n, env.Bin("weft"), map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "owner-" + policy,
				"CNI_NETNS": pod.NS.Path, "CNI_IFNAME": "eth0", "CNI_PATH": env.BinDir}, []byte(stdin))
			if policy == "closed" && (r.exit == 0 || !bytes.Contains(r.stdout, []byte(`"code": 11`)) && !bytes.Contains(r.stdout, []byte(`"code":11`))) {
				t.Errorf("failPolicy closed: exit %d stdout %s, want code 11", r.exit, r.stdout)
			}
			if policy == "open" && r.exit != 0 {
				t.Errorf("failPolicy open: exit %d stdout %s, want success (spooled)", r.exit, r.stdout)
			}
		}
		if hits.Load() != 0 {
			t.Fatalf("the plugin connected %d times to a socket owned by uid 65534", hits.Load())
		}
		if files, _ := filepath.Glob(filepath.Join(spool, "*.json")); len(files) != 1 {
			t.Fatalf("%d spooled events, want 1 (the open ADD)", len(files))
		}
	})

	t.Run("capabilities", func(t *testing.T) {
		for _, backend := range []string{"nftables", "iptables"} {
			t.Run(backend, func(t *testing.T) {
				defer run.sum.Track(t, PSecurity)()
				minimalCaps(t, backend)
			})
		}
	})
}

// weftdCaps is what weftd needs, and all it needs (README "Security").
var weftdCaps = []string{"net_admin", "net_raw"}

// minimalCaps runs weftd with a bounding set of weftdCaps only and requires
// it to converge as usual, with exactly those capabilities effective.
func minimalCaps(t *testing.T, backend string) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not installed")
	}
	env := harness.NewTestEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	n, cfg := oneNode(t, env, nodeSpec{backend: backend})
	if err := os.WriteFile(n.WeftdConfigPath(), cfg.MustYAML(), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(n.Dir, "weftd-caps.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	caps := "-all"
	for _, c := range weftdCaps {
		caps += ",+" + c
	}
	cmd := exec.Command("ip", "netns", "exec", n.NS.Name, "setpriv", "--bounding-set="+caps, "--inh-caps=-all", "--",
		env.Bin("weftd"), "run", "--config", n.WeftdConfigPath())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	if _, err := n.RunPod(ctx, "default", "caps"); err != nil {
		t.Fatal(err)
	}
	var last error
	for {
		st, err := n.WeftdStatus(ctx, n.Socket)
		if err == nil && st.Ready && st.Attachments == 1 && st.PacketFilter == backend {
			break
		}
		last = err
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("weftd with caps %s exited:\n%s", caps, b)
		case <-ctx.Done():
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("weftd with caps %s not ready: %v (%+v)\n%s", caps, last, st, b)
		case <-time.After(100 * time.Millisecond):
		}
	}
	// ip execs setpriv execs weftd: pid is weftd's own.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var eff, bnd string
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			eff = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			bnd = strings.TrimSpace(v)
		}
	}
	// CAP_NET_ADMIN = 12, CAP_NET_RAW = 13.
	const want = "0000000000003000"
	if eff != want || bnd != want {
		t.Fatalf("weftd CapEff %s CapBnd %s, want %s (net_admin, net_raw)", eff, bnd, want)
	}
	run.sum.Figure(PSecurity, "%s: ready with caps %s only", backend, strings.Join(weftdCaps, "+"))
}
