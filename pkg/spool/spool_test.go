package spool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

func event(verb string, i int) api.Event {
	return api.Event{
		Verb:        verb,
		ContainerID: fmt.Sprintf("c%04d", i),
		IfName:      "eth0",
		Netns:       "/var/run/netns/p",
		IPs:         []api.PodIP{{Address: "10.1.2.5/24", Gateway: "10.1.2.1"}},
		Time:        time.Unix(1700000000, int64(i)).UTC(),
	}
}

func TestWriteListOrderAndPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool") // does not exist yet
	var want []api.Event
	for i := range 20 {
		verb := api.VerbAdd
		if i%3 == 0 {
			verb = api.VerbDel
		}
		ev := event(verb, i)
		name, err := writeName(dir, 100, ev)
		if err != nil {
			t.Fatalf("Write %d: %v", i, err)
		}
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".json") {
			t.Fatalf("Write returned name %q", name)
		}
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
		want = append(want, ev)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", di.Mode().Perm())
	}
	entries, skipped, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(skipped) != 0 {
		t.Errorf("skipped %v", skipped)
	}
	if len(entries) != len(want) {
		t.Fatalf("List returned %d entries, want %d", len(entries), len(want))
	}
	for i, e := range entries {
		if e.Event.ContainerID != want[i].ContainerID || e.Event.Verb != want[i].Verb || !e.Event.Time.Equal(want[i].Time) {
			t.Errorf("entry %d = %+v, want %+v", i, e.Event, want[i])
		}
		if i > 0 && entries[i-1].Name >= e.Name {
			t.Errorf("names not strictly increasing: %s then %s", entries[i-1].Name, e.Name)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	if len(leftovers) != 0 {
		t.Errorf("temp files left behind: %v", leftovers)
	}
}

func TestNamesStayOrderedWhenClockIsBehind(t *testing.T) {
	dir := t.TempDir()
	// A file stamped far in the future (as if the clock stepped back since).
	future := fmt.Sprintf("%020d-1-aaaa.json", time.Now().Add(time.Hour).UnixNano())
	if err := os.WriteFile(filepath.Join(dir, future), []byte(`{"verb":"ADD","containerID":"x","ifName":"eth0","time":"2024-01-01T00:00:00Z"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	name, err := writeName(dir, 10, event(api.VerbAdd, 1))
	if err != nil {
		t.Fatal(err)
	}
	if name <= future {
		t.Errorf("new name %s sorts before existing %s", name, future)
	}
}

func TestListSkipsBrokenFilesAndIgnoresTemp(t *testing.T) {
	dir := t.TempDir()
	good, err := writeName(dir, 10, event(api.VerbAdd, 1))
	if err != nil {
		t.Fatal(err)
	}
	full, err := os.ReadFile(filepath.Join(dir, good))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"00000000000000000001-1-torn.json":    string(full[:len(full)/2]),
		"00000000000000000002-1-empty.json":   "",
		"00000000000000000003-1-garbage.json": "\x00\xffnot json",
		"00000000000000000004-1-verb.json":    `{"verb":"UPDATE","containerID":"c"}`,
		"00000000000000000005-1-noid.json":    `{"verb":"ADD"}`,
		"00000000000000000006-1-two.json":     string(full) + string(full),
		".tmp-123456":                         string(full[:10]), // writer in progress
		"README":                              "not an event",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	entries, skipped, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name != good {
		t.Errorf("entries = %+v, want only %s", entries, good)
	}
	wantSkipped := []string{
		"00000000000000000001-1-torn.json",
		"00000000000000000002-1-empty.json",
		"00000000000000000003-1-garbage.json",
		"00000000000000000004-1-verb.json",
		"00000000000000000005-1-noid.json",
		"00000000000000000006-1-two.json",
	}
	if len(skipped) != len(wantSkipped) {
		t.Fatalf("skipped = %+v, want %v", skipped, wantSkipped)
	}
	for i, s := range skipped {
		if s.Name != wantSkipped[i] || s.Reason == "" {
			t.Errorf("skipped[%d] = %+v, want name %s with a reason", i, s, wantSkipped[i])
		}
	}
}

func TestListMissingDir(t *testing.T) {
	entries, skipped, err := List(filepath.Join(t.TempDir(), "nope"))
	if err != nil || len(entries) != 0 || len(skipped) != 0 {
		t.Errorf("List(missing) = %v, %v, %v; want empty, nil", entries, skipped, err)
	}
}

func TestRemove(t *testing.T) {
	dir := t.TempDir()
	name, err := writeName(dir, 10, event(api.VerbDel, 1))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // second remove of the same name is not an error
		if err := Remove(dir, name); err != nil {
			t.Fatalf("Remove: %v", err)
		}
	}
	entries, _, err := List(dir)
	if err != nil || len(entries) != 0 {
		t.Errorf("after Remove: %v, %v", entries, err)
	}
	for _, bad := range []string{"", "..", "../x.json", "a/b.json", "dropped", ".lock"} {
		if err := Remove(dir, bad); err == nil {
			t.Errorf("Remove(%q) succeeded", bad)
		}
	}
}

func TestLimitAndDropCounter(t *testing.T) {
	tests := []struct {
		name    string
		limit   int
		writes  int
		wantErr int
	}{
		{"under", 5, 4, 0},
		{"exact", 5, 5, 0},
		{"over", 5, 12, 7},
		{"one", 1, 3, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			full := 0
			for i := range tc.writes {
				_, err := writeName(dir, tc.limit, event(api.VerbAdd, i))
				switch {
				case errors.Is(err, ErrFull):
					full++
				case err != nil:
					t.Fatalf("Write %d: %v", i, err)
				}
			}
			if full != tc.wantErr {
				t.Errorf("ErrFull %d times, want %d", full, tc.wantErr)
			}
			d, err := Dropped(dir)
			if err != nil || d != uint64(tc.wantErr) {
				t.Errorf("Dropped = %d, %v; want %d", d, err, tc.wantErr)
			}
			entries, _, _ := List(dir)
			if len(entries) != tc.writes-tc.wantErr {
				t.Errorf("%d entries, want %d", len(entries), tc.writes-tc.wantErr)
			}
		})
	}
}

func TestConcurrentWritersRespectLimit(t *testing.T) {
	dir := t.TempDir()
	const writers, each, limit = 8, 100, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := writeName(dir, limit, event(api.VerbAdd, w*each+i)); err != nil && !errors.Is(err, ErrFull) {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	entries, skipped, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != limit || len(skipped) != 0 {
		t.Errorf("%d entries, %d skipped; want %d, 0", len(entries), len(skipped), limit)
	}
	d, err := Dropped(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d != writers*each-limit {
		t.Errorf("Dropped = %d, want %d", d, writers*each-limit)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	if len(leftovers) != 0 {
		t.Errorf("temp files left behind: %d", len(leftovers))
	}
}

func TestWriteRejectsBadLimit(t *testing.T) {
	if _, err := writeName(t.TempDir(), 0, event(api.VerbAdd, 1)); err == nil {
		t.Error("Write with limit 0 succeeded")
	}
}

func TestRemoveStaleTemp(t *testing.T) {
	dir := t.TempDir()
	name, err := writeName(dir, 10, event(api.VerbAdd, 1))
	if err != nil {
		t.Fatal(err)
	}
	old, young := filepath.Join(dir, ".tmp-old"), filepath.Join(dir, ".tmp-young")
	for _, p := range []string{old, young} {
		if err := os.WriteFile(p, []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	n, err := RemoveStaleTemp(dir, time.Minute)
	if err != nil || n != 1 {
		t.Errorf("RemoveStaleTemp = %d, %v; want 1", n, err)
	}
	for p, want := range map[string]bool{old: false, young: true, filepath.Join(dir, name): true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s exists = %v, want %v", p, err == nil, want)
		}
	}
	if n, err := RemoveStaleTemp(filepath.Join(dir, "missing"), time.Minute); n != 0 || err != nil {
		t.Errorf("missing dir: %d, %v", n, err)
	}
}

// writeName is Write without a deadline, returning the file name.
func writeName(dir string, limit int, ev api.Event) (string, error) {
	w, err := Write(context.Background(), dir, limit, ev)
	return w.Name, err
}

// A writer that holds the lock and never lets go cannot keep another
// writer past its deadline: the event is committed without the lock, in
// time, and says so.
func TestWriteDoesNotOutliveItsDeadlineWhenLockIsHeld(t *testing.T) {
	dir := t.TempDir()
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	const budget = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	start := time.Now()
	w, err := Write(ctx, dir, 10, event(api.VerbAdd, 1))
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if took > budget {
		t.Errorf("Write took %v with a %v deadline", took, budget)
	}
	if !w.Unlocked {
		t.Error("Written.Unlocked = false while another holder had the lock")
	}
	entries, _, err := List(dir)
	if err != nil || len(entries) != 1 || entries[0].Name != w.Name {
		t.Errorf("List = %+v, %v; want the one event %s", entries, err, w.Name)
	}

	// Once the holder lets go, writers take the lock again.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), budget)
	defer cancel2()
	if w, err := Write(ctx2, dir, 10, event(api.VerbAdd, 2)); err != nil || w.Unlocked {
		t.Errorf("Write after unlock = %+v, %v; want a locked commit", w, err)
	}
}
