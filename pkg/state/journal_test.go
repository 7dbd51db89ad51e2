package state

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

// snapshotNow writes what was put in the maps directly (test fixtures
// without a record each) as a snapshot.
func snapshotNow(tb testing.TB, s *Store) {
	s.mu.Lock()
	err := s.rebuildLocked()
	s.mu.Unlock()
	if err != nil {
		tb.Fatal(err)
	}
}

// journalPath is the store's current journal file.
func journalPath(s *Store) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return filepath.Join(s.dir, journalName(s.seq))
}

// An ADD appends one record to the journal and writes nothing else,
// however many attachments and remembered DELs the store holds: before the
// journal, every ADD rewrote the whole state.json (temp file and rename).
func TestPutAppendsOneRecord(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1700000000, 0).UTC()
	for i := range 1000 {
		s.attachments[api.AttachmentKey{ContainerID: fmt.Sprintf("c%04d", i), IfName: "eth0"}] = att(fmt.Sprintf("c%04d", i))
	}
	for i := range MaxTombstones {
		s.tombstones[api.AttachmentKey{ContainerID: fmt.Sprintf("gone-%04d", i), IfName: "eth0"}] = t0.Add(time.Duration(i))
	}
	snapshotNow(t, s)
	s.Close()
	if s, err = Open(dir, quiet()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Len() != 1000 || len(s.Tombstones()) != MaxTombstones {
		t.Fatalf("fixture: %d attachments, %d tombstones", s.Len(), len(s.Tombstones()))
	}
	snapBefore, err := os.Stat(filepath.Join(dir, fileName))
	if err != nil {
		t.Fatal(err)
	}
	jpath := journalPath(s)
	for i, id := range []string{"new-1", "new-2", "new-3"} {
		if err := s.Put(ctx, att(id)); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(jpath)
		if err != nil {
			t.Fatal(err)
		}
		lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
		if len(lines) != i+1 || len(data) > (i+1)*512 {
			t.Fatalf("after %d ADDs the journal has %d lines, %d bytes; want %d records of a few hundred bytes", i+1, len(lines), len(data), i+1)
		}
		if !bytes.Contains(lines[i], []byte(id)) {
			t.Fatalf("record %d = %s, want the ADD of %s", i+1, lines[i], id)
		}
	}
	snapAfter, err := os.Stat(filepath.Join(dir, fileName))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(snapBefore, snapAfter) || !snapAfter.ModTime().Equal(snapBefore.ModTime()) {
		t.Error("an ADD rewrote state.json")
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 2 {
		t.Errorf("state dir holds %v, want the snapshot and one journal", names)
	}
}

// A journal whose tail was torn (weftd killed during the write) or whose
// records were damaged is read up to the damage, the damage reported, and
// the next Open writes a state that has none of it.
func TestJournalDamageDetectedAndDropped(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		mangle func([]byte) []byte
		want   []string // attachments kept
		clean  bool     // no problem to report
	}{
		{"intact", func(b []byte) []byte { return b }, []string{"a", "b", "c"}, true},
		{"torn last record", func(b []byte) []byte { return b[:len(b)-20] }, []string{"a", "b"}, false},
		{"last record without its newline", func(b []byte) []byte { return b[:len(b)-1] }, []string{"a", "b"}, false},
		{"checksum of the second record wrong", func(b []byte) []byte {
			lines := bytes.SplitAfter(b, []byte("\n"))
			lines[1] = append([]byte("00000000"), lines[1][8:]...)
			return bytes.Join(lines, nil)
		}, []string{"a"}, false},
		{"a byte of the second record flipped", func(b []byte) []byte {
			i := bytes.IndexByte(b, '\n') + 30
			b[i] ^= 0x20
			return b
		}, []string{"a"}, false},
		{"garbage appended", func(b []byte) []byte { return append(b, "\x00\x00\x00garbage\n"...) }, []string{"a", "b", "c"}, false},
		{"unknown operation", func(b []byte) []byte {
			r, _ := appendRecord(nil, record{Op: "frobnicate"})
			return append(b, r...)
		}, []string{"a", "b", "c"}, false},
		{"empty", func([]byte) []byte { return nil }, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, quiet())
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"a", "b", "c"} {
				if err := s.Put(ctx, att(id)); err != nil {
					t.Fatal(err)
				}
			}
			jpath := journalPath(s)
			s.Close()
			b, err := os.ReadFile(jpath)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(jpath, tc.mangle(b), 0o600); err != nil {
				t.Fatal(err)
			}
			read, err := Read(dir)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			s2, err := Open(dir, quiet())
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			var ids []string
			for _, a := range s2.List() {
				ids = append(ids, a.ContainerID)
			}
			if fmt.Sprint(ids) != fmt.Sprint(tc.want) {
				t.Fatalf("attachments = %v, want %v", ids, tc.want)
			}
			if p := s2.LoadProblem(); (p == "") != tc.clean || !tc.clean && !strings.Contains(p, "journal") {
				t.Fatalf("load problem %q (want one naming the journal: %v)", p, !tc.clean)
			}
			if len(read.Problems) == 0 != tc.clean || len(read.Attachments) != len(tc.want) {
				t.Fatalf("Read = %d attachments, problems %v", len(read.Attachments), read.Problems)
			}
			// The damage is gone from disk: the next store appends to a
			// fresh journal after a snapshot of what was kept.
			if err := s2.Put(ctx, att("d")); err != nil {
				t.Fatal(err)
			}
			s2.Close()
			s3, err := Open(dir, quiet())
			if err != nil {
				t.Fatal(err)
			}
			defer s3.Close()
			if p := s3.LoadProblem(); p != "" || s3.Len() != len(tc.want)+1 {
				t.Fatalf("after the rebuild: problem %q, %d attachments, want none and %d", p, s3.Len(), len(tc.want)+1)
			}
		})
	}
}

