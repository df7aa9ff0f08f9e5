package worker

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestSerial: with producers adding concurrently, every item is handled
// exactly once, each producer's items in the order it added them, and
// never by two goroutines at once.
func TestSerial(t *testing.T) {
	const producers, each = 8, 2000
	var q serial[[2]int]
	var running, overlaps atomic.Int32
	var mu sync.Mutex
	next := make([]int, producers) // the next item expected from each producer
	var wg, runners sync.WaitGroup
	run := func() {
		defer runners.Done()
		var batch [][2]int
		for {
			var ok bool
			if batch, ok = q.take(batch); !ok {
				return
			}
			if running.Add(1) > 1 {
				overlaps.Add(1)
			}
			for _, it := range batch {
				mu.Lock()
				if next[it[0]] != it[1] {
					t.Errorf("producer %d: got item %d, want %d", it[0], it[1], next[it[0]])
				}
				next[it[0]] = it[1] + 1
				mu.Unlock()
			}
			running.Add(-1)
		}
	}
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if q.add([2]int{p, i}) {
					runners.Add(1)
					go run()
				}
			}
		}()
	}
	wg.Wait()
	runners.Wait()
	if n := overlaps.Load(); n > 0 {
		t.Errorf("%d batches ran while another goroutine was working through the queue", n)
	}
	for p, n := range next {
		if n != each {
			t.Errorf("producer %d: %d items handled, want %d", p, n, each)
		}
	}
}
