package worker

import (
	"sync"
	"time"
)

// timers are this process's Tick and After timers. Each runs in its own
// goroutine, so a slow callback delays only its own timer; a Tick whose
// callback overruns its interval skips the missed ticks (time.Ticker).
type timers struct {
	mu   sync.Mutex
	next int
	m    map[int]*timer
}

type timer struct {
	stop chan struct{}
	once sync.Once
}

func (t *timer) cancel() { t.once.Do(func() { close(t.stop) }) }

// Tick calls f every interval until Clear(id) or the worker stops.
func (w *Worker) Tick(interval time.Duration, f func()) int {
	return w.addTimer(interval, true, f)
}

// After calls f once after delay, unless cleared first.
func (w *Worker) After(delay time.Duration, f func()) int {
	return w.addTimer(delay, false, f)
}

// Clear stops a timer; false if it was already gone.
func (w *Worker) Clear(id int) bool {
	w.timers.mu.Lock()
	t := w.timers.m[id]
	delete(w.timers.m, id)
	w.timers.mu.Unlock()
	if t == nil {
		return false
	}
	t.cancel()
	return true
}

func (w *Worker) addTimer(d time.Duration, repeat bool, f func()) int {
	if d <= 0 {
		d = time.Millisecond
	}
	t := &timer{stop: make(chan struct{})}
	w.timers.mu.Lock()
	w.timers.next++
	id := w.timers.next
	w.timers.m[id] = t
	w.timers.mu.Unlock()
	go func() {
		if !repeat {
			tm := time.NewTimer(d)
			defer tm.Stop()
			select {
			case <-t.stop:
			case <-tm.C:
				w.timers.mu.Lock()
				_, live := w.timers.m[id]
				delete(w.timers.m, id)
				w.timers.mu.Unlock()
				if live { // not cleared at the last moment
					w.runTimer(f)
				}
			}
			return
		}
		tk := time.NewTicker(d)
		defer tk.Stop()
		for {
			select {
			case <-t.stop:
				return
			case <-tk.C:
				// A tick that came due while the callback ran, or together
				// with ClearTimer, must not run once the timer is cleared
				// (select picks among ready cases at random).
				select {
				case <-t.stop:
					return
				default:
				}
				w.runTimer(f)
			}
		}
	}()
	return id
}

func (w *Worker) runTimer(f func()) {
	defer w.recoverLog("timer")
	f()
}

func (ts *timers) clearAll() {
	ts.mu.Lock()
	all := ts.m
	ts.m = make(map[int]*timer)
	ts.mu.Unlock()
	for _, t := range all {
		t.cancel()
	}
}
