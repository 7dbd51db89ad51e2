package agent

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
	"github.com/weft-net/weft/pkg/spool"
	"github.com/weft-net/weft/pkg/state"
)

// A live DEL racing the replay of the spooled ADD it supersedes must win
// whatever the interleaving: the attachment is gone afterwards. The replay
// is Add with Spooled set, which is what DrainSpool calls for each spooled
// ADD; calling it directly keeps the two goroutines' start close together,
// and pairs run several at a time so the store's lock is contended as under
// a burst of pods. Run with -race too (make test does).
func TestLiveDelRacesSpoolReplay(t *testing.T) {
	ctx := context.Background()
	a, _, _, store := newTestAgent(t)
	// 1,600 pairs: before the fix about 1.5% of them lost the DEL.
	rounds, pairs := 200, 8
	if testing.Short() {
		rounds = 50
	}
	t0 := time.Now()
	var resurrected []string
	for r := range rounds {
		start := make(chan struct{})
		var wg sync.WaitGroup
		var keys []api.AttachmentKey
		for p := range pairs {
			k := api.AttachmentKey{ContainerID: fmt.Sprintf("race-%d-%d", r, p), IfName: "eth0"}
			keys = append(keys, k)
			add := api.Event{Verb: api.VerbAdd, ContainerID: k.ContainerID, IfName: k.IfName, Time: t0, Spooled: true}
			del := api.Event{Verb: api.VerbDel, ContainerID: k.ContainerID, IfName: k.IfName, Time: t0.Add(time.Second)}
			wg.Add(2)
			go func() { defer wg.Done(); <-start; _ = a.Add(ctx, add) }()
			go func() { defer wg.Done(); <-start; _ = a.Del(ctx, del) }()
		}
		close(start)
		wg.Wait()
		for _, k := range keys {
			if _, ok := store.Get(k); ok {
				resurrected = append(resurrected, k.ContainerID)
			}
		}
	}
	if len(resurrected) > 0 {
		t.Fatalf("%d of %d live DELs undone by the replay of an older spooled ADD (first: %s)", len(resurrected), rounds*pairs, resurrected[0])
	}
}

// The DEL's ordering survives a restart: weftd gets a live DEL, exits, and
// only then does the spooled ADD it supersedes land (the runtime gave up on
// a slow ADD whose plugin was still writing its spool file). The next weftd
// must not replay it over the DEL.
func TestLiveDelSurvivesRestartBeforeReplay(t *testing.T) {
	ctx := context.Background()
	stateDir, spoolDir := t.TempDir(), t.TempDir()
	start := func() (*Agent, *state.Store) {
		a, _, _, _ := newTestAgent(t)
		st, err := state.Open(stateDir, a.d.Log)
		if err != nil {
			t.Fatal(err)
		}
		a.d.Store = st
		cfg := *a.Config()
		cfg.SpoolDir = spoolDir
		a.SetConfig(&cfg)
		return a, st
	}
	t0 := time.Now()
	a, _ := start()
	if err := a.Add(ctx, api.Event{Verb: api.VerbAdd, ContainerID: "kept", IfName: "eth0", Time: t0}); err != nil {
		t.Fatal(err)
	}
	if err := a.Del(ctx, api.Event{Verb: api.VerbDel, ContainerID: "gone", IfName: "eth0", Time: t0.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	// weftd restarts; the late ADD lands in the spool meanwhile.
	for _, e := range []api.Event{
		{Verb: api.VerbAdd, ContainerID: "gone", IfName: "eth0", Time: t0.Add(500 * time.Millisecond)},
		{Verb: api.VerbAdd, ContainerID: "later", IfName: "eth0", Time: t0.Add(2 * time.Second)},
	} {
		if _, err := spool.Write(context.Background(), spoolDir, 100, e); err != nil {
			t.Fatal(err)
		}
	}
	b, st2 := start()
	if err := b.DrainSpool(ctx, spoolDir); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, at := range st2.List() {
		ids = append(ids, at.ContainerID)
	}
	if fmt.Sprint(ids) != "[kept later]" {
		t.Fatalf("attachments after the restart and replay = %v, want [kept later]", ids)
	}
}