// Read looks without touching: a damaged journal stays as it is for the
// next Open (and for whoever investigates).
func TestReadChangesNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if c, err := Read(filepath.Join(dir, "none")); err != nil || len(c.Attachments) != 0 {
		t.Fatalf("Read of a missing dir = %+v, %v; want empty", c, err)
	}
	s, _ := Open(dir, quiet())
	_ = s.Put(ctx, att("a"))
	_, _ = s.DeleteAt(ctx, api.AttachmentKey{ContainerID: "x", IfName: "eth0"}, time.Unix(5, 0))
	jpath := journalPath(s)
	s.Close()
	f, _ := os.OpenFile(jpath, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("torn")
	f.Close()
	before := dirListing(t, dir)
	c, err := Read(dir)
	if err != nil || len(c.Attachments) != 1 || len(c.Tombstones) != 1 || len(c.Problems) != 1 {
		t.Fatalf("Read = %+v, %v", c, err)
	}
	if after := dirListing(t, dir); after != before {
		t.Fatalf("Read changed the dir:\n%s\n->\n%s", before, after)
	}
}

func dirListing(t *testing.T, dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		fi, _ := e.Info()
		out = append(out, fmt.Sprintf("%s %d", e.Name(), fi.Size()))
	}
	return strings.Join(out, "\n")
}

// Compaction runs while mutations keep coming: whatever the interleaving,
// a reopened store holds exactly what the live one did, and the old
// journals are gone. Run with -race too.
func TestCompactionUnderLoad(t *testing.T) {
	for name, dir := range testDirs(t) {
		t.Run(name, func(t *testing.T) { compactionUnderLoad(t, dir) })
	}
}

// testDirs are a fresh directory on the test temp dir's filesystem (disk
// here) and one on tmpfs, where there is one.
func testDirs(t *testing.T) map[string]string {
	dirs := map[string]string{"tempdir": t.TempDir()}
	if d, err := os.MkdirTemp("/dev/shm", "weft-state-test-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(d) })
		dirs["tmpfs"] = d
	}
	return dirs
}

