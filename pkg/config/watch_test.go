package config

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder collects Watcher callbacks.
type recorder struct {
	mu      sync.Mutex
	changes []*Config
	errs    []error
	signal  chan struct{}
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 100)} }

func (r *recorder) onChange(c *Config) {
	r.mu.Lock()
	r.changes = append(r.changes, c)
	r.mu.Unlock()
	r.signal <- struct{}{}
}

func (r *recorder) onError(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	r.signal <- struct{}{}
}

func (r *recorder) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.changes), len(r.errs)
}

func (r *recorder) lastChange() *Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changes[len(r.changes)-1]
}

// waitFor waits up to 1s (the contract) for the counts to reach the wanted
// values.
func (r *recorder) waitFor(t *testing.T, changes, errs int) {
	t.Helper()
	r.waitForWithin(t, time.Second, changes, errs)
}

func (r *recorder) waitForWithin(t *testing.T, d time.Duration, changes, errs int) {
	t.Helper()
	deadline := time.After(d)
	for {
		c, e := r.counts()
		if c == changes && e == errs {
			return
		}
		if c > changes || e > errs {
			t.Fatalf("got %d changes, %d errors; want %d, %d (errors: %v)", c, e, changes, errs, r.errs)
		}
		select {
		case <-r.signal:
		case <-deadline:
			t.Fatalf("after %v: %d changes, %d errors; want %d, %d", d, c, e, changes, errs)
		}
	}
}

// quiet asserts no callback arrives for a while.
func (r *recorder) quiet(t *testing.T, changes, errs int) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	if c, e := r.counts(); c != changes || e != errs {
		t.Fatalf("got %d changes, %d errors; want still %d, %d", c, e, changes, errs)
	}
}

func configWithGateway(t *testing.T, gw string) []byte {
	t.Helper()
	return []byte(strings.Replace(string(readTestdata(t, "valid.yaml")), "gateway: c1-n1", "gateway: "+gw, 1))
}

func startWatch(t *testing.T, path string, last *Config) *recorder {
	t.Helper()
	return runWatcher(t, path, &Watcher{Env: testEnv("", ""), Last: last, Poll: -1, Logger: quietLog})
}

// configMap lays out a Kubernetes ConfigMap volume the way the kubelet's
// atomic writer does: weft.yaml -> ..data/weft.yaml, ..data -> ..<ts>.
type configMap struct {
	t   *testing.T
	dir string
	n   int
	cur string
}

func newConfigMap(t *testing.T, content []byte) *configMap {
	cm := &configMap{t: t, dir: t.TempDir()}
	cm.writeVersion(content)
	if err := os.Symlink(cm.cur, filepath.Join(cm.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "weft.yaml"), filepath.Join(cm.dir, "weft.yaml")); err != nil {
		t.Fatal(err)
	}
	return cm
}

func (cm *configMap) writeVersion(content []byte) {
	cm.n++
	cm.cur = "..2026_11_22_10_00_0" + string(rune('0'+cm.n))
	d := filepath.Join(cm.dir, cm.cur)
	if err := os.Mkdir(d, 0o755); err != nil {
		cm.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "weft.yaml"), content, 0o644); err != nil {
		cm.t.Fatal(err)
	}
}

// update swaps ..data atomically and removes the old version, as the
// kubelet does.
func (cm *configMap) update(content []byte) { cm.updatePaused(content, 0) }

// updatePaused is update with a pause between writing the new version and
// the swap, as when the kubelet writes several keys' files.
func (cm *configMap) updatePaused(content []byte, pause time.Duration) {
	old := cm.cur
	cm.writeVersion(content)
	time.Sleep(pause)
	tmp := filepath.Join(cm.dir, "..data_tmp")
	if err := os.Symlink(cm.cur, tmp); err != nil {
		cm.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(cm.dir, "..data")); err != nil {
		cm.t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(cm.dir, old)); err != nil {
		cm.t.Fatal(err)
	}
}

func (cm *configMap) path() string { return filepath.Join(cm.dir, "weft.yaml") }

