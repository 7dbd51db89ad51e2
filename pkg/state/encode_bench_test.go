package state

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

// BenchmarkPutWithTombstones is one ADD's state write on a node that has
// seen MaxTombstones DELs: a journal record either way, so this must cost
// what a Put without them costs (compare BenchmarkPut).
func BenchmarkPutWithTombstones(b *testing.B) {
	ctx := context.Background()
	s, err := Open(b.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	t0 := time.Unix(1700000000, 0)
	for i := range MaxTombstones { // as DeleteAt leaves them, without a write each
		s.tombstones[api.AttachmentKey{ContainerID: fmt.Sprintf("gone-%064d", i), IfName: "eth0"}] = t0.Add(time.Duration(i))
	}
	b.ResetTimer()
	for i := range b.N {
		if err := s.Put(ctx, Attachment{ContainerID: fmt.Sprintf("c-%d", i%100), IfName: "eth0", Added: t0}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPut is the reference for BenchmarkPutWithTombstones.
func BenchmarkPut(b *testing.B) {
	ctx := context.Background()
	s, err := Open(b.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	t0 := time.Unix(1700000000, 0)
	b.ResetTimer()
	for i := range b.N {
		if err := s.Put(ctx, Attachment{ContainerID: fmt.Sprintf("c-%d", i%100), IfName: "eth0", Added: t0}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJournal is one ADD's and one DEL's durable write (a pod's
// cycle) with n attachments already recorded, on this machine's disk (the
// test temp dir) and on tmpfs (/dev/shm), next to what the same cycle cost
// before the journal: the whole document written to a temp file and
// renamed over state.json, twice. The journal's cost must not grow with n
// (compaction included: it runs in the background as the journal fills).
func BenchmarkJournal(b *testing.B) {
	ctx := context.Background()
	t0 := time.Unix(1700000000, 0)
	dirs := map[string]string{"disk": ""}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dirs["tmpfs"] = "/dev/shm"
	}
	for _, fs := range []string{"disk", "tmpfs"} {
		base, ok := dirs[fs]
		if !ok {
			continue
		}
		for _, n := range []int{10, 1000, 10000} {
			open := func(b *testing.B) *Store {
				dir := b.TempDir()
				if base != "" {
					var err error
					if dir, err = os.MkdirTemp(base, "weft-state-bench-"); err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { os.RemoveAll(dir) })
				}
				s, err := Open(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
				if err != nil {
					b.Fatal(err)
				}
				for i := range n {
					a := Attachment{ContainerID: fmt.Sprintf("%064d", i), IfName: "eth0", Netns: "/var/run/netns/cni-" + fmt.Sprint(i),
						PodNamespace: "default", PodName: fmt.Sprintf("pod-%d", i), Network: "cbr0",
						IPs: []api.PodIP{{Address: "10.1.1.9/24", Gateway: "10.1.1.1"}}, HostInterfaces: []string{"cni0"}, Added: t0}
					s.attachments[a.Key()] = a
				}
				snapshotNow(b, s)
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				if s, err = Open(dir, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
					b.Fatal(err)
				}
				if s.Len() != n {
					b.Fatalf("fixture: %d attachments, want %d", s.Len(), n)
				}
				b.Cleanup(func() { s.Close() })
				return s
			}
			cycle := Attachment{ContainerID: "bench-cycle", IfName: "eth0", Netns: "/var/run/netns/x", PodNamespace: "bench",
				PodName: "x", Network: "cbr0", IPs: []api.PodIP{{Address: "10.1.1.9/24", Gateway: "10.1.1.1"}}, HostInterfaces: []string{"cni0"}}
			b.Run(fmt.Sprintf("%s/attachments=%d/journal", fs, n), func(b *testing.B) {
				s := open(b)
				b.ResetTimer()
				for i := range b.N {
					cycle.Added = t0.Add(time.Duration(2*i) * time.Millisecond)
					if err := s.Put(ctx, cycle); err != nil {
						b.Fatal(err)
					}
					if _, err := s.DeleteAt(ctx, cycle.Key(), t0.Add(time.Duration(2*i+1)*time.Millisecond)); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("%s/attachments=%d/rewrite-reference", fs, n), func(b *testing.B) {
				s := open(b)
				b.ResetTimer()
				for range b.N {
					for range 2 {
						s.mu.Lock()
						snap := s.captureLocked(s.seq)
						s.mu.Unlock()
						if _, err := s.writeSnapshot(snap, false); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

// The hand-written envelope is byte for byte what json.Marshal makes of it.
func TestEnvelopeByHand(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.attachments[api.AttachmentKey{ContainerID: "c", IfName: "eth0"}] = Attachment{ContainerID: "c", IfName: "eth0", IPs: []api.PodIP{{Address: "10.1.2.5/24"}}}
	s.tombstones[api.AttachmentKey{ContainerID: "d", IfName: "eth0"}] = time.Unix(1700000000, 5).UTC()
	if _, err := s.writeSnapshot(s.captureLocked(7), true); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, fileName))
	if err != nil {
		t.Fatal(err)
	}
	var env envelope
	if err := json.Unmarshal(got, &env); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(env)
	if string(got) != string(want) {
		t.Errorf("envelope by hand:\n%s\njson.Marshal:\n%s", got, want)
	}
	if doc, err := decode(got); err != nil || doc.Journal != 7 || len(doc.Attachments) != 1 || len(doc.Tombstones) != 1 {
		t.Errorf("decode: %+v %v", doc, err)
	}
}
