package pathprobe

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/pathhealth"
)

// Timing is how a prober paces its probes and what they are.
//
// Every target gets a steady probe once per Interval, all in the same
// round. A probe unanswered by the next round is a first miss; the target
// is then probed again at once and every Fast (never less than twice the
// largest RTT it has shown, so a slow WAN path does not false-alarm)
// until LossThreshold probes in a row went unanswered (down) or one is
// answered. A break is so reported at the latest 2 × Interval +
// (LossThreshold − 1) × Fast after it happens. A down target is probed
// once per round, its answer looked for a Fast wait after the send, so a
// repair is seen within Interval + Fast.
type Timing struct {
	// Protocol is config.HealthCheckICMP or config.HealthCheckUDP.
	Protocol string
	// Port is the UDP port (protocol udp; the targets' addresses carry
	// it too), for messages.
	Port          uint16
	Interval      time.Duration
	Fast          time.Duration
	LossThreshold int
}

func (t Timing) icmp() bool { return t.Protocol != config.HealthCheckUDP }

func (t Timing) udp() bool { return !t.icmp() }

// Options configure a Prober.
type Options struct {
	Node, Cluster string
	Timing        Timing
	Log           *slog.Logger
	// OnSnapshot hooks are called, in order, from the prober's goroutine
	// with the snapshot of every wake-up (once per Interval in steady
	// state). They must not block: copy what is needed and return (a
	// publisher that writes to an API server keeps the latest and writes
	// from its own goroutine). The snapshot is never modified afterwards.
	OnSnapshot []func(pathhealth.Snapshot)
	// ObserveRTT, when set, is told each answered probe (for the RTT
	// histogram), from the prober's goroutine; must not block.
	ObserveRTT func(target string, rtt time.Duration)
}

// Prober probes every target on the schedule of its Timing and keeps, per
// target, the window of answers. Targets and timing may change while it
// runs (SetTargets, SetTiming).
type Prober struct {
	o  Options
	id uint64

	mu   sync.Mutex
	want []pathhealth.Target
	// wantGen counts the changes of want, so Run rebuilds its targets
	// only after one rather than every round.
	wantGen uint64
	timing  Timing
	latest  pathhealth.Snapshot
	// changed is set by a change Run has not taken yet.
	changed chan struct{}
	// alarm is Run's, while it runs (poke wakes it).
	alarm alarm

	// The rest is Run's own.
	targets map[string]*target
	order   []*target
}

type target struct {
	t    pathhealth.Target
	sock *probeSocket
	// old is the socket sock replaced: it sends no more (so it refreshes
	// no connection-tracking entry) but is read until the next
	// replacement, so a slow path's late answers still count.
	old     *probeSocket
	openErr error
	sendErr error
	// retryAt is when a target confirming a miss may send again after a
	// send error (zero: at once).
	retryAt time.Time
	// reopened is the run of misses the socket was last replaced at.
	reopened int

	w     window
	up    bool
	since time.Time
	// quiet is the message of a down target that is not answering, kept
	// while threshold and wait stay the same: a remote that is away
	// would otherwise format it anew every round.
	quiet struct {
		threshold int
		wait      time.Duration
		msg       string
	}
}

// New returns a prober; Run starts it.
func New(o Options) *Prober {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Prober{o: o, id: rand.Uint64(), timing: o.Timing, changed: make(chan struct{}, 1), targets: map[string]*target{}}
}

// SetTargets replaces the targets; a target whose name, address and source
// stay the same keeps its history.
func (p *Prober) SetTargets(ts []pathhealth.Target) {
	ts = slices.Clone(ts)
	slices.SortFunc(ts, func(a, b pathhealth.Target) int { return strings.Compare(a.Name, b.Name) })
	p.mu.Lock()
	same := slices.Equal(ts, p.want)
	p.want = ts
	if !same {
		p.wantGen++
	}
	p.mu.Unlock()
	if !same {
		p.poke()
	}
}

// SetTiming changes the timing (a reload).
func (p *Prober) SetTiming(t Timing) {
	p.mu.Lock()
	same := p.timing == t
	p.timing = t
	p.mu.Unlock()
	if !same {
		p.poke()
	}
}

// poke ends Run's sleep: the flag first, then the alarm, so that Run,
// which arms the alarm and then looks at the flag, misses neither.
func (p *Prober) poke() {
	select {
	case p.changed <- struct{}{}:
	default: // a wake-up is pending anyway
	}
	p.mu.Lock()
	al := p.alarm
	p.mu.Unlock()
	if al != nil {
		al.wake()
	}
}

// Latest is the last snapshot.
func (p *Prober) Latest() pathhealth.Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latest
}

