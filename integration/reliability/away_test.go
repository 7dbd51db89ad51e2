package reliability

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
)

// Promise 3: the daemon is away (ADD/DEL are covered by the handoff
// tests): CHECK and GC, a full spool, and a spool file cut short.
func TestDaemonAway(t *testing.T) {
	t.Run("check_and_gc", func(t *testing.T) {
		defer run.sum.Track(t, PAway)()
		env := harness.NewTestEnv(t)
		ctx := ctxFor(t, 60*time.Second)
		n, cfg := oneNode(t, env, nodeSpec{cni: harness.CNIOptions{CNIVersion: "1.1.0"}})
		w, err := n.StartWeftd(ctx, cfg.MustYAML())
		if err != nil {
			t.Fatal(err)
		}
		p, err := n.RunPod(ctx, "default", "away")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Ready && s.Attachments == 1 }); err != nil {
			t.Fatal(err)
		}
		if err := w.Stop(); err != nil {
			t.Fatal(err)
		}
		var ce *harness.CNIError
		if err := n.CheckLibcni(ctx, p); !errors.As(err, &ce) || ce.Code != 11 {
			t.Fatalf("CHECK with the daemon away: %v, want code 11", err)
		}
		// GC is periodic and best-effort: it succeeds under failPolicy open
		// and forgets nothing it could not tell the daemon.
		if err := n.GCLibcni(ctx, p); err != nil {
			t.Fatalf("GC with the daemon away, failPolicy open: %v", err)
		}
		if err := n.SetWeftOption("failPolicy", "closed"); err != nil {
			t.Fatal(err)
		}
		if err := n.GCLibcni(ctx, p); !errors.As(err, &ce) || ce.Code != 11 {
			t.Fatalf("GC with the daemon away, failPolicy closed: %v, want code 11", err)
		}
		if w, err = n.StartWeftd(ctx, cfg.MustYAML()); err != nil {
			t.Fatal(err)
		}
		if st, err := w.WaitReady(ctx); err != nil || st.Attachments != 1 {
			t.Fatalf("after the daemon came back: attachments %d (%v), want 1", st.Attachments, err)
		}
		if err := n.CheckLibcni(ctx, p); err != nil {
			t.Fatalf("CHECK once the daemon is back: %v", err)
		}
	})

	t.Run("full_spool", func(t *testing.T) {
		defer run.sum.Track(t, PAway)()
		env := harness.NewTestEnv(t)
		ctx := ctxFor(t, 60*time.Second)
		const limit, adds = 5, 8
		n, cfg := oneNode(t, env, nodeSpec{cni: harness.CNIOptions{WeftOptions: map[string]any{"spoolLimit": limit}}})
		for i := 0; i < adds; i++ {
			p, err := n.NewPod("default", fmt.Sprintf("full-%d", i))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := n.AttachLibcni(ctx, p); err != nil {
				t.Fatalf("ADD %d with a full spool must still succeed (failPolicy open): %v", i, err)
			}
		}
		w, err := n.StartWeftd(ctx, cfg.MustYAML())
		if err != nil {
			t.Fatal(err)
		}
		st, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Spool.Replayed >= limit })
		if err != nil {
			t.Fatal(err)
		}
		if st.Spool.Dropped != adds-limit || st.Attachments != limit {
			t.Fatalf("dropped %d attachments %d, want %d and %d", st.Spool.Dropped, st.Attachments, adds-limit, limit)
		}
		c, ok := cond(st, "SpoolHealthy")
		if !ok || c.Status || c.Reason != "EventsDropped" || c.Fix == "" {
			t.Fatalf("SpoolHealthy = %+v, want false/EventsDropped with a fix", c)
		}
		run.sum.Figure(PAway, "full spool: %d of %d dropped and reported", st.Spool.Dropped, adds)
	})

	t.Run("truncated_spool_file", func(t *testing.T) {
		defer run.sum.Track(t, PAway)()
		env := harness.NewTestEnv(t)
		ctx := ctxFor(t, 60*time.Second)
		n, cfg := oneNode(t, env, nodeSpec{})
		for i := 0; i < 4; i++ {
			p, err := n.NewPod("default", fmt.Sprintf("torn-%d", i))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := n.AttachLibcni(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		files, _ := filepath.Glob(filepath.Join(n.SpoolDir, "*.json"))
		sort.Strings(files)
		if len(files) != 4 {
			t.Fatalf("%d spool files, want 4", len(files))
		}
		// A crash mid-write (a file system without rename atomicity, a
		// full disk): the second event is cut in half.
		b, err := os.ReadFile(files[1])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(files[1], b[:len(b)/2], 0o600); err != nil {
			t.Fatal(err)
		}
		w, err := n.StartWeftd(ctx, cfg.MustYAML())
		if err != nil {
			t.Fatal(err)
		}
		st, err := w.WaitFor(ctx, func(s api.Status) bool { return s.Spool.Replayed >= 3 && s.Spool.Skipped >= 1 })
		if err != nil {
			t.Fatal(err)
		}
		if st.Attachments != 3 || st.Spool.Skipped != 1 || st.Spool.Replayed != 3 {
			t.Fatalf("attachments %d replayed %d skipped %d, want 3/3/1", st.Attachments, st.Spool.Replayed, st.Spool.Skipped)
		}
		log := w.Log()
		name := filepath.Base(files[1])
		if !strings.Contains(log, name) || !strings.Contains(log, "decode") {
			t.Fatalf("skipped file %s not logged with its reason; log:\n%s", name, w.LogTail(2048))
		}
	})
}