func TestWatchConfigMapSwap(t *testing.T) {
	cm := newConfigMap(t, configWithGateway(t, "c1-n1"))
	r := startWatch(t, cm.path(), nil)
	r.waitFor(t, 1, 0) // the initial config
	if gw := r.lastChange().Cluster.Gateway; gw != "c1-n1" {
		t.Fatalf("initial gateway %q", gw)
	}

	cm.update(configWithGateway(t, "c1-n2"))
	r.waitFor(t, 2, 0)
	if gw := r.lastChange().Cluster.Gateway; gw != "c1-n2" {
		t.Fatalf("gateway after swap %q, want c1-n2", gw)
	}

	// An invalid update is refused; no change is reported.
	cm.update([]byte("cluster: {id: c1, podCIDRs: [10.1.0.0/33]}\n"))
	r.waitFor(t, 2, 1)
	if !strings.Contains(r.errs[0].Error(), "cluster.podCIDRs[0]") {
		t.Errorf("error %v does not name the field", r.errs[0])
	}

	// Fixing it reports the fixed config; a second swap to identical
	// content (only a comment differs) reports nothing.
	cm.update(configWithGateway(t, "c1-n1"))
	r.waitFor(t, 3, 1)
	cm.update(append(configWithGateway(t, "c1-n1"), "# touched\n"...))
	r.quiet(t, 3, 1)
	if gw := r.lastChange().Cluster.Gateway; gw != "c1-n1" {
		t.Fatalf("gateway %q, want c1-n1", gw)
	}

	// A third swap still works: the watch did not die with the first
	// version's directory.
	cm.update(configWithGateway(t, "c1-n2"))
	r.waitFor(t, 4, 1)
}

func TestWatchWithLastConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "weft.yaml")
	os.WriteFile(p, configWithGateway(t, "c1-n1"), 0o644)
	last, err := LoadWith(p, testEnv("", ""))
	if err != nil {
		t.Fatal(err)
	}
	r := startWatch(t, p, last)
	r.quiet(t, 0, 0) // same content as Last: nothing to report
}

func TestWatchInPlaceWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "weft.yaml")
	os.WriteFile(p, configWithGateway(t, "c1-n1"), 0o644)
	r := startWatch(t, p, nil)
	r.waitFor(t, 1, 0)

	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(configWithGateway(t, "c1-n2"))
	f.Close()
	r.waitFor(t, 2, 0)
	if gw := r.lastChange().Cluster.Gateway; gw != "c1-n2" {
		t.Fatalf("gateway %q, want c1-n2", gw)
	}

	os.WriteFile(p, []byte("nodeName: [\n"), 0o644)
	r.waitFor(t, 2, 1)
}

func TestWatchRenameOver(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "weft.yaml")
	os.WriteFile(p, configWithGateway(t, "c1-n1"), 0o644)
	r := startWatch(t, p, nil)
	r.waitFor(t, 1, 0)

	tmp := filepath.Join(dir, ".weft.yaml.swp")
	os.WriteFile(tmp, configWithGateway(t, "c1-n2"), 0o644)
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, 2, 0)
	if gw := r.lastChange().Cluster.Gateway; gw != "c1-n2" {
		t.Fatalf("gateway %q, want c1-n2", gw)
	}

	// Removed then recreated (some editors): an error while it is gone is
	// allowed, the recreated file must be picked up.
	os.Remove(p)
	time.Sleep(150 * time.Millisecond)
	os.WriteFile(p, configWithGateway(t, "c1-n1"), 0o644)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if c, _ := r.counts(); c == 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c, _ := r.counts(); c != 3 || r.lastChange().Cluster.Gateway != "c1-n1" {
		t.Fatalf("recreated file not picked up: %d changes", c)
	}
}

func TestWatchPollFallback(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "weft.yaml")
	os.WriteFile(p, configWithGateway(t, "c1-n1"), 0o644)
	// A debounce far longer than the test stands in for lost events: the
	// first write after a quiet period is read at once, and then only the
	// poll can see the next one.
	r := runWatcher(t, p, &Watcher{Env: testEnv("", ""), Debounce: time.Hour, Poll: 100 * time.Millisecond, Logger: quietLog})
	r.waitFor(t, 1, 0)
	os.WriteFile(p, configWithGateway(t, "c1-n2"), 0o644)
	r.waitFor(t, 2, 0)
	os.WriteFile(p, configWithGateway(t, "c1-n1"), 0o644)
	r.waitFor(t, 3, 0)
}

// runWatcher runs w on path until the test ends, and checks it returned
// no error.
func runWatcher(t *testing.T, path string, w *Watcher) *recorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := newRecorder()
	done := make(chan error, 1)
	go func() { done <- w.Watch(ctx, path, r.onChange, r.onError) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	return r
}

