package state

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

// BenchmarkPutWithTombstones is one ADD's state write on a node that has
// seen MaxTombstones DELs: the tombstones live in their own file, so this
// must cost what a Put without them costs (compare BenchmarkPut).
func BenchmarkPutWithTombstones(b *testing.B) {
	ctx := context.Background()
	s, err := Open(b.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
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
	t0 := time.Unix(1700000000, 0)
	b.ResetTimer()
	for i := range b.N {
		if err := s.Put(ctx, Attachment{ContainerID: fmt.Sprintf("c-%d", i%100), IfName: "eth0", Added: t0}); err != nil {
			b.Fatal(err)
		}
	}
}

// The hand-written envelope is byte for byte what json.Marshal makes of it.
func TestEnvelopeByHand(t *testing.T) {
	s, err := Open(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s.attachments[api.AttachmentKey{ContainerID: "c", IfName: "eth0"}] = Attachment{ContainerID: "c", IfName: "eth0", IPs: []api.PodIP{{Address: "10.1.2.5/24"}}}
	s.tombstones[api.AttachmentKey{ContainerID: "d", IfName: "eth0"}] = time.Unix(1700000000, 5).UTC()
	got, err := s.encodeLocked()
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
	if _, err := decode(got); err != nil {
		t.Errorf("decode: %v", err)
	}
}
