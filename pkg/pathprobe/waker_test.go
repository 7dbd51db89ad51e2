package pathprobe

import (
	"testing"
	"time"
)

// TestAlarms: both alarms sleep until armed time, end at once on a wake
// from another goroutine (also one that came before the wait), stay asleep
// when disarmed, and take a wake after close without harm.
func TestAlarms(t *testing.T) {
	w, err := newWaker()
	if err != nil {
		t.Fatal(err)
	}
	for name, al := range map[string]alarm{"timerfd": w, "timer": newTimerAlarm()} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			al.arm(30 * time.Millisecond)
			al.wait()
			if d := time.Since(start); d < 30*time.Millisecond || d > 2*time.Second {
				t.Errorf("armed for 30 ms, woke after %s", d)
			}

			al.disarm()
			start = time.Now()
			go func() { time.Sleep(50 * time.Millisecond); al.wake() }()
			al.wait()
			if d := time.Since(start); d < 50*time.Millisecond || d > 2*time.Second {
				t.Errorf("disarmed and woken after 50 ms, returned after %s", d)
			}

			al.arm(time.Hour)
			al.wake() // before the wait: must not be lost
			start = time.Now()
			al.wait()
			if d := time.Since(start); d > time.Second {
				t.Errorf("a wake before the wait was lost: returned after %s", d)
			}

			al.arm(0) // due already
			start = time.Now()
			al.wait()
			if d := time.Since(start); d > time.Second {
				t.Errorf("armed with 0, returned after %s", d)
			}
			al.close()
			al.wake()
		})
	}
}
