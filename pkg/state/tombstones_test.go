package state

import (
	"context"
	"fmt"
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
