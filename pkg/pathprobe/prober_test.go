package pathprobe

import (
	"slices"
	"testing"
)

func TestReopenAfter(t *testing.T) {
	tests := []struct {
		threshold int
		reopen    []int // the miss counts up to 100 that replace the socket
	}{
		{3, []int{3, 6, 12, 24, 48, 96}},
		{1, []int{1, 2, 4, 8, 16, 32, 64}},
		{5, []int{5, 10, 20, 40, 80}},
	}
	for _, tc := range tests {
		var got []int
		for m := 0; m <= 100; m++ {
			if reopenAfter(m, tc.threshold) {
				got = append(got, m)
			}
		}
		if !slices.Equal(got, tc.reopen) {
			t.Errorf("threshold %d: reopen after %v misses, want %v", tc.threshold, got, tc.reopen)
		}
	}
}
