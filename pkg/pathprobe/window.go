package pathprobe

import (
	"math"
	"time"

	"github.com/weft-net/weft/pkg/pathhealth"
)

// window is the last windowSize probes of one target, indexed by
// sequence number. Only the prober's goroutines touch it, under the
// target's lock.
const windowSize = 128

type record struct {
	seq      uint64
	sentUnix int64     // the timestamp carried in the probe
	sentAt   time.Time // monotonic: what the RTT is measured from
	state    uint8
	rtt      time.Duration
}

const (
	recEmpty uint8 = iota
	recPending
	recAnswered
	recLost
)

type window struct {
	recs [windowSize]record
	next uint64 // the next sequence number
	last time.Duration
	late uint64 // replies that came after their probe was counted lost
}

// sent records a probe and returns its sequence number.
func (w *window) sent(at time.Time) (uint64, *record) {
	seq := w.next
	w.next++
	r := &w.recs[seq%windowSize]
	*r = record{seq: seq, sentUnix: at.UnixNano(), sentAt: at, state: recPending}
	return seq, r
}

// answer matches a reply to its probe: the same sequence number and send
// timestamp, still pending. A reply to a probe already counted lost is
// late: it counts neither as an answer nor for the RTT.
func (w *window) answer(seq uint64, sentUnix int64, at time.Time) (time.Duration, bool) {
	r := &w.recs[seq%windowSize]
	if r.seq != seq || r.sentUnix != sentUnix || r.state == recEmpty || seq >= w.next {
		return 0, false
	}
	if r.state != recPending {
		if r.state == recLost {
			w.late++
		}
		return 0, false
	}
	r.state, r.rtt = recAnswered, at.Sub(r.sentAt)
	w.last = r.rtt
	return r.rtt, true
}

// expire counts as lost every probe still pending rounds probes after it
// was sent: one probe goes out per round, so the wait is measured in
// rounds, and timer jitter cannot add a round to the detection time.
func (w *window) expire(rounds uint64) {
	for i := range w.recs {
		if r := &w.recs[i]; r.state == recPending && r.seq+rounds <= w.next {
			r.state = recLost
		}
	}
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
