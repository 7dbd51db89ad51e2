package scenario

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/weft-net/weft/integration/harness"
	"github.com/weft-net/weft/pkg/api"
)

// WaitHolder (TopologyWeft) waits up to limit until c's Lease has a
// holder other than not, and returns that node.
func (s *Scenario) WaitHolder(ctx context.Context, c *harness.Cluster, not string, limit time.Duration) (*harness.Node, error) {
	deadline := time.Now().Add(limit)
	for {
		h, _, err := s.Kube.LeaseHolder(ctx, c.ID)
		if err == nil && h != "" && h != not {
			if n := c.Node(h); n != nil {
				return n, nil
			}
			return nil, fmt.Errorf("%s: Lease holder %q is no node of the cluster", c.ID, h)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("%s: no Lease holder (other than %q) after %s: %q %v", c.ID, not, limit, h, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitFollow (TopologyWeft) waits until every weftd's topology names its
// cluster's elected gateway from the ClusterEndpoint, has every other
// cluster of the scenario (and no other) as a remote via its elected
// gateway, and acts in the matching role. It returns the member that took
// longest and how long, for the logs.
func (s *Scenario) WaitFollow(ctx context.Context) (last string, took time.Duration, err error) {
	clusters := s.AllClusters()
	start := time.Now()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, m := range s.Members {
		gw := s.Gateway(m.Cluster.ID)
		want := map[string]string{}
		for _, c := range clusters {
			if c.ID != m.Cluster.ID {
				want[c.ID] = s.Gateway(c.ID).IP.String()
			}
		}
		role := s.Role(m.Node)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Weftd.WaitFor(ctx, func(st api.Status) bool {
				tp := st.Topology
				if tp == nil || !tp.Synced || tp.Gateway == nil || tp.Gateway.Name != gw.Name ||
					tp.Gateway.From != "ClusterEndpoint weft-system/"+m.Cluster.ID || len(tp.Remotes) != len(want) {
					return false
				}
				for _, r := range tp.Remotes {
					if want[r.ID] != r.GatewayIP {
						return false
					}
				}
				return st.Role == role && st.Ready
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				st, _ := m.Weftd.Status(context.Background())
				errs = append(errs, fmt.Errorf("%s (want gateway %s, remotes %v): %w; topology %+v", m.Node.Name, gw.Name, want, err, st.Topology))
			} else if d := time.Since(start); d > took {
				last, took = m.Node.Name, d
			}
		}()
	}
	wg.Wait()
	return last, took, errors.Join(errs...)
}

// Prober sends pod->remote-pod TCP probes every 100 ms and records the
// longest run without an answer.
type Prober struct {
	stop       chan struct{}
	done       chan struct{}
	Sent, Lost int
	Gap        time.Duration // read after Finish
}

// StartProber starts probing from's pod -> to's pod echo until Finish.
func StartProber(from, to *Member) *Prober {
	p := &Prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		lastOK := time.Now()
		failing := false
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			_, err := harness.ProbeTCP(ctx, from.Pod.NS, to.PodAddr().String(), []byte("probe"))
			cancel()
			p.Sent++
			now := time.Now()
			if err != nil {
				p.Lost++
				failing = true
			} else {
				if failing && now.Sub(lastOK) > p.Gap {
					p.Gap = now.Sub(lastOK)
				}
				failing = false
				lastOK = now
			}
			select {
			case <-p.stop:
				if failing && now.Sub(lastOK) > p.Gap {
					p.Gap = now.Sub(lastOK)
				}
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

// Finish stops the probes and waits for the last one.
func (p *Prober) Finish() { close(p.stop); <-p.done }

// KillNode is a node's death: its underlay goes down and its weftd gets
// SIGKILL. revive brings the underlay back (without weftd), so that the API
// servers' connections to the dead weftd are reset and their shutdown does
// not wait for them to time out.
func KillNode(m *Member) (revive func() error, err error) {
	n := m.Node
	revive = func() error {
		for _, c := range [][]string{{"link", "set", "eth0", "up"}, {"route", "replace", "default", "via", harness.UnderlayNextHop.String(), "dev", "eth0"}} {
			if out, err := n.Exec("ip", c...); err != nil {
				return fmt.Errorf("revive %s: ip %v: %w %s", n.Name, c, err, out)
			}
		}
		return nil
	}
	if _, err := n.Exec("ip", "link", "set", "eth0", "down"); err != nil {
		return revive, fmt.Errorf("%s: underlay down: %w", n.Name, err)
	}
	if err := m.Weftd.Kill(); err != nil {
		return revive, fmt.Errorf("%s: kill weftd: %w", n.Name, err)
	}
	return revive, nil
}
