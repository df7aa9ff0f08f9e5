package master

import "testing"

// TestGapMax: the sweeper's window of tick gaps reports the largest gap
// that ended after the time asked, and always the latest.
func TestGapMax(t *testing.T) {
	var g gapMax
	if got := g.max(0); got != 0 {
		t.Fatalf("empty: got %d, want 0", got)
	}
	steps := []struct {
		end, gap    int64
		since, want int64
	}{
		{end: 10, gap: 10, since: 0, want: 10},
		{end: 60, gap: 50, since: 0, want: 50},  // a stalled tick
		{end: 70, gap: 10, since: 55, want: 50}, // still within the window
		{end: 80, gap: 10, since: 65, want: 10}, // the stall left it
		{end: 85, gap: 5, since: 84, want: 5},   // only the latest
		{end: 95, gap: 10, since: 200, want: 10},
	}
	for i, s := range steps {
		g.add(s.end, s.gap)
		if got := g.max(s.since); got != s.want {
			t.Fatalf("step %d: got %d, want %d", i, got, s.want)
		}
	}
}
