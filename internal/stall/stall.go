// Package stall tells a periodic check that the process itself did not
// run for a while (stopped, its container frozen, the machine suspended
// or swapping). Meanwhile nothing was read, so what a check would count
// as silence or slowness of its peers was this process's own pause: a
// timeout counts again from the resumption.
package stall

import (
	"sync/atomic"
	"time"
)

// Watch is ticked every every, by one goroutine or several (each tick
// measures the gap since the last of any); Resumed, Since and Limit may
// be called from any goroutine.
type Watch struct {
	after   time.Duration
	last    atomic.Int64 // unix nanoseconds of the last tick
	resumed atomic.Int64 // unix nanoseconds; 0: never paused
}

// New returns a Watch for a check that ticks every every, taking a gap
// of more than after between two ticks for a pause (at least twice every
// and half a second: a scheduling delay under load is shorter). A longer
// after misses shorter pauses; a shorter one takes more of a loaded
// machine's delays for pauses, which only defers the timeouts a little.
func New(every, after time.Duration) *Watch {
	return &Watch{after: max(after, 2*every+500*time.Millisecond)}
}

// After is the gap between two ticks taken for a pause.
func (w *Watch) After() time.Duration { return w.after }

// Tick records a tick at now (time.Now(), not a ticker's value, which may
// be from before a pause). A goroutine that acts on a timeout ticks first:
// then it sees a pause even if it is the first to run after it.
func (w *Watch) Tick(now time.Time) {
	n := now.UnixNano()
	if prev := w.last.Swap(n); prev != 0 && n-prev > int64(w.after) {
		w.resumed.Store(n)
	}
}

// Resumed is when the process last ran again after a pause (zero: never
// paused).
func (w *Watch) Resumed() time.Time {
	if r := w.resumed.Load(); r != 0 {
		return time.Unix(0, r)
	}
	return time.Time{}
}

// Since returns the later of t and the last resumption: silence counted
// from there was silence while this process ran.
func (w *Watch) Since(t time.Time) time.Time {
	if r := w.Resumed(); r.After(t) {
		return r
	}
	return t
}

// Limit takes limit, a deadline in unix nanoseconds (now - a timeout):
// things older than it are past the timeout. While less than that timeout
// has passed since the resumption, it returns 0: nothing is past it.
func (w *Watch) Limit(limit int64) int64 {
	if w.resumed.Load() > limit {
		return 0
	}
	return limit
}
