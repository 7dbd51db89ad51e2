package pathprobe

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/weft-net/weft/pkg/pathhealth"
)

// ServiceOptions configure a Service.
type ServiceOptions struct {
	Node, Cluster string
	Log           *slog.Logger
	// OnReport is called with every round's snapshot and the plan it was
	// probed with (see Options.OnSnapshot: it must not block).
	OnReport func(pathhealth.Snapshot, Plan)
	// OnSnapshot are further snapshot hooks (a publisher), same rules.
	OnSnapshot []func(pathhealth.Snapshot)
	// OnStop is called when the health check is switched off.
	OnStop     func()
	ObserveRTT func(target string, rtt time.Duration)
	// RetryBind is how often a responder port that could not be bound is
	// tried again (0 = 5 s).
	RetryBind time.Duration
}

// Service runs the prober (and with protocol udp the responder) of one weftd and follows the
// plan each reconcile pass hands it (Update): it starts, stops, rebinds
// and retargets them without a restart.
type Service struct {
	o       ServiceOptions
	updates chan struct{}

	mu   sync.Mutex
	plan Plan
	set  bool
}

// NewService returns a service; Run starts it.
func NewService(o ServiceOptions) *Service {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.RetryBind == 0 {
		o.RetryBind = 5 * time.Second
	}
	return &Service{o: o, updates: make(chan struct{}, 1)}
}

// Update hands the service the current plan; it never blocks.
func (s *Service) Update(p Plan) {
	s.mu.Lock()
	same := s.set && s.plan.Equal(p)
	s.plan, s.set = p, true
	s.mu.Unlock()
	if !same {
		select {
		case s.updates <- struct{}{}:
		default:
		}
	}
}

func (s *Service) current() (Plan, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.plan, s.set
}

// Run follows the plans until ctx ends. Its sockets are opened from
// several goroutines: the whole process must be in the node's network
// namespace (weftd is).
func (s *Service) Run(ctx context.Context) {
	var (
		resp       *Responder
		respCancel context.CancelFunc
		prober     *Prober
		probeStop  context.CancelFunc
		probeDone  chan struct{}
		retry      <-chan time.Time
	)
	stopResponder := func() {
		if resp != nil {
			respCancel()
			resp.Close()
			resp = nil
		}
	}
	stopProber := func() {
		if prober != nil {
			probeStop()
			<-probeDone
			prober = nil
			if s.o.OnStop != nil {
				s.o.OnStop()
			}
		}
	}
	defer func() { stopResponder(); stopProber() }()
	for {
		plan, ok := s.current()
		retry = nil
		switch {
		case !ok:
		case !plan.Enabled:
			stopResponder()
			stopProber()
		default:
			// With icmp the targets' kernels answer: no responder, and
			// nothing in weftd wakes for another node's probe.
			if resp != nil && (resp.Port() != plan.Timing.Port || !plan.Timing.udp()) {
				stopResponder()
			}
			if resp == nil && plan.Timing.udp() {
				r, err := ListenResponder(plan.Timing.Port, 0, s.o.Log)
				if err != nil {
					s.o.Log.Error("health-check responder unavailable; retrying", "port", plan.Timing.Port, "err", err, "in", s.o.RetryBind)
					retry = time.After(s.o.RetryBind)
				} else {
					rctx, cancel := context.WithCancel(ctx)
					resp, respCancel = r, cancel
					go r.Serve(rctx)
					s.o.Log.Info("health-check responder listening", "port", plan.Timing.Port)
				}
			}
			if prober == nil {
				var th reportThrottle
				hooks := append([]func(pathhealth.Snapshot){func(snap pathhealth.Snapshot) {
					if s.o.OnReport != nil && th.due(snap) {
						p, _ := s.current()
						s.o.OnReport(snap, p)
					}
				}}, s.o.OnSnapshot...)
				prober = New(Options{Node: s.o.Node, Cluster: s.o.Cluster, Timing: plan.Timing,
					Log: s.o.Log, OnSnapshot: hooks, ObserveRTT: s.o.ObserveRTT})
				pctx, cancel := context.WithCancel(ctx)
				probeStop = cancel
				probeDone = make(chan struct{})
				prober.SetTargets(plan.Targets)
				go func(p *Prober) { defer close(probeDone); p.Run(pctx) }(prober)
			}
			prober.SetTiming(plan.Timing)
			prober.SetTargets(plan.Targets)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.updates:
		case <-retry:
		}
	}
}

// ReportEvery is how often OnReport hears of a snapshot that changes no
// target's state (its RTT figures only); a target going down or up, or
// the set of targets changing, is reported at once.
const ReportEvery = time.Second

// reportThrottle keeps status current without rebuilding conditions and
// detail ten times a second for RTT figures nobody reads that often.
type reportThrottle struct {
	last  time.Time
	state []string // name + up of every target last reported
}

func (r *reportThrottle) due(s pathhealth.Snapshot) bool {
	changed := len(s.Targets) != len(r.state)
	for i, t := range s.Targets {
		if changed {
			break
		}
		changed = r.state[i] != stateKey(t)
	}
	if !changed && s.At.Sub(r.last) < ReportEvery {
		return false
	}
	r.last = s.At
	r.state = r.state[:0]
	for _, t := range s.Targets {
		r.state = append(r.state, stateKey(t))
	}
	return true
}

func stateKey(t pathhealth.TargetStatus) string {
	if t.Up {
		return t.Name + " up"
	}
	return t.Name + " down"
}