func compactionUnderLoad(t *testing.T, dir string) {
	ctx := context.Background()
	s, err := Open(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	s.minCompact = 4 << 10 // a compaction every ~12 records
	t0 := time.Unix(1000, 0).UTC()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 150 {
				id := fmt.Sprintf("w%d-%03d", w, i)
				a := att(id)
				a.Added = t0.Add(time.Duration(i) * time.Second)
				if err := s.Put(ctx, a); err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					if _, err := s.DeleteAt(ctx, a.Key(), a.Added.Add(time.Millisecond)); err != nil {
						t.Error(err)
						return
					}
				}
				if i%50 == 0 {
					if err := s.SetCNI(ctx, &api.CNIInterface{Name: fmt.Sprintf("cni%d", i), IP: "10.1.1.1"}); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	// On a slow disk the snapshots' fsyncs may outlast the burst: go on
	// until a second compaction has started (or give up after 20 s).
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		s.mu.Lock()
		seq := s.seq
		s.mu.Unlock()
		if seq >= 3 {
			break
		}
		filler := att("filler")
		if err := s.Put(ctx, filler); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Delete(ctx, filler.Key()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.GC(ctx, "net", []api.AttachmentKey{{ContainerID: "w0-001", IfName: "eth0"}, {ContainerID: "w1-002", IfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	wantAtt, wantTomb, wantCNI := s.List(), s.Tombstones(), s.CNI()
	s.mu.Lock()
	seq := s.seq
	s.mu.Unlock()
	if seq < 3 {
		t.Fatalf("journal sequence %d after ~700 records with a 4 KiB bound: fewer than two compactions ran", seq)
	}
	t.Logf("journal sequence %d at the end", seq)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	seqs, _ := journalFiles(dir)
	if len(seqs) > 2 {
		t.Errorf("journals left after compactions: %v", seqs)
	}
	c, err := Read(dir)
	if err != nil || len(c.Problems) != 0 {
		t.Fatalf("read: %v %v", err, c.Problems)
	}
	if !reflect.DeepEqual(c.Attachments, wantAtt) || !reflect.DeepEqual(c.Tombstones, wantTomb) || !reflect.DeepEqual(c.CNI, wantCNI) {
		t.Fatalf("reloaded state differs: %d/%d attachments, %d/%d tombstones, cni %+v/%+v",
			len(c.Attachments), len(wantAtt), len(c.Tombstones), len(wantTomb), c.CNI, wantCNI)
	}
	if len(wantAtt) != 2 || len(wantTomb) != 200 {
		t.Fatalf("%d attachments and %d tombstones, want 2 (kept by GC) and 200", len(wantAtt), len(wantTomb))
	}
}

// A crash between a snapshot and the removal of the journals it covers
// leaves them behind: they are skipped (their records are in the
// snapshot), not replayed over newer ones.
func TestStaleJournalSkipped(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, _ := Open(dir, quiet())
	_ = s.Put(ctx, att("a"))
	old := journalPath(s)
	s.Close()
	stale, _ := os.ReadFile(old)
	s, _ = Open(dir, quiet()) // a into the snapshot; old journal removed
	if _, err := s.Delete(ctx, api.AttachmentKey{ContainerID: "a", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.WriteFile(old, stale, 0o600); err != nil { // as if never removed
		t.Fatal(err)
	}
	s, err := Open(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Len() != 0 || s.LoadProblem() != "" {
		t.Fatalf("a stale journal was replayed: %d attachments, problem %q", s.Len(), s.LoadProblem())
	}
}

// A failed append (the journal's fd unusable here; a full disk in life)
// fails that mutation and leaves the journal aside: the next one writes a
// snapshot holding everything before it answers.
func TestFailedAppendRebuilds(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, _ := Open(dir, quiet())
	if err := s.Put(ctx, att("a")); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.journal.Close()
	s.mu.Unlock()
	if err := s.Put(ctx, att("b")); err == nil {
		t.Fatal("a Put on a closed journal succeeded")
	}
	if err := s.Put(ctx, att("c")); err != nil {
		t.Fatalf("the Put after a failed append: %v", err)
	}
	s.Close()
	s2, _ := Open(dir, quiet())
	defer s2.Close()
	if s2.Len() != 3 || s2.LoadProblem() != "" {
		t.Fatalf("after the rebuild: %d attachments (want a, b, c), problem %q", s2.Len(), s2.LoadProblem())
	}
}

// A state dir written by a weftd before the journal (state.json without a
// journal number, tombstones.json beside it) loads whole, and its
// tombstones move into the snapshot.
func TestLegacyFilesMigrate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	t0 := time.Unix(1000, 0).UTC()
	doc := `{"attachments":[{"containerID":"kept","ifName":"eth0","added":"1970-01-01T00:16:40Z"}],"cniInterface":{"name":"cni0","ip":"10.1.1.1","source":"plugin","since":"1970-01-01T00:00:05Z"}}`
	tombs := `{"tombstones":[{"containerID":"gone","ifName":"eth0","deleted":"1970-01-01T00:16:50Z"}]}`
	if err := os.WriteFile(filepath.Join(dir, fileName), seal([]byte(doc)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, tombFileName), seal([]byte(tombs)), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, quiet())
	if err != nil || s.LoadProblem() != "" {
		t.Fatalf("open legacy dir: %v %q", err, s.LoadProblem())
	}
	if s.Len() != 1 || s.CNI() == nil || len(s.Tombstones()) != 1 {
		t.Fatalf("legacy state: %d attachments, cni %v, tombstones %v", s.Len(), s.CNI(), s.Tombstones())
	}
	s.Close()
	if _, err := os.Stat(filepath.Join(dir, tombFileName)); !os.IsNotExist(err) {
		t.Fatalf("tombstones.json still there after its tombstones moved into the snapshot: %v", err)
	}
	s, _ = Open(dir, quiet())
	defer s.Close()
	if ok, err := s.Replay(ctx, Attachment{ContainerID: "gone", IfName: "eth0", Added: t0.Add(5 * time.Second)}, t0.Add(5*time.Second)); ok || err != nil {
		t.Fatalf("a spooled ADD older than the migrated DEL was replayed: %v %v", ok, err)
	}
}

// Read beside a live store that keeps compacting never fails and never
// goes back in time: a journal that vanishes under it (compacted into a
// newer snapshot) makes it start over.
func TestReadBesideCompaction(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.minCompact = 2 << 10
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 400 {
			if err := s.Put(ctx, att(fmt.Sprintf("r%04d", i))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	last := 0
	for reading := true; reading; {
		select {
		case <-done:
			reading = false
		default:
		}
		c, err := Read(dir)
		if err != nil {
			t.Fatalf("Read beside compaction: %v", err)
		}
		if len(c.Attachments) < last {
			t.Fatalf("Read went back from %d to %d attachments", last, len(c.Attachments))
		}
		last = len(c.Attachments)
	}
	if c, err := Read(dir); err != nil || len(c.Attachments) != 400 {
		t.Fatalf("final Read: %d attachments, %v", len(c.Attachments), err)
	}
}
