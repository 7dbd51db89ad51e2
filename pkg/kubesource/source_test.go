package kubesource

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/toposource"
)

// Before the API answers, the source serves what stateDir holds, marked
// stale; a failing watch says why. (The live path, against a real API
// server, is integration.TestKubernetesTopology.)
func TestSourceServesPersistedTopology(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	s, err := New(Options{StateDir: dir, Log: log, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if top, ok := s.Current(); ok || top.Sync.Reason != ReasonWaitingForAPI {
		t.Fatalf("nothing persisted: ok=%v sync=%+v", ok, top.Sync)
	}

	saved := toposource.Topology{Source: toposource.Kubernetes,
		Nodes:   []toposource.Node{{Name: "c1-n1", IP: netip.MustParseAddr("192.168.10.11"), From: "Node/c1-n1"}},
		Gateway: toposource.Gateway{Name: "c1-n1", IP: netip.MustParseAddr("192.168.10.11"), From: "Endpoint submariner-operator/c1"},
		Sync:    toposource.Sync{Synced: true, Reason: ReasonWatching}}
	if err := toposource.Persist(dir, saved); err != nil {
		t.Fatal(err)
	}
	s, err = New(Options{StateDir: dir, Log: log, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	top, ok := s.Current()
	if !ok || top.Sync.Synced || top.Sync.Reason != ReasonStale || !top.Sync.Since.Equal(now) || top.Gateway.Name != "c1-n1" || len(top.Nodes) != 1 {
		t.Fatalf("persisted: ok=%v %+v", ok, top)
	}

	now = now.Add(time.Minute)
	s.watchState(watchNodes, errors.New("dial tcp 192.168.250.1:6443: connect: connection refused"))
	s.rebuild()
	top, _ = s.Current()
	if top.Sync.Synced || top.Sync.Reason != ReasonStale || !strings.Contains(top.Sync.Message, "connection refused") || !top.Sync.Since.Equal(now.Add(-time.Minute)) {
		t.Fatalf("after a watch error: %+v", top.Sync)
	}
	if len(top.Nodes) != 1 {
		t.Fatalf("a watch error dropped the persisted topology: %+v", top)
	}
}
