package discovery

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/pkg/netnstest"
)

// Watch reports the events the agent relies on for prompt repair; an ip
// rule deletion has no library subscription and uses a raw one.
func TestWatchReportsEvents(t *testing.T) {
	n := netnstest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 64)
	ready := make(chan struct{})
	go func() {
		// Subscriptions are made in the namespace of the calling thread,
		// which n.Do locks into n for the whole of Watch.
		_ = n.Do(func(ns.NetNS) error {
			close(ready)
			Watch(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), func() int { return 240 }, func(r string) {
				select {
				case got <- r:
				default:
				}
			})
			return nil
		})
	}()
	<-ready
	time.Sleep(100 * time.Millisecond) // let the subscriptions open
	expect := func(want string, cmd ...string) {
		t.Helper()
		for len(got) > 0 {
			<-got
		}
		n.MustExec(t, cmd[0], cmd[1:]...)
		deadline := time.After(2 * time.Second)
		for {
			select {
			case r := <-got:
				if r == want {
					return
				}
			case <-deadline:
				t.Fatalf("no %q notification after %v", want, cmd)
			}
		}
	}
	expect("link", "ip", "link", "add", "br-t", "type", "bridge")
	expect("address", "ip", "addr", "add", "10.1.2.1/24", "dev", "br-t")
	n.MustExec(t, "ip", "link", "set", "br-t", "up")
	n.MustExec(t, "ip", "route", "add", "10.2.0.0/16", "dev", "br-t", "table", "240")
	expect("route-deleted", "ip", "route", "del", "10.2.0.0/16", "table", "240")
	n.MustExec(t, "ip", "rule", "add", "priority", "240", "lookup", "240")
	expect("rule-deleted", "ip", "rule", "del", "priority", "240")
}
