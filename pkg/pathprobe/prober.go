package pathprobe

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/pkg/pathhealth"
)

// MinTimeout is the least time a probe waits for its answer before it is
// counted lost. The wait is a whole number of rounds: the round at least
// max(2 × interval, MinTimeout) after the probe decides it.
const MinTimeout = 200 * time.Millisecond

// Options configure a Prober.
type Options struct {
	Node, Cluster string
	Interval      time.Duration
	LossThreshold int
	Log           *slog.Logger
	// OnSnapshot hooks are called, in order, from the prober's goroutine
	// with the snapshot of every round (one per Interval). They must not
	// block: copy what is needed and return (a publisher that writes to
	// an API server keeps the latest and writes from its own goroutine).
	// The snapshot is never modified afterwards.
	OnSnapshot []func(pathhealth.Snapshot)
	// ObserveRTT, when set, is told each answered probe (for the RTT
	// histogram), from the prober's goroutine; must not block.
	ObserveRTT func(target string, rtt time.Duration)
}

// Prober sends a probe to every target once per interval and keeps, per
// target, the window of answers. Targets and timing may change while it
// runs (SetTargets, SetTiming).
type Prober struct {
	o  Options
	id uint64

	mu        sync.Mutex
	want      []pathhealth.Target
	interval  time.Duration
	threshold int
	latest    pathhealth.Snapshot
	changed   chan struct{}

	// targets is the prober goroutine's own (Run's).
	targets map[string]*target
}

type target struct {
	t       pathhealth.Target
	conn    *net.UDPConn
	raw     syscall.RawConn
	buf     [64]byte // a reply is 32 bytes: anything longer is not one
	oob     [64]byte
	openErr error
	sendErr error

	mu    sync.Mutex
	w     window
	up    bool
	since time.Time
}

// New returns a prober; Run starts it.
func New(o Options) *Prober {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Prober{o: o, id: rand.Uint64(), interval: o.Interval, threshold: o.LossThreshold,
		changed: make(chan struct{}, 1), targets: map[string]*target{}}
}

// SetTargets replaces the targets; a target whose name, address and source
// stay the same keeps its history.
func (p *Prober) SetTargets(ts []pathhealth.Target) {
	ts = slices.Clone(ts)
	slices.SortFunc(ts, func(a, b pathhealth.Target) int { return strings.Compare(a.Name, b.Name) })
	p.mu.Lock()
	same := slices.Equal(ts, p.want)
	p.want = ts
	p.mu.Unlock()
	if !same {
		p.poke()
	}
}

// SetTiming changes the interval and loss threshold (a reload).
func (p *Prober) SetTiming(interval time.Duration, threshold int) {
	p.mu.Lock()
	same := p.interval == interval && p.threshold == threshold
	p.interval, p.threshold = interval, threshold
	p.mu.Unlock()
	if !same {
		p.poke()
	}
}

func (p *Prober) poke() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// Latest is the last round's snapshot.
func (p *Prober) Latest() pathhealth.Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latest
}

// waitRounds is how many rounds a probe waits for its answer.
func waitRounds(interval time.Duration) uint64 {
	return max(2, uint64((MinTimeout+interval-1)/interval))
}

// Run probes until ctx ends, then closes every socket. Everything happens
// in this goroutine, once per interval: the replies that arrived since the
// last round are read without blocking (the kernel stamps each with its
// arrival time, so the RTT does not depend on when the round runs), then
// the overdue probes are counted lost and the next probes sent. A node
// with probes on wakes once per interval, however many targets it has,
// and not at all without targets.
func (p *Prober) Run(ctx context.Context) {
	defer func() {
		for _, t := range p.targets {
			t.close()
		}
	}()
	p.mu.Lock()
	interval := p.interval
	p.mu.Unlock()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		p.mu.Lock()
		want, iv, threshold := p.want, p.interval, p.threshold
		p.mu.Unlock()
		if iv != interval {
			interval = iv
			tick.Reset(interval)
		}
		p.sync(want)
		rounds := waitRounds(interval)
		p.publish(p.round(time.Now(), rounds, time.Duration(rounds)*interval, threshold))
		var ticks <-chan time.Time
		if len(p.targets) > 0 {
			ticks = tick.C
		}
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		case <-p.changed:
		}
	}
}

// sync opens the targets that are new or changed and closes the others.
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
	for _, t := range p.targets {
		if t.conn == nil {
			p.open(t)
		}
	}
}

// open binds the target's socket to its source address (so the kernel
// routes it as traffic from that address would be routed) and asks for
// kernel receive timestamps. A source not (yet) on the node is an error
// until it appears.
func (p *Prober) open(t *target) {
	laddr := &net.UDPAddr{}
	if t.t.Source.IsValid() {
		laddr.IP = t.t.Source.AsSlice()
	}
	c, err := net.ListenUDP("udp4", laddr)
	if err != nil {
		t.openErr = fmt.Errorf("bind the probe socket to %s: %w", t.t.Source, err)
		return
	}
	rc, err := c.SyscallConn()
	if err == nil {
		var serr error
		err = rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) })
		if err == nil {
			err = serr
		}
	}
	if err != nil {
		c.Close()
		t.openErr = fmt.Errorf("probe socket for %s: receive timestamps: %w", t.t.Address, err)
		return
	}
	t.conn, t.raw, t.openErr = c, rc, nil
}