// A directory that does not exist yet (a ConfigMap volume not mounted) is
// not the end of the watch: the file is reported once it appears, and then
// followed as usual.
func TestWatchMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	p := filepath.Join(dir, "weft.yaml")
	r := startWatch(t, p, nil)
	r.waitFor(t, 0, 1) // the missing file is a problem, reported once
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, configWithGateway(t, "c1-n1"), 0o644)
	r.waitForWithin(t, 3*time.Second, 1, 1) // the directory is retried every second
	os.WriteFile(p, configWithGateway(t, "c1-n2"), 0o644)
	r.waitFor(t, 2, 1)
	if gw := r.lastChange().Cluster.Gateway; gw != "c1-n2" {
		t.Fatalf("gateway %q, want c1-n2", gw)
	}
}

// A watched directory that is deleted and made again (a volume remounted)
// is watched again: the retry, off while the watch is in place, starts
// when the kernel drops the watch, well before the 10 s poll.
func TestWatchDirectoryRecreated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "conf")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "weft.yaml")
	os.WriteFile(p, configWithGateway(t, "c1-n1"), 0o644)
	r := startWatch(t, p, nil)
	r.waitFor(t, 1, 0)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	r.waitForWithin(t, 3*time.Second, 1, 1) // the missing file, found by the retry
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, configWithGateway(t, "c1-n2"), 0o644)
	r.waitForWithin(t, 3*time.Second, 2, 1)
	if gw := r.lastChange().Cluster.Gateway; gw != "c1-n2" {
		t.Fatalf("gateway %q, want c1-n2", gw)
	}
	os.WriteFile(p, configWithGateway(t, "c1-n1"), 0o644)
	r.waitFor(t, 3, 1) // followed by its events again, not by the retry
}

var quietLog = slog.New(slog.DiscardHandler)

