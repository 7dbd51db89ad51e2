package pathprobe

import (
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/pathhealth"
)

func TestWindowMatchesRepliesToTheirProbe(t *testing.T) {
	var w window
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	s0, r0 := w.sent(t0, t0.Add(50*ms))
	s1, r1 := w.sent(t0.Add(100*ms), t0.Add(150*ms))
	s2, r2 := w.sent(t0.Add(200*ms), t0.Add(250*ms))
	w.expire(t0.Add(60 * ms)) // probe 0 is lost: its wait is over
	if s := w.summary(); s.lost != 1 || s.trailingLost != 1 {
		t.Fatalf("after expiry lost %d trailing %d, want 1 1", s.lost, s.trailingLost)
	}
	// A reply carrying another probe's timestamp is not an answer.
	if _, ok := w.answer(s1, r2.sentUnix, t0.Add(270*ms)); ok {
		t.Fatal("a reply with the wrong timestamp was accepted")
	}
	if rtt, ok := w.answer(s1, r1.sentUnix, t0.Add(103*ms)); !ok || rtt != 3*ms {
		t.Fatalf("answer(1) = %s %v, want 3ms", rtt, ok)
	}
	if _, ok := w.answer(s1, r1.sentUnix, t0.Add(104*ms)); ok {
		t.Fatal("a duplicate reply was accepted twice")
	}
	if rtt, ok := w.answer(s2, r2.sentUnix, t0.Add(205*ms)); !ok || rtt != 5*ms {
		t.Fatalf("answer(2) = %s %v, want 5ms", rtt, ok)
	}
	if _, ok := w.answer(99, 0, t0); ok {
		t.Fatal("a reply to a probe never sent was accepted")
	}
	s := w.summary()
	if s.sent != 3 || s.lost != 1 || s.trailingLost != 0 {
		t.Errorf("sent %d lost %d trailing %d, want 3 1 0", s.sent, s.lost, s.trailingLost)
	}
	if s.rtt.Last != 5*ms || s.rtt.Min != 3*ms || s.rtt.Max != 5*ms || s.rtt.Mean != 4*ms || s.rtt.StdDev != ms {
		t.Errorf("rtt = %+v, want last 5 min 3 max 5 mean 4 stddev 1 (ms)", s.rtt)
	}

	// The reply to probe 0 comes late, after newer probes were answered:
	// it is its own probe's (not taken for 1's or 2's), counts as an
	// answer with its real RTT, and the last RTT stays the newest probe's.
	if rtt, ok := w.answer(s0, r0.sentUnix, t0.Add(260*ms)); !ok || rtt != 260*ms {
		t.Fatalf("late answer(0) = %s %v, want 260ms accepted", rtt, ok)
	}
	if s := w.summary(); w.late != 1 || s.lost != 0 || s.rtt.Max != 260*ms || s.rtt.Last != 5*ms {
		t.Errorf("after the late answer late %d lost %d rtt %+v, want 1, 0, max 260ms, last 5ms", w.late, s.lost, s.rtt)
	}
}

// A late answer to the probe whose loss started a run of misses clears
// them: the path works, only slowly.
func TestWindowLateAnswerClearsMisses(t *testing.T) {
	var w window
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	s0, r0 := w.sent(t0, t0.Add(50*ms))
	w.expire(t0.Add(50 * ms))
	if got := w.summary().trailingLost; got != 1 {
		t.Fatalf("trailingLost = %d, want 1", got)
	}
	w.answer(s0, r0.sentUnix, t0.Add(80*ms))
	if s := w.summary(); s.trailingLost != 0 || s.lost != 0 || s.rtt.Last != 80*ms {
		t.Fatalf("after the late answer %+v, want no misses and last rtt 80ms", s)
	}
}

func TestWindowTrailingLoss(t *testing.T) {
	var w window
	t0 := time.Unix(1000, 0)
	s, r := w.sent(t0, t0.Add(time.Second))
	w.answer(s, r.sentUnix, t0.Add(time.Millisecond))
	for i := 1; i <= 6; i++ {
		at := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		w.sent(at, at.Add(200*time.Millisecond))
	}
	// Probes 1..4 are past their deadline, 5 and 6 pending.
	w.expire(t0.Add(600 * time.Millisecond))
	if got := w.summary().trailingLost; got != 4 {
		t.Fatalf("trailingLost = %d, want 4 (pending probes are neither)", got)
	}
	if at, ok := w.pending(); !ok || !at.Equal(t0.Add(700*time.Millisecond)) {
		t.Fatalf("pending = %s %v, want probe 5's deadline", at, ok)
	}
	// The window wraps without counting overwritten probes twice.
	for i := 0; i < 3*windowSize; i++ {
		w.sent(t0.Add(time.Second), t0.Add(time.Second+time.Duration(i)))
	}
	w.expire(t0.Add(time.Second + time.Duration(3*windowSize-2)))
	if s := w.summary(); s.sent != windowSize-1 || s.lost != windowSize-1 {
		t.Fatalf("after wrap sent %d lost %d, want %d each (the newest still waits)", s.sent, s.lost, windowSize-1)
	}
}

// An answer whose arrival is unknown (a zero time: stamped only when read)
// counts as answered and clears the misses, but gives no RTT: its
// round-long wait would otherwise become the RTT max and stretch every
// retry's wait.
func TestWindowAnswerWithoutArrival(t *testing.T) {
	var w window
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	s0, r0 := w.sent(t0, t0.Add(50*ms))
	s1, r1 := w.sent(t0.Add(300*ms), t0.Add(350*ms))
	w.expire(t0.Add(360 * ms))
	if s := w.summary(); s.trailingLost != 2 {
		t.Fatalf("trailing lost %d, want 2", s.trailingLost)
	}
	if rtt, ok := w.answer(s1, r1.sentUnix, time.Time{}); ok || rtt != 0 {
		t.Fatalf("answer without arrival = %s %v, want none to observe", rtt, ok)
	}
	s := w.summary()
	if s.sent != 2 || s.lost != 1 || s.trailingLost != 0 || !s.answeredInSpan {
		t.Errorf("sent %d lost %d trailing %d answered %v, want 2 1 0 true", s.sent, s.lost, s.trailingLost, s.answeredInSpan)
	}
	if s.rtt != (pathhealth.RTT{}) {
		t.Errorf("rtt %+v, want none", s.rtt)
	}
	if _, ok := w.answer(s1, r1.sentUnix, t0.Add(301*ms)); ok {
		t.Error("a second answer to the same probe was accepted")
	}
	if rtt, ok := w.answer(s0, r0.sentUnix, t0.Add(2*ms)); !ok || rtt != 2*ms {
		t.Fatalf("answer(0) = %s %v, want 2ms", rtt, ok)
	}
	if s := w.summary(); s.rtt.Max != 2*ms || s.rtt.Mean != 2*ms || s.rtt.Last != 2*ms || s.lost != 0 {
		t.Errorf("rtt %+v lost %d, want the one stamped answer's 2ms and no loss", s.rtt, s.lost)
	}
}
