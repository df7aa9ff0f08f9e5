package worker

import "sync"

// serial is a queue whose items are handled one at a time, in order, by
// at most one goroutine: a connection's events (PROCESS mode) and a task
// worker's tasks. Whoever adds to an idle queue starts that goroutine,
// which takes what is queued in batches until the queue is empty.
type serial[T any] struct {
	mu      sync.Mutex
	items   []T
	running bool
}

// add queues v and reports whether the caller must start the goroutine
// that works through the queue (none runs).
func (q *serial[T]) add(v T) (start bool) {
	q.mu.Lock()
	q.items = append(q.items, v)
	start = !q.running
	q.running = true
	q.mu.Unlock()
	return start
}

// take returns everything queued, reusing spare's array for the next
// items; when nothing is queued it marks the goroutine stopped and returns
// false, and the goroutine must return.
func (q *serial[T]) take(spare []T) ([]T, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		q.running = false
		// Keep the spare array for the next add: a connection that gets
		// one message at a time allocated a queue per message without it.
		if cap(spare) <= 256 {
			clear(spare[:cap(spare)])
			q.items = spare[:0]
		}
		return nil, false
	}
	batch := q.items
	q.items = spare[:0]
	return batch, true
}