// The good file coming back after a refused one must be reported, even
// though it equals the configuration in force: the refusal must clear.
func TestWatchGoodFileBackAfterRefusal(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "weft.yaml")
	good := configWithGateway(t, "c1-n1")
	os.WriteFile(p, good, 0o644)
	last, err := LoadWith(p, testEnv("", ""))
	if err != nil {
		t.Fatal(err)
	}
	r := startWatch(t, p, last)
	os.WriteFile(p, []byte("nodeName: [\n"), 0o644)
	r.waitFor(t, 0, 1)
	os.WriteFile(p, good, 0o644)
	r.waitFor(t, 1, 1)
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Files next to the config (a daemon log, an editor's swap file) are not
// events of the config: with debug logging to a file in the same
// directory, treating them as such fed the watch its own log lines.
func TestWatchIgnoresOtherFilesInTheDirectory(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "weft.yaml")
	os.WriteFile(p, configWithGateway(t, "c1-n1"), 0o644)
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := newRecorder()
	w := &Watcher{Env: testEnv("", ""), Poll: -1, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	go func() { _ = w.Watch(ctx, p, r.onChange, r.onError) }()
	r.waitFor(t, 1, 0)
	for i := 0; i < 20; i++ {
		os.WriteFile(filepath.Join(dir, "weftd.log"), []byte(strings.Repeat("x", i)), 0o644)
		os.WriteFile(filepath.Join(dir, ".weft.yaml.swp"), []byte("swap"), 0o644)
	}
	time.Sleep(200 * time.Millisecond)
	if n := strings.Count(logs.String(), "config directory event"); n != 0 {
		t.Fatalf("%d events logged for files that are not the config:\n%s", n, logs.String())
	}
	// The config itself is still followed.
	os.WriteFile(p, configWithGateway(t, "c1-n2"), 0o644)
	r.waitFor(t, 2, 0)
}

// The first change after a quiet period is read without waiting for the
// debounce (it is most of a reload's time otherwise); a file that does not
// parse at that first read is only reported once the burst is over, so a
// half-written file never shows as a refusal.
func TestWatchLeadingEdge(t *testing.T) {
	// Long enough that a loaded machine reads the renamed file well within
	// it: what is checked is that the read does not wait for it.
	const debounce = 2 * time.Second
	dir := t.TempDir()
	p := filepath.Join(dir, "weft.yaml")
	os.WriteFile(p, configWithGateway(t, "c1-n1"), 0o644)
	r := runWatcher(t, p, &Watcher{Env: testEnv("", ""), Debounce: debounce, Poll: -1, Logger: quietLog})
	r.waitFor(t, 1, 0)

	tmp := filepath.Join(dir, ".weft.yaml.tmp")
	os.WriteFile(tmp, configWithGateway(t, "c1-n2"), 0o644)
	t0 := time.Now()
	os.Rename(tmp, p)
	r.waitForWithin(t, debounce+5*time.Second, 2, 0)
	if d := time.Since(t0); d >= debounce {
		t.Errorf("change reported after %v: it waited for the debounce", d)
	}
	time.Sleep(debounce + 200*time.Millisecond) // the burst ends

	os.WriteFile(p, []byte("nodeName: [\n"), 0o644)
	t0 = time.Now()
	r.waitForWithin(t, debounce+5*time.Second, 2, 1)
	if d := time.Since(t0); d < debounce {
		t.Errorf("refusal reported after %v, before the burst could end", d)
	}
}

// remoteCIDRs is a valid config whose remote c2 has the pod CIDRs
// 10.2.0.0/24 … 10.2.(n-1).0/24, one per line at the end of the file: any
// prefix of it cut after a line is valid too, which is what makes a
// half-written file dangerous.
func remoteCIDRs(n int) []byte {
	var b strings.Builder
	b.WriteString("nodeName: c1-n1\ncluster:\n  id: c1\n  podCIDRs: [10.1.0.0/16]\n  gateway: c1-n1\n  nodes:\n    - {name: c1-n1, ip: 192.168.10.11}\n" +
		"remotes:\n  - id: c2\n    gatewayIP: 192.168.20.11\n    podCIDRs:\n")
	for i := range n {
		b.WriteString("      - 10.2." + string(rune('0'+i)) + ".0/24\n")
	}
	return []byte(b.String())
}

func remoteCount(c *Config) int { return len(c.Parsed.Remotes[0].PodCIDRs) }

// A file written in place is read when its writer closes it, never in
// between: a writer pausing longer than the debounce (an editor writing in
// chunks, a slow disk) must neither have its half file applied (routes of
// the missing CIDRs deleted, then restored) nor reported as a refusal.
func TestWatchInPlaceWriteNeverHalfRead(t *testing.T) {
	full := remoteCIDRs(6)
	for _, tc := range []struct {
		name string
		cut  int // bytes written before the pause
	}{
		{"valid prefix", len(remoteCIDRs(3))},        // a config with 3 of the 6 CIDRs
		{"invalid prefix", len(remoteCIDRs(3)) + 10}, // "      - 10.2.3": not a CIDR
		{"truncated only", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "weft.yaml")
			os.WriteFile(p, remoteCIDRs(1), 0o644)
			r := runWatcher(t, p, &Watcher{Env: testEnv("", ""), Debounce: 50 * time.Millisecond, Poll: -1, Logger: quietLog})
			r.waitFor(t, 1, 0)

			f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(full[:tc.cut])
			time.Sleep(300 * time.Millisecond) // six debounces
			if c, e := r.counts(); c != 1 || e != 0 {
				t.Fatalf("during the write: %d changes, %d errors (%v); want none new", c-1, e, r.errs)
			}
			t0 := time.Now()
			f.Write(full[tc.cut:])
			f.Close()
			r.waitFor(t, 2, 0)
			if d := time.Since(t0); d > 40*time.Millisecond {
				t.Logf("closed file read after %v (the debounce is 50 ms)", d)
			}
			if n := remoteCount(r.lastChange()); n != 6 {
				t.Fatalf("applied %d remote CIDRs, want 6", n)
			}
			r.quiet(t, 2, 0)
		})
	}
}

// Each complete version of a burst is read at once, the last one
// included: a reload does not wait for the burst to end.
func TestWatchBurstOfRenames(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "weft.yaml")
	os.WriteFile(p, remoteCIDRs(1), 0o644)
	r := runWatcher(t, p, &Watcher{Env: testEnv("", ""), Debounce: 400 * time.Millisecond, Poll: -1, Logger: quietLog})
	r.waitFor(t, 1, 0)

	var t0 time.Time
	for n := 2; n <= 4; n++ {
		tmp := filepath.Join(dir, ".weft.yaml.tmp")
		os.WriteFile(tmp, remoteCIDRs(n), 0o644)
		t0 = time.Now()
		os.Rename(tmp, p)
		time.Sleep(20 * time.Millisecond)
	}
	deadline := time.Now().Add(time.Second)
	for {
		c, e := r.counts()
		if e != 0 {
			t.Fatalf("errors: %v", r.errs)
		}
		if c > 1 && remoteCount(r.lastChange()) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("last version not applied within 1 s (%d changes)", c)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if d := time.Since(t0); d >= 400*time.Millisecond {
		t.Errorf("last version of the burst applied %v after its rename: it waited for the debounce", d)
	}
}

