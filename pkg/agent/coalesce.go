package agent

import (
	"context"
	"time"
)

// DefaultMinSyncPeriod is the least time between the end of one reconcile
// pass and the start of the next, as kube-proxy's minSyncPeriod (whose
// default it takes). Every pod start sends a plugin event and a veth
// netlink event, and a pass costs two link dumps and a table dump: without
// a floor, 200 pods started at once cost hundreds of passes. With it a
// burst costs at most 1 + its duration / DefaultMinSyncPeriod passes,
// whatever the number of pods, and the first event after a quiet period is
// served at once.
const DefaultMinSyncPeriod = time.Second

// pacer holds a pass back until MinSyncPeriod has passed since the last
// one ended. Only the Run goroutine uses it.
type pacer struct {
	min     time.Duration
	lastEnd time.Time // zero before the first pass
}

// delay is how long a pass wanted at now must wait: zero after a quiet
// period (or before any pass), else what is left of the interval.
func (p *pacer) delay(now time.Time) time.Duration {
	if p.lastEnd.IsZero() || p.min <= 0 {
		return 0
	}
	return max(0, p.lastEnd.Add(p.min).Sub(now))
}

func (p *pacer) passEnded(at time.Time) { p.lastEnd = at }

// holdBack waits out the pacer's delay, during which further triggers
// join the coming pass; an urgent trigger (a config change) or the end of
// ctx cuts it short. It returns false when ctx ended.
func (a *Agent) holdBack(ctx context.Context, p *pacer) bool {
	if d := p.delay(a.d.Now()); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		case <-a.urgent:
		}
	}
	// The pass about to start reads everything afresh: it serves every
	// trigger so far. One arriving from now on leaves a token for the
	// next pass.
	select {
	case <-a.trigger:
	default:
	}
	select {
	case <-a.urgent:
	default:
	}
	return true
}

// TriggerNow asks for a pass without waiting for MinSyncPeriod: for
// configuration changes, which an operator makes one at a time and expects
// to see applied at once.
func (a *Agent) TriggerNow() {
	a.triggers.Add(1)
	select {
	case a.urgent <- struct{}{}:
	default:
	}
}