// slack is how early a deadline or a round may be taken: a wake-up a hair
// before its time must not cost a whole interval.
const slack = time.Millisecond

// Run probes until ctx ends, then closes every socket. Everything happens
// in this goroutine, which sleeps on one alarm until the next thing is
// due: the answers that arrived since the last wake-up are read without
// blocking (the kernel stamps each with its arrival time, so the RTT does
// not depend on when it is read), the probes past their wait are counted
// lost, and the probes due are sent. The probe sockets are bare
// descriptors outside Go's netpoller, so an answer wakes nothing: a node
// with probes on wakes once per interval in steady state, however many
// targets it has, and never without targets. The alarm is a timerfd and
// every call of a round a raw system call (see waker): nothing else in
// the process wakes for a round. The goroutine parks in the netpoller
// rather than sleeping in ppoll(2) on a locked thread: a thread asleep in
// a syscall keeps its P for the runtime's 10 ms retake delay, and sysmon
// polls all that while (measured in weftd, bench figure 10: 26–33 context
// switches per round with ppoll).
func (p *Prober) Run(ctx context.Context) {
	defer func() {
		for _, t := range p.targets {
			t.close()
		}
	}()
	var al alarm
	if w, err := newWaker(); err != nil {
		p.o.Log.Warn("no timerfd for the prober; using a Go timer, which costs more idle CPU", "err", err)
		al = newTimerAlarm()
	} else {
		al = w
	}
	p.mu.Lock()
	p.alarm = al
	p.mu.Unlock()
	stop := context.AfterFunc(ctx, al.wake)
	defer func() {
		stop()
		p.mu.Lock()
		p.alarm = nil
		p.mu.Unlock()
		al.close()
	}()
	var (
		cur       Timing
		nextRound time.Time
		// The targets are those of want's generation syncedGen: 0, no
		// SetTargets yet, is none.
		syncedGen uint64
	)
	for ctx.Err() == nil {
		select {
		case <-p.changed:
		default:
		}
		p.mu.Lock()
		want, gen, tm := p.want, p.wantGen, p.timing
		p.mu.Unlock()
		if tm.Protocol != cur.Protocol {
			for _, t := range p.targets {
				t.close()
			}
		}
		if tm.Interval != cur.Interval {
			nextRound = time.Time{}
		}
		cur = tm
		if gen != syncedGen {
			p.sync(want)
			syncedGen = gen
		}
		now := time.Now()
		roundDue := !now.Before(nextRound.Add(-slack))
		if roundDue {
			nextRound = nextRound.Add(cur.Interval)
			if now.After(nextRound) {
				nextRound = now.Add(cur.Interval) // overslept (or the first round): start the grid anew
			}
		}
		wakeAt := p.step(now, roundDue, nextRound, cur)
		if len(p.targets) > 0 {
			al.arm(time.Until(wakeAt))
		} else {
			al.disarm()
		}
		// A change handed over since the top of the loop: its poke may
		// have come before the arm above and been overwritten by it.
		select {
		case <-p.changed:
			continue
		default:
		}
		al.wait()
	}
}

// sync makes the targets those wanted: new or changed ones start afresh,
// the others are closed.
func (p *Prober) sync(want []pathhealth.Target) {
	keep := make(map[string]bool, len(want))
	for _, w := range want {
		keep[w.Name] = true
		if t, ok := p.targets[w.Name]; ok && t.t == w {
			continue
		} else if ok {
			t.close()
		}
		p.targets[w.Name] = &target{t: w, up: true, since: time.Now()}
	}
	for name, t := range p.targets {
		if !keep[name] {
			t.close()
			delete(p.targets, name)
		}
	}
	p.order = p.order[:0]
	for _, t := range p.targets {
		p.order = append(p.order, t)
	}
	slices.SortFunc(p.order, func(a, b *target) int { return strings.Compare(a.t.Name, b.t.Name) })
}

func (t *target) close() {
	t.sock.close()
	t.old.close()
	t.sock, t.old = nil, nil
}

// reopenAfter reports whether a target's socket is replaced after this
// many probes in a row went unanswered: after threshold, then after 2, 4,
// 8, … times threshold. One stale connection-tracking entry is escaped at
// the first; a path that stays down (a remote cluster away) does not cost
// a new socket, its filter and its bind every threshold rounds.
func reopenAfter(misses, threshold int) bool {
	if misses <= 0 || misses%threshold != 0 {
		return false
	}
	k := misses / threshold
	return k&(k-1) == 0
}

// fastWait is how long a retry (and a down target's probe) waits for its
// answer: Fast, or twice the largest RTT the target has shown.
func fastWait(tm Timing, s summary) time.Duration { return max(tm.Fast, 2*s.rtt.Max) }