// The kubelet's ConfigMap update (new timestamped directory, "..data"
// swapped by a rename, the old directory removed) is applied when "..data"
// moves, not after the burst of events around it.
func TestWatchConfigMapSwapAtOnce(t *testing.T) {
	cm := newConfigMap(t, remoteCIDRs(1))
	r := runWatcher(t, cm.path(), &Watcher{Env: testEnv("", ""), Debounce: 400 * time.Millisecond, Poll: -1, Logger: quietLog})
	r.waitFor(t, 1, 0)
	for n := 2; n <= 3; n++ {
		t0 := time.Now()
		cm.updatePaused(remoteCIDRs(n), 50*time.Millisecond)
		r.waitFor(t, n, 0)
		if d := time.Since(t0); d >= 400*time.Millisecond {
			t.Errorf("update %d applied %v after it began: it waited for the debounce", n, d)
		}
		if got := remoteCount(r.lastChange()); got != n {
			t.Fatalf("applied %d CIDRs, want %d", got, n)
		}
		time.Sleep(500 * time.Millisecond) // the burst ends
	}
	r.quiet(t, 3, 0)
}

// A writer that keeps the file open is not waited for forever: after
// WriteStall of quiet the file is read (and, here, refused) as it is.
func TestWatchWriteStall(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "weft.yaml")
	os.WriteFile(p, remoteCIDRs(1), 0o644)
	r := runWatcher(t, p, &Watcher{Env: testEnv("", ""), Debounce: 20 * time.Millisecond, WriteStall: 300 * time.Millisecond, Poll: -1, Logger: quietLog})
	r.waitFor(t, 1, 0)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t0 := time.Now()
	f.Write([]byte("nodeName: [\n"))
	r.waitFor(t, 1, 1)
	if d := time.Since(t0); d < 300*time.Millisecond {
		t.Errorf("file still open for writing read after %v, before WriteStall", d)
	}
}

// weftd parsed the file at start: given those bytes (LastData), the
// watcher's first read does not parse them again (at 20,000 CIDRs a parse
// is most of the start-up's CPU), and still parses content that differs.
func TestWatchLastDataSkipsTheSecondParse(t *testing.T) {
	for _, tc := range []struct {
		name      string
		lastData  func(file []byte) []byte
		wantParse bool
	}{
		{"same bytes", func(b []byte) []byte { return b }, false},
		{"other bytes", func(b []byte) []byte { return append(b, "# edited\n"...) }, true},
		{"none", func([]byte) []byte { return nil }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "weft.yaml")
			data := []byte(strings.Replace(string(remoteCIDRs(2)), "nodeName: c1-n1\n", "", 1))
			os.WriteFile(p, data, 0o644)
			var mu sync.Mutex
			parses := 0
			env := Env{Getenv: func(k string) string {
				if k == "NODE_NAME" { // SetDefaults asks once per parse
					mu.Lock()
					parses++
					mu.Unlock()
					return "c1-n1"
				}
				return ""
			}}
			last, err := ParseWith(data, env)
			if err != nil {
				t.Fatal(err)
			}
			parses = 0
			r := runWatcher(t, p, &Watcher{Env: env, Last: last, LastData: tc.lastData(data), Poll: -1, Logger: quietLog})
			r.quiet(t, 0, 0) // unchanged content: no news either way
			mu.Lock()
			defer mu.Unlock()
			if (parses > 0) != tc.wantParse {
				t.Errorf("%d parses on the first read, want parse %t", parses, tc.wantParse)
			}
		})
	}
}

// The fallback poll does not read a file its writer is still writing
// either.
func TestWatchPollWaitsForTheWriter(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "weft.yaml")
	os.WriteFile(p, remoteCIDRs(1), 0o644)
	r := runWatcher(t, p, &Watcher{Env: testEnv("", ""), Debounce: 20 * time.Millisecond, WriteStall: time.Second,
		Poll: 30 * time.Millisecond, Logger: quietLog})
	r.waitFor(t, 1, 0)
	full := remoteCIDRs(6)
	cut := len(remoteCIDRs(3))
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(full[:cut])
	time.Sleep(300 * time.Millisecond) // ten polls
	if c, e := r.counts(); c != 1 || e != 0 {
		t.Fatalf("during the write: %d changes, %d errors; want none new", c-1, e)
	}
	f.Write(full[cut:])
	f.Close()
	r.waitFor(t, 2, 0)
	if n := remoteCount(r.lastChange()); n != 6 {
		t.Fatalf("applied %d remote CIDRs, want 6", n)
	}
}