func (t *target) close() {
	if t.conn != nil {
		t.conn.Close()
		t.conn, t.raw = nil, nil
	}
}

// drain reads every reply waiting on the target's socket without blocking
// and matches each to its probe; caller holds t.mu.
func (p *Prober) drain(t *target) {
	if t.raw == nil {
		return
	}
	buf, oob := t.buf[:], t.oob[:]
	for {
		var n, oobn int
		var from unix.Sockaddr
		var rerr error
		err := t.raw.Read(func(fd uintptr) bool {
			n, oobn, _, from, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
			return true // never wait: what is not there is read next round
		})
		if err != nil || rerr != nil {
			return // EAGAIN: nothing more; other errors (ICMP) likewise
		}
		at := rxTime(oob[:oobn])
		sa, ok := from.(*unix.SockaddrInet4)
		pk, derr := decode(buf[:n])
		if !ok || derr != nil || pk.kind != kindReply || pk.id != p.id || netip.AddrFrom4(sa.Addr) != t.t.Address.Addr() {
			continue
		}
		if rtt, ok := t.w.answer(pk.seq, pk.sent, at); ok && p.o.ObserveRTT != nil {
			p.o.ObserveRTT(t.t.Name, rtt)
		}
	}
}

// rxTime is the kernel's receive timestamp (SCM_TIMESTAMPNS), or now
// without one.
func rxTime(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err == nil {
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
				ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
				return time.Unix(ts.Unix())
			}
		}
	}
	return time.Now()
}

// round decides the expired probes, sends the next one to every target
// and returns the snapshot.
func (p *Prober) round(now time.Time, rounds uint64, wait time.Duration, threshold int) pathhealth.Snapshot {
	snap := pathhealth.Snapshot{At: now.UTC(), Node: p.o.Node, Cluster: p.o.Cluster, Targets: make([]pathhealth.TargetStatus, 0, len(p.targets))}
	buf := make([]byte, 0, probeSize)
	for _, t := range p.targets {
		t.mu.Lock()
		p.drain(t)
		t.w.expire(rounds)
		// Stamped just before its send: the RTT starts when the probe leaves.
		seq, rec := t.w.sent(time.Now())
		t.mu.Unlock()
		t.sendErr = nil
		switch {
		case t.conn == nil:
			t.sendErr = t.openErr
		default:
			buf = packet{kind: kindRequest, id: p.id, seq: seq, sent: rec.sentUnix}.encode(buf)
			if _, err := t.conn.WriteToUDPAddrPort(buf, t.t.Address); err != nil {
				t.sendErr = fmt.Errorf("send to %s: %w", t.t.Address, err)
			}
		}
		t.mu.Lock()
		if t.sendErr != nil && rec.state == recPending && rec.seq == seq {
			rec.state = recLost // it never left: no need to wait for it
		}
		st, lost := t.status(now, threshold, wait)
		snap.Targets = append(snap.Targets, st)
		t.mu.Unlock()
		if lost > 0 && lost%threshold == 0 {
			// A new socket, a new source port: a connection-tracking entry
			// made while the path was different (the first probes leave
			// before weft's routes and NAT rules exist, and another tool's
			// masquerade binds them) would otherwise hold every later
			// probe of this socket on the old path for as long as it
			// keeps sending. The window stays; the next round reopens.
			t.close()
		}
	}
	slices.SortFunc(snap.Targets, func(a, b pathhealth.TargetStatus) int { return strings.Compare(a.Name, b.Name) })
	return snap
}

// status is the target's state after a round; caller holds t.mu.
// It also returns how many probes in a row were lost.
func (t *target) status(now time.Time, threshold int, wait time.Duration) (pathhealth.TargetStatus, int) {
	s := t.w.summary()
	up := s.trailingLost < threshold
	if up != t.up {
		t.up, t.since = up, now.UTC()
	}
	st := pathhealth.TargetStatus{Target: t.t, Up: t.up, Since: t.since, RTT: s.rtt, Sent: s.sent, Lost: s.lost}
	switch {
	case !t.up && t.sendErr != nil:
		st.Message = fmt.Sprintf("cannot probe %s: %v", t.t.Address, t.sendErr)
	case !t.up:
		st.Message = fmt.Sprintf("no answer from %s to the last %d probes or more (a probe waits %s)", t.t.Address, threshold, wait)
	case !s.answeredInSpan && s.sent == 0:
		st.Message = "no answer yet"
	}
	return st, s.trailingLost
}

func (p *Prober) publish(s pathhealth.Snapshot) {
	p.mu.Lock()
	p.latest = s
	p.mu.Unlock()
	for _, f := range p.o.OnSnapshot {
		f(s)
	}
}