// step is one wake-up: read the answers, decide the losses, send what is
// due, publish the snapshot. It returns when the next wake-up is due.
func (p *Prober) step(now time.Time, roundDue bool, nextRound time.Time, tm Timing) time.Time {
	th := max(1, tm.LossThreshold)
	wakeAt := nextRound
	snap := pathhealth.Snapshot{At: now.UTC(), Node: p.o.Node, Cluster: p.o.Cluster, Targets: make([]pathhealth.TargetStatus, 0, len(p.order))}
	for _, t := range p.order {
		for _, sock := range []*probeSocket{t.old, t.sock} {
			if sock == nil {
				continue
			}
			sock.drain(func(pk packet, at time.Time) {
				if pk.id != p.id {
					return
				}
				if rtt, ok := t.w.answer(pk.seq, pk.sent, at); ok && p.o.ObserveRTT != nil {
					p.o.ObserveRTT(t.t.Name, rtt)
				}
			})
		}
		t.w.expire(now.Add(slack))
		s := t.w.summary()
		if s.trailingLost == 0 {
			t.reopened = 0
		} else if reopenAfter(s.trailingLost, th) && t.reopened != s.trailingLost {
			// A new socket: a new source port (udp) or echo identifier
			// (icmp). A connection-tracking entry made while the path was
			// different (the first probes leave before weft's routes and
			// NAT rules exist, and another tool's masquerade binds them)
			// would otherwise hold every later probe of this socket on
			// the old path for as long as it keeps sending.
			t.reopened = s.trailingLost
			t.old.close()
			t.old, t.sock = t.sock, nil
		}
		fe := fastWait(tm, s)
		_, waiting := t.w.pending()
		confirming := s.trailingLost > 0 && s.trailingLost < th
		switch {
		case waiting:
		case confirming && !now.Before(t.retryAt):
			p.send(t, tm, now, now.Add(fe), fe)
		case confirming:
			wakeAt = minTime(wakeAt, t.retryAt)
		case roundDue && s.trailingLost >= th:
			p.send(t, tm, now, now.Add(fe), fe)
		case roundDue:
			p.send(t, tm, now, maxTime(nextRound, now.Add(fe)), fe)
		}
		if at, ok := t.w.pending(); ok {
			wakeAt = minTime(wakeAt, at)
		}
		snap.Targets = append(snap.Targets, t.status(now, th, fe))
	}
	p.publish(snap)
	return wakeAt
}

// send sends the target's next probe; one that cannot leave is lost at
// once (nothing to wait for), and a retry waits fe before trying again.
func (p *Prober) send(t *target, tm Timing, now, deadline time.Time, fe time.Duration) {
	if t.sock == nil {
		t.sock, t.openErr = openSocket(t.t, tm.icmp(), uint16(rand.Uint32()))
		if t.openErr != nil {
			t.sock = nil
		}
	}
	// Stamped just before its send: the RTT starts when the probe leaves.
	at := time.Now()
	seq, rec := t.w.sent(at, deadline)
	t.sendErr = t.openErr
	if t.sock != nil {
		t.sendErr = t.sock.send(packet{kind: kindRequest, id: p.id, seq: seq, sent: rec.sentUnix})
	}
	t.retryAt = time.Time{}
	if t.sendErr != nil {
		rec.state = recLost
		t.retryAt = now.Add(fe)
	}
}

// status is the target's state after a wake-up.
func (t *target) status(now time.Time, threshold int, fe time.Duration) pathhealth.TargetStatus {
	s := t.w.summary()
	up := s.trailingLost < threshold
	if up != t.up {
		t.up, t.since = up, now.UTC()
	}
	st := pathhealth.TargetStatus{Target: t.t, Up: t.up, Since: t.since, RTT: s.rtt, Sent: s.sent, Lost: s.lost}
	switch {
	case !t.up && t.sendErr != nil:
		st.Message = fmt.Sprintf("cannot probe %s: %v", t.t.AddressString(), t.sendErr)
	case !t.up:
		if q := &t.quiet; q.msg == "" || q.threshold != threshold || q.wait != fe {
			q.threshold, q.wait = threshold, fe
			q.msg = fmt.Sprintf("no answer from %s to the last %d probes or more (a retry waits %s)", t.t.AddressString(), threshold, fe)
		}
		st.Message = t.quiet.msg
	case !s.answeredInSpan && s.sent == 0:
		st.Message = "no answer yet"
	}
	return st
}

func (p *Prober) publish(s pathhealth.Snapshot) {
	p.mu.Lock()
	p.latest = s
	p.mu.Unlock()
	for _, f := range p.o.OnSnapshot {
		f(s)
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
