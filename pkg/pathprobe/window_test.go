package pathprobe

import (
	"testing"
	"time"
)

func TestWindowMatchesRepliesToTheirProbe(t *testing.T) {
	var w window
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	s0, r0 := w.sent(t0)
	s1, r1 := w.sent(t0.Add(100 * ms))
	s2, r2 := w.sent(t0.Add(200 * ms))
	w.expire(3) // probe 0 is lost: it waited three rounds

	// The reply to probe 0 comes late: it is not taken as probe 1's or 2's.
	if _, ok := w.answer(s0, r0.sentUnix, t0.Add(260*ms)); ok {
		t.Fatal("a reply after the probe was counted lost was accepted")
	}
	if w.late != 1 {
		t.Errorf("late = %d, want 1", w.late)
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
}

func TestWindowTrailingLoss(t *testing.T) {
	var w window
	t0 := time.Unix(1000, 0)
	s, r := w.sent(t0)
	w.answer(s, r.sentUnix, t0.Add(time.Millisecond))
	for i := 1; i <= 6; i++ {
		w.sent(t0.Add(time.Duration(i) * 100 * time.Millisecond))
	}
	// Probes 1..4 are past their wait of three rounds, 5 and 6 pending.
	w.expire(3)
	if got := w.summary().trailingLost; got != 4 {
		t.Fatalf("trailingLost = %d, want 4 (pending probes are neither)", got)
	}
	// The window wraps without counting overwritten probes twice.
	for i := 0; i < 3*windowSize; i++ {
		w.sent(t0.Add(time.Second))
	}
	w.expire(2)
	if s := w.summary(); s.sent != windowSize-1 || s.lost != windowSize-1 {
		t.Fatalf("after wrap sent %d lost %d, want %d each (the newest still waits)", s.sent, s.lost, windowSize-1)
	}
}
