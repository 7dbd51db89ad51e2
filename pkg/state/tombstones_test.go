package state

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

// Replay orders a spooled ADD against the DELs and ADDs already recorded,
// and the order holds in a store reopened from disk (a restart).
func TestReplayOrderedByDurableTombstones(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0).UTC()
	key := func(id string) api.AttachmentKey { return api.AttachmentKey{ContainerID: id, IfName: "eth0"} }
	at := func(id string, d time.Duration) Attachment {
		a := att(id)
		a.Added = t0.Add(d)
		return a
	}
	if known, err := s.DeleteAt(ctx, key("deleted"), t0.Add(10*time.Second)); known || err != nil {
		t.Fatalf("DeleteAt of an unknown key: %v %v", known, err)
	}
	if err := s.Put(ctx, at("live", 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	writes := s.Writes()
	if _, err := s.DeleteAt(ctx, key("deleted"), t0.Add(5*time.Second)); err != nil || s.Writes() != writes {
		t.Fatalf("an older DEL of an unknown key wrote (%d -> %d): %v", writes, s.Writes(), err)
	}
	// Restart.
	s, err = Open(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		a    Attachment
		want bool
	}{
		{"ADD before the DEL", at("deleted", 9*time.Second), false},
		{"ADD at the DEL's time", at("deleted", 10*time.Second), false},
		{"ADD after the DEL", at("deleted", 11*time.Second), true},
		{"ADD older than the live record", at("live", 19*time.Second), false},
		{"ADD of an unseen attachment", at("fresh", 0), true},
	}
	for _, tt := range tests {
		got, err := s.Replay(ctx, tt.a, tt.a.Added)
		if err != nil || got != tt.want {
			t.Errorf("%s: Replay = %v, %v; want %v", tt.name, got, err, tt.want)
		}
		if tt.want {
			if _, err := s.DeleteAt(ctx, tt.a.Key(), tt.a.Added.Add(time.Millisecond)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if a, ok := s.Get(key("live")); !ok || !a.Added.Equal(t0.Add(20*time.Second)) {
		t.Fatalf("live record overwritten by an older spooled ADD: %+v", a)
	}
	// A spooled DEL older than the live record leaves it; a newer one
	// removes it.
	if known, err := s.ReplayDelete(ctx, key("live"), t0.Add(15*time.Second)); known || err != nil {
		t.Fatalf("older spooled DEL: known=%v err=%v", known, err)
	}
	if _, ok := s.Get(key("live")); !ok {
		t.Fatal("an older spooled DEL removed a later ADD's record")
	}
	if known, err := s.ReplayDelete(ctx, key("live"), t0.Add(25*time.Second)); !known || err != nil {
		t.Fatalf("newer spooled DEL: known=%v err=%v", known, err)
	}
}

func TestTombstonesBounded(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0).UTC()
	for i := range MaxTombstones + 10 {
		s.mu.Lock() // fill without one fsync each
		s.tombstones[api.AttachmentKey{ContainerID: fmt.Sprintf("c%05d", i), IfName: "eth0"}] = t0.Add(time.Duration(i) * time.Second)
		s.mu.Unlock()
	}
	if _, err := s.DeleteAt(ctx, api.AttachmentKey{ContainerID: "newest", IfName: "eth0"}, t0.Add(time.Hour*24)); err != nil {
		t.Fatal(err)
	}
	ts := s.Tombstones()
	if len(ts) > MaxTombstones {
		t.Fatalf("%d tombstones kept, cap %d", len(ts), MaxTombstones)
	}
	if ts[len(ts)-1].ContainerID != "newest" || ts[0].ContainerID == "c00000" {
		t.Fatalf("pruning must drop the oldest: first %s last %s", ts[0].ContainerID, ts[len(ts)-1].ContainerID)
	}
}

// An ADD's write leaves the tombstones file alone: its cost must not grow
// with the DELs remembered (4,096 of them made every ADD ~7 ms of CPU when
// they were part of state.json).
func TestPutDoesNotRewriteTombstones(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1700000000, 0)
	k := api.AttachmentKey{ContainerID: "gone", IfName: "eth0"}
	if err := s.Put(ctx, Attachment{ContainerID: k.ContainerID, IfName: k.IfName, Added: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteAt(ctx, k, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, tombFileName)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatalf("DEL did not write the tombstones file: %v", err)
	}
	if err := s.Put(ctx, Attachment{ContainerID: "new", IfName: "eth0", Added: t0.Add(2 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("an ADD rewrote the tombstones file")
	}
	state, err := os.ReadFile(filepath.Join(dir, fileName))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(state), "gone") {
		t.Errorf("state.json carries the tombstone: %s", state)
	}
	// Reopened, the DEL still orders a spooled ADD made before it.
	s2, err := Open(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s2.Replay(ctx, Attachment{ContainerID: k.ContainerID, IfName: k.IfName, Added: t0}, t0); err != nil || ok {
		t.Errorf("replay of an ADD older than the remembered DEL after reopen: recorded=%v err=%v", ok, err)
	}
}
