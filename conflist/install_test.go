package conflist

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
)

type testDir struct {
	conf, bin, src string
}

func newTestDir(t *testing.T) testDir {
	t.Helper()
	root := t.TempDir()
	d := testDir{conf: filepath.Join(root, "net.d"), bin: filepath.Join(root, "bin"), src: filepath.Join(root, "weft-src")}
	for _, p := range []string{d.conf, d.bin} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(d.src, []byte("#!/bin/sh\necho weft\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d testDir) installer(t *testing.T, e Entry) *Installer {
	return New(Options{ConfDir: d.conf, BinDir: d.bin, PluginSource: d.src, Entry: e,
		Log: slog.New(slog.NewTextHandler(tWriter{t}, nil))})
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// snapshot maps every file name in dir to its content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// The real-world configs of Calico, flannel and a single bridge .conf:
// weft goes last with the configured options, everything else (versions,
// plugins, key order, mode) stays, a second run changes nothing, and
// uninstall gives back the original bytes and removes the binary.
func TestInstallRealWorldConfigs(t *testing.T) {
	tests := []struct {
		file, wantList, version string
		types                   []string
	}{
		{"10-calico.conflist", "10-calico.conflist", "1.0.0", []string{"calico", "bandwidth", "portmap", "weft"}},
		{"10-flannel.conflist", "10-flannel.conflist", "0.3.1", []string{"flannel", "portmap", "weft"}},
		{"10-bridge.conf", "10-bridge.conflist", "0.4.0", []string{"bridge", "weft"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			d := newTestDir(t)
			orig := readExample(t, tt.file)
			writeFile(t, filepath.Join(d.conf, tt.file), orig, 0o600)
			// A later file the runtime does not use must not be touched.
			writeFile(t, filepath.Join(d.conf, "99-loopback.conf"), []byte(`{"cniVersion":"0.3.1","name":"lo","type":"loopback"}`), 0o644)
			before := snapshot(t, d.conf)

			in := d.installer(t, testEntry)
			res, err := in.Install(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			list := filepath.Join(d.conf, tt.wantList)
			if res.Primary != list || !res.Changed {
				t.Errorf("result %+v, want primary %s changed", res, list)
			}
			cl, err := libcni.ConfListFromFile(list)
			if err != nil {
				t.Fatalf("libcni: %v", err)
			}
			var types []string
			for _, p := range cl.Plugins {
				types = append(types, p.Network.Type)
			}
			if strings.Join(types, ",") != strings.Join(tt.types, ",") || cl.CNIVersion != tt.version {
				t.Errorf("chain %v version %s, want %v %s", types, cl.CNIVersion, tt.types, tt.version)
			}
			_, ps := pluginsOf(t, cl.Bytes)
			w := ps[len(ps)-1]
			if w["socket"] != testEntry.Socket || w["spoolDir"] != testEntry.SpoolDir || w["failPolicy"] != "open" || w["timeout"] != "2s" {
				t.Errorf("weft entry %v", w)
			}
			if st, err := os.Stat(list); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("mode of %s: %v %v, want 0600", list, st.Mode(), err)
			}
			if b, err := os.ReadFile(filepath.Join(d.bin, BinaryName)); err != nil || string(b) != "#!/bin/sh\necho weft\n" {
				t.Errorf("binary not installed: %v", err)
			}
			installed := snapshot(t, d.conf)
			if installed["99-loopback.conf"] != before["99-loopback.conf"] {
				t.Error("a conf file that is not the primary was changed")
			}

			// Idempotent: nothing changes, not even the file's inode.
			st1, _ := os.Stat(list)
			res, err = d.installer(t, testEntry).Ensure()
			st2, _ := os.Stat(list)
			if err != nil || res.Changed || !os.SameFile(st1, st2) {
				t.Errorf("second run: %+v %v, same file %v", res, err, os.SameFile(st1, st2))
			}
			if got := snapshot(t, d.conf); !equalMaps(got, installed) {
				t.Errorf("second run changed the conf dir")
			}

			ur, err := in.Uninstall()
			if err != nil {
				t.Fatal(err)
			}
			if got := snapshot(t, d.conf); !equalMaps(got, before) {
				t.Errorf("after uninstall the conf dir differs:\n%v\nwant\n%v", got, before)
			}
			if _, err := os.Stat(filepath.Join(d.bin, BinaryName)); !errors.Is(err, os.ErrNotExist) || !ur.Binary {
				t.Errorf("binary still there: %v %+v", err, ur)
			}
			if st, _ := os.Stat(filepath.Join(d.conf, tt.file)); st == nil || st.Mode().Perm() != 0o600 {
				t.Errorf("restored file mode %v", st)
			}
		})
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Files that do not parse are never touched and are reported; with no
// other candidate, there is no primary yet.
func TestInvalidFilesLeftAlone(t *testing.T) {
	calico := readExample(t, "10-calico.conflist")
	tests := []struct {
		name        string
		files       map[string][]byte
		wantPrimary string // "" = none
		wantSkipped []string
	}{
		{"half-written primary", map[string][]byte{"10-calico.conflist": calico[:len(calico)/2]}, "", []string{"10-calico.conflist"}},
		{"empty primary", map[string][]byte{"10-calico.conflist": {}}, "", []string{"10-calico.conflist"}},
		{"invalid first, valid next", map[string][]byte{
			"05-broken.conflist":  []byte(`{"name": "x", "plugins": [`),
			"10-flannel.conflist": readExample(t, "10-flannel.conflist"),
		}, "10-flannel.conflist", []string{"05-broken.conflist"}},
		{"list in a .conf", map[string][]byte{"10-calico.conf": calico}, "", []string{"10-calico.conf"}},
		{"weft's own file is not a primary", map[string][]byte{
			"00-weft.conflist": []byte(`{"name":"w","cniVersion":"1.0.0","plugins":[{"type":"weft"}]}`)}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDir(t)
			for n, b := range tt.files {
				writeFile(t, filepath.Join(d.conf, n), b, 0o644)
			}
			before := snapshot(t, d.conf)
			res, err := d.installer(t, testEntry).Ensure()
			var skipped []string
			for _, s := range res.Skipped {
				skipped = append(skipped, filepath.Base(s.Path))
				if s.Reason == "" {
					t.Errorf("skipped %s without a reason", s.Path)
				}
			}
			sort.Strings(skipped)
			if strings.Join(skipped, ",") != strings.Join(tt.wantSkipped, ",") {
				t.Errorf("skipped %v, want %v", skipped, tt.wantSkipped)
			}
			after := snapshot(t, d.conf)
			for _, n := range tt.wantSkipped {
				if after[n] != before[n] {
					t.Errorf("%s was changed", n)
				}
			}
			if tt.wantPrimary == "" {
				if !errors.Is(err, ErrNoPrimary) || !equalMaps(after, before) {
					t.Errorf("want ErrNoPrimary and no change, got %v", err)
				}
				return
			}
			if err != nil || filepath.Base(res.Primary) != tt.wantPrimary {
				t.Errorf("primary %s, %v; want %s", res.Primary, err, tt.wantPrimary)
			}
		})
	}
}

// install-cni as an init container blocks until the primary CNI writes
// its config, then returns with weft in it.
func TestInstallWaitsForPrimary(t *testing.T) {
	d := newTestDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := d.installer(t, testEntry).Install(ctx); done <- err }()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Install returned before the primary config exists: %v", err)
	default:
	}
	// The primary CNI writes in two steps, as a non-atomic writer does.
	path := filepath.Join(d.conf, "10-flannel.conflist")
	fl := readExample(t, "10-flannel.conflist")
	writeFile(t, path, fl[:40], 0o644)
	time.Sleep(10 * time.Millisecond)
	writeFile(t, path, fl, 0o644)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if p, err := Parse(b); err != nil || !p.HasWeft() {
		t.Errorf("after Install: %v\n%s", err, b)
	}
}

// The primary CNI rewrites its conflist without weft (as Calico and flannel
// do on every restart): weft is back within a second, whether the rewrite
// is a rename over the file or an in-place write.
func TestWatchReinsertsAfterRewrite(t *testing.T) {
	d := newTestDir(t)
	path := filepath.Join(d.conf, "10-calico.conflist")
	orig := readExample(t, "10-calico.conflist")
	writeFile(t, path, orig, 0o644)
	in := d.installer(t, testEntry)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := in.Install(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- in.Watch(ctx) }()
	time.Sleep(100 * time.Millisecond) // the watch is set up

	rewrites := []struct {
		name  string
		write func()
	}{
		{"rename over", func() {
			tmp := filepath.Join(d.conf, "calico.tmp")
			writeFile(t, tmp, orig, 0o644)
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
		{"in place", func() { writeFile(t, path, orig, 0o644) }},
		{"delete and create", func() {
			_ = os.Remove(path)
			time.Sleep(20 * time.Millisecond)
			writeFile(t, path, orig, 0o644)
		}},
	}
	for _, rw := range rewrites {
		start := time.Now()
		rw.write()
		for {
			b, _ := os.ReadFile(path)
			if p, err := Parse(b); err == nil && p.HasWeft() {
				t.Logf("%s: weft re-inserted after %v", rw.name, time.Since(start).Round(time.Millisecond))
				break
			}
			if time.Since(start) > time.Second {
				t.Fatalf("%s: weft not re-inserted within 1s", rw.name)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch: %v", err)
	}
}

// A runtime listing and reading the conf dir while weft rewrites the
// primary's conflist 200 times always finds a complete, valid config.
func TestConcurrentReaderNeverSeesPartialFile(t *testing.T) {
	d := newTestDir(t)
	path := filepath.Join(d.conf, "10-calico.conflist")
	writeFile(t, path, readExample(t, "10-calico.conflist"), 0o644)
	var stop atomic.Bool
	var reads, bad atomic.Int64
	var firstBad atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			// What containerd's go-cni does: list, sort, load the first.
			files, err := libcni.ConfFiles(d.conf, []string{".conf", ".conflist", ".json"})
			if err == nil && len(files) > 0 {
				sort.Strings(files)
				_, err = libcni.ConfListFromFile(files[0])
				if err == nil && filepath.Base(files[0]) != "10-calico.conflist" {
					err = errors.New("runtime picked " + files[0])
				}
			} else if err == nil {
				err = errors.New("no conf file")
			}
			reads.Add(1)
			if err != nil {
				bad.Add(1)
				firstBad.CompareAndSwap(nil, err.Error())
			}
		}
	}()
	for i := range 200 {
		e := testEntry
		e.Timeout = []string{"2s", "3s"}[i%2] // every run must rewrite
		res, err := New(Options{ConfDir: d.conf, BinDir: d.bin, Entry: e}).Ensure()
		if err != nil || !res.Changed {
			t.Fatalf("rewrite %d: %+v %v", i, res, err)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d reads during 200 rewrites", reads.Load())
	if bad.Load() != 0 {
		t.Errorf("%d of %d reads saw a broken config; first: %v", bad.Load(), reads.Load(), firstBad.Load())
	}
	if reads.Load() < 200 {
		t.Errorf("only %d reads: the reader did not overlap the writes", reads.Load())
	}
	if left := snapshot(t, d.conf); len(left) != 1 {
		t.Errorf("temp files left behind: %v", left)
	}
}

// Uninstall never leaves a conflist that names a missing binary: when weft
// cannot be taken out of a file, the binary stays.
func TestUninstallKeepsBinaryWhileAConfigNamesWeft(t *testing.T) {
	d := newTestDir(t)
	in := d.installer(t, testEntry)
	if _, err := in.InstallBinary(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(d.conf, "10-flannel.conflist"), readExample(t, "10-flannel.conflist"), 0o644)
	if _, err := in.Ensure(); err != nil {
		t.Fatal(err)
	}
	// A half-written file that names weft: the runtime might still read it.
	writeFile(t, filepath.Join(d.conf, "20-other.conflist"), []byte(`{"name":"o","plugins":[{"type":"weft"`), 0o644)
	if _, err := in.Uninstall(); err == nil {
		t.Error("Uninstall succeeded with a file that may name weft")
	}
	if _, err := os.Stat(filepath.Join(d.bin, BinaryName)); err != nil {
		t.Errorf("binary removed while a config may name it: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(d.conf, "10-flannel.conflist"))
	if string(b) != string(readExample(t, "10-flannel.conflist")) {
		t.Errorf("weft not removed from the conflist it could edit")
	}
}

// A converted .conf that the primary CNI writes again is converted again,
// and uninstall restores the newest .conf.
func TestSingleConfRewrittenByPrimary(t *testing.T) {
	d := newTestDir(t)
	conf := filepath.Join(d.conf, "10-bridge.conf")
	orig := readExample(t, "10-bridge.conf")
	writeFile(t, conf, orig, 0o644)
	in := d.installer(t, testEntry)
	if _, err := in.Ensure(); err != nil {
		t.Fatal(err)
	}
	v2 := []byte(strings.Replace(string(orig), "10.88.0.0/16", "10.89.0.0/16", 1))
	writeFile(t, conf, v2, 0o644)
	res, err := in.Ensure()
	if err != nil || !res.Changed || res.Converted != conf {
		t.Fatalf("reconvert: %+v %v", res, err)
	}
	b, _ := os.ReadFile(filepath.Join(d.conf, "10-bridge.conflist"))
	if !strings.Contains(string(b), "10.89.0.0/16") {
		t.Errorf("conflist not from the new .conf:\n%s", b)
	}
	if _, err := in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, d.conf); len(got) != 1 || got["10-bridge.conf"] != string(v2) {
		t.Errorf("after uninstall: %v", got)
	}
}

func TestInstallBinary(t *testing.T) {
	d := newTestDir(t)
	in := d.installer(t, testEntry)
	for i, want := range []bool{true, false} {
		changed, err := in.InstallBinary()
		if err != nil || changed != want {
			t.Errorf("run %d: changed %v, %v; want %v", i, changed, err, want)
		}
	}
	st, err := os.Stat(filepath.Join(d.bin, BinaryName))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("installed binary: %v %v", st, err)
	}
	writeFile(t, d.src, []byte("#!/bin/sh\necho v2\n"), 0o755)
	if changed, err := in.InstallBinary(); err != nil || !changed {
		t.Errorf("new version: %v %v", changed, err)
	}
	if left := snapshot(t, d.bin); len(left) != 1 || left[BinaryName] != "#!/bin/sh\necho v2\n" {
		t.Errorf("bin dir: %v", left)
	}
}

// A primary conflist or .conf at a cniVersion the plugin does not speak is
// left alone (weft would make libcni fail every pod ADD), and the error says
// which file, which version and what weft speaks; weft put there by an
// older install-cni is taken out again. Versions weft speaks, old ones
// included, get weft.
func TestUnsupportedCNIVersionIsLeftAlone(t *testing.T) {
	bridge := func(ver string, extra string) string {
		return `{"cniVersion": "` + ver + `", "name": "cbr0", "plugins": [{"type": "bridge", "bridge": "cni0"}` + extra + `]}`
	}
	weft := `, {"type": "weft"}`
	tests := []struct {
		name, file, data string
		wantErr          bool
		want             string // the file afterwards; "" = unchanged
	}{
		{"future conflist", "10-net.conflist", bridge("2.0.0", ""), true, ""},
		{"future conflist with weft in it", "10-net.conflist", bridge("1.9.0", weft), true, bridge("1.9.0", "")},
		{"future single conf", "10-net.conf", `{"cniVersion": "3.1.4", "name": "cbr0", "type": "bridge"}`, true, ""},
		{"0.2.0 conflist", "10-net.conflist", bridge("0.2.0", ""), false, "weft"},
		{"0.1.0 conflist", "10-net.conflist", bridge("0.1.0", ""), false, "weft"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDir(t)
			path := filepath.Join(d.conf, tc.file)
			writeFile(t, path, []byte(tc.data), 0o644)
			res, err := d.installer(t, Entry{}).Ensure()
			after, _ := os.ReadFile(path)
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("Ensure: %v", err)
				}
				if p, perr := Parse(after); perr != nil || !p.HasWeft() {
					t.Errorf("weft not inserted at a supported version: %v\n%s", perr, after)
				}
				return
			}
			if !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("Ensure = %+v, %v; want ErrUnsupportedVersion", res, err)
			}
			for _, s := range []string{path, "1.1.0", "0.2.0"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %q", err, s)
				}
			}
			want := tc.want
			if want == "" {
				want = tc.data
			}
			if string(after) != want {
				t.Errorf("file afterwards:\n%s\nwant:\n%s", after, want)
			}
			if snap := snapshot(t, d.conf); len(snap) != 1 {
				t.Errorf("conf dir holds %v, want only %s", snap, tc.file)
			}
		})
	}
}
