package state

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func att(id string) Attachment {
	return Attachment{ContainerID: id, IfName: "eth0", Network: "net", Added: time.Unix(1, 0).UTC()}
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
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
	if ok, err := s.Delete(ctx, api.AttachmentKey{ContainerID: "b", IfName: "eth0"}); !ok || err != nil {
		t.Fatalf("delete b: %v %v", ok, err)
	}
	if ok, _ := s.Delete(ctx, api.AttachmentKey{ContainerID: "zz", IfName: "eth0"}); ok {
		t.Fatal("delete of unknown key reported known")
	}
	cni := &api.CNIInterface{Name: "cni0", IP: "10.1.1.1", Source: "plugin", Since: time.Unix(5, 0).UTC()}
	if err := s.SetCNI(ctx, cni); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.List(); len(got) != 2 || got[0].ContainerID != "a" || got[1].ContainerID != "c" {
		t.Fatalf("reloaded attachments = %+v", got)
	}
	if got := s2.CNI(); got == nil || *got != *cni {
		t.Fatalf("reloaded cni = %+v", got)
	}
	if fi, err := os.Stat(filepath.Join(dir, fileName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode: %v %v", fi, err)
	}
}

func TestCorruptFileIsSetAsideAndRebuilt(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		mangle func([]byte) []byte
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"garbage", func([]byte) []byte { return []byte("\x00\x01not json") }},
		{"empty", func([]byte) []byte { return nil }},
		{"edited", func(b []byte) []byte { return []byte(strings.Replace(string(b), "eth0", "eth1", 1)) }},
		{"future version", func(b []byte) []byte { return []byte(strings.Replace(string(b), `"version":1`, `"version":9`, 1)) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := Open(dir, quiet())
			if err := s.Put(ctx, att("a")); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s, _ = Open(dir, quiet()) // a is in the snapshot now, not in the journal
			s.Close()
			path := filepath.Join(dir, fileName)
			b, _ := os.ReadFile(path)
			if err := os.WriteFile(path, tc.mangle(b), 0o600); err != nil {
				t.Fatal(err)
			}
			s2, err := Open(dir, quiet())
			if err != nil {
				t.Fatalf("open corrupt store: %v", err)
			}
			if s2.LoadProblem() == "" || s2.Len() != 0 {
				t.Fatalf("problem=%q len=%d, want a problem and an empty store", s2.LoadProblem(), s2.Len())
			}
			matches, _ := filepath.Glob(path + ".corrupt-*")
			if len(matches) != 1 {
				t.Fatalf("corrupt file not set aside: %v", matches)
			}
			if err := s2.Put(ctx, att("b")); err != nil {
				t.Fatal(err)
			}
			s3, _ := Open(dir, quiet())
			if s3.LoadProblem() != "" || s3.Len() != 1 {
				t.Fatalf("rebuilt store: problem=%q len=%d", s3.LoadProblem(), s3.Len())
			}
		})
	}
}

// Mutations that arrive while a write is in progress share the next one,
// and each returns only once durable. (An append takes ~10 µs, too short
// for goroutines to overlap by chance: the test holds the writer's role
// until all of them wait.)
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, _ := Open(dir, quiet())
	const n = 200
	s.mu.Lock()
	s.flushing = true // a write in progress
	base, writes := s.gen, s.writes
	s.mu.Unlock()
	var wg sync.WaitGroup
	var returned atomic.Int32
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := s.Put(ctx, att(fmt.Sprintf("c%03d", i))); err != nil {
				t.Error(err)
			}
			returned.Add(1)
		}(i)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		queued := s.gen - base
		s.mu.Unlock()
		if queued == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d puts queued", queued, n)
		}
	}
	if r := returned.Load(); r != 0 {
		t.Fatalf("%d puts returned before their write", r)
	}
	s.mu.Lock()
	s.flushing = false
	s.flushed.Broadcast()
	s.mu.Unlock()
	wg.Wait()
	if w := s.Writes() - writes; w != 1 {
		t.Errorf("%d writes for %d puts queued behind one, want 1 (group commit)", w, n)
	}
	s2, _ := Open(dir, quiet())
	if s2.Len() != n {
		t.Fatalf("durable attachments = %d, want %d", s2.Len(), n)
	}
}

func TestGC(t *testing.T) {
	ctx := context.Background()
	s, _ := Open(t.TempDir(), quiet())
	for _, id := range []string{"a", "b", "c"} {
		_ = s.Put(ctx, att(id))
	}
	other := att("d")
	other.Network = "other"
	_ = s.Put(ctx, other)
	removed, err := s.GC(ctx, "net", []api.AttachmentKey{{ContainerID: "b", IfName: "eth0"}})
	if err != nil || removed != 2 {
		t.Fatalf("gc removed %d, %v; want 2", removed, err)
	}
	if _, ok := s.Get(api.AttachmentKey{ContainerID: "d", IfName: "eth0"}); !ok {
		t.Fatal("gc removed an attachment of another network")
	}
	if s.Len() != 2 {
		t.Fatalf("len = %d, want 2", s.Len())
	}
}
