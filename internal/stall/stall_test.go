package stall

import (
	"testing"
	"time"
)

func TestWatch(t *testing.T) {
	w := New(100*time.Millisecond, 0)
	t0 := time.Unix(1000, 0)
	w.Tick(t0)
	w.Tick(t0.Add(100 * time.Millisecond))
	w.Tick(t0.Add(650 * time.Millisecond)) // a 550 ms delay: under load, not a pause
	if !w.Resumed().IsZero() {
		t.Fatalf("a tick 550 ms late counted as a pause (After %s)", w.After())
	}
	if l := t0.UnixNano(); w.Limit(l) != l || !w.Since(t0).Equal(t0) {
		t.Fatal("without a pause, limits and times are unchanged")
	}
	resume := t0.Add(10 * time.Second) // 9.35 s without a tick: a pause
	w.Tick(resume)
	if !w.Resumed().Equal(resume) {
		t.Fatalf("resumed %v, want %v", w.Resumed(), resume)
	}
	if got := w.Since(t0); !got.Equal(resume) {
		t.Fatalf("silence since before the pause counts from %v, want the resumption %v", got, resume)
	}
	later := resume.Add(time.Second)
	if got := w.Since(later); !got.Equal(later) {
		t.Fatalf("Since(after the resumption) = %v, want itself", got)
	}
	// A 5 s timeout, 1 s after the resumption: nothing is past it.
	now := resume.Add(time.Second)
	if got := w.Limit(now.Add(-5 * time.Second).UnixNano()); got != 0 {
		t.Fatalf("1 s after the resumption, a 5 s timeout's limit is %d, want 0", got)
	}
	if a := New(100*time.Millisecond, 2*time.Second).After(); a != 2*time.Second {
		t.Fatalf("After %s, want the 2 s asked for", a)
	}
	// 6 s after: the limit applies again.
	now = resume.Add(6 * time.Second)
	if l := now.Add(-5 * time.Second).UnixNano(); w.Limit(l) != l {
		t.Fatal("6 s after the resumption, a 5 s timeout's limit must apply")
	}
}
