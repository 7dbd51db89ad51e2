package pathprobe

import (
	"math"
	"time"

	"github.com/weft-net/weft/pkg/pathhealth"
)

// window is the last windowSize probes of one target, indexed by
// sequence number. Only the prober's goroutine touches it.
const windowSize = 128

type record struct {
	seq      uint64
	sentUnix int64     // the timestamp carried in the probe
	sentAt   time.Time // monotonic: what the RTT is measured from
	deadline time.Time // when a probe still unanswered is lost
	state    uint8
	rtt      time.Duration
}

const (
	recEmpty uint8 = iota
	recPending
	recAnswered
	recLost
	// recHeard is an answer without a known arrival time (the kernel
	// stamped it only when it was read): the path works, but its RTT would
	// be the time it waited for the round, so it is left out of the RTT.
	recHeard
)

type window struct {
	recs [windowSize]record
	next uint64 // the next sequence number
	last time.Duration
	late uint64 // answers that came after their probe was counted lost
}

// sent records a probe and returns its sequence number.
func (w *window) sent(at, deadline time.Time) (uint64, *record) {
	seq := w.next
	w.next++
	r := &w.recs[seq%windowSize]
	*r = record{seq: seq, sentUnix: at.UnixNano(), sentAt: at, deadline: deadline, state: recPending}
	return seq, r
}

// answer matches an answer to its probe: the same sequence number and
// send timestamp. An answer to a probe already counted lost is late: the
// path works, only slower than the wait, so the probe counts as answered
// after all (with its RTT, which lengthens the next waits) and the misses
// it had started are cleared.
//
// A zero at is an answer whose arrival is unknown: it counts as answered,
// with no RTT (and false, as there is none to observe).
func (w *window) answer(seq uint64, sentUnix int64, at time.Time) (time.Duration, bool) {
	r := &w.recs[seq%windowSize]
	if r.seq != seq || r.sentUnix != sentUnix || seq >= w.next || (r.state != recPending && r.state != recLost) {
		return 0, false
	}
	if r.state == recLost {
		w.late++
	}
	if at.IsZero() {
		r.state, r.rtt = recHeard, 0
		return 0, false
	}
	r.state, r.rtt = recAnswered, max(0, at.Sub(r.sentAt))
	if w.newestAnswered() == seq {
		w.last = r.rtt
	}
	return r.rtt, true
}

// newestAnswered is the sequence number of the newest answered probe.
func (w *window) newestAnswered() uint64 {
	for k := uint64(1); k <= windowSize && k <= w.next; k++ {
		if r := &w.recs[(w.next-k)%windowSize]; r.state == recAnswered {
			return r.seq
		}
	}
	return math.MaxUint64
}

// expire counts as lost every probe still pending at its deadline.
func (w *window) expire(now time.Time) {
	for i := range w.recs {
		if r := &w.recs[i]; r.state == recPending && !r.deadline.After(now) {
			r.state = recLost
		}
	}
}

// pending is the earliest deadline of the probes still waiting for their
// answer (false: none is).
func (w *window) pending() (time.Time, bool) {
	var at time.Time
	found := false
	for i := range w.recs {
		if r := &w.recs[i]; r.state == recPending && (!found || r.deadline.Before(at)) {
			at, found = r.deadline, true
		}
	}
	return at, found
}

// summary is the window's statistics: the RTT over the answered probes,
// sent and lost over the decided ones (pending probes are neither), and
// how many decided probes in a row, newest first, were lost.
type summary struct {
	rtt            pathhealth.RTT
	sent, lost     uint64
	trailingLost   int
	answeredInSpan bool
}

func (w *window) summary() summary {
	var s summary
	var sum, sumSq float64
	var n int
	counting := true
	for k := uint64(1); k <= windowSize && k <= w.next; k++ {
		r := &w.recs[(w.next-k)%windowSize]
		switch r.state {
		case recAnswered:
			counting = false
			s.answeredInSpan = true
			s.sent++
			d := float64(r.rtt)
			sum += d
			sumSq += d * d
			if n == 0 || r.rtt < s.rtt.Min {
				s.rtt.Min = r.rtt
			}
			s.rtt.Max = max(s.rtt.Max, r.rtt)
			n++
		case recHeard:
			counting = false
			s.answeredInSpan = true
			s.sent++
		case recLost:
			s.sent++
			s.lost++
			if counting {
				s.trailingLost++
			}
		}
	}
	if n > 0 {
		mean := sum / float64(n)
		s.rtt.Mean = time.Duration(mean)
		s.rtt.StdDev = time.Duration(math.Sqrt(max(0, sumSq/float64(n)-mean*mean)))
		s.rtt.Last = w.last
	}
	return s
}
