package reactor

import (
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// poolGoroutines counts the goroutines a Pool started (its jobs' goroutines
// and its cleaner) in the whole process, from their stacks. Not
// runtime.NumGoroutine against a count taken at the start: goroutines of
// earlier tests end meanwhile (fasthttp's worker pool cleaners notice a
// stopped server only after their sleep), so a total can fall to the
// start's count while the pool's goroutines still run.
func poolGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "created by github.com/forkd/forkd/reactor.(*Pool[") {
			n++
		}
	}
	return n
}

// waitGoroutines waits until at most n goroutines started by a Pool run.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for poolGoroutines() > n {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines started by a pool: got %d, want <= %d", poolGoroutines(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPoolReusesGoroutines(t *testing.T) {
	var ran atomic.Int64
	done := make(chan struct{}, 1)
	p := NewPool(func(int) { ran.Add(1); done <- struct{}{} })
	for i := 0; i < 100; i++ {
		p.Go(i)
		<-done
		// The goroutine files itself as idle just after the job: wait for
		// it, so the next job finds it.
		waitIdle(t, p, 1)
	}
	if got := ran.Load(); got != 100 {
		t.Fatalf("jobs run: got %d, want 100", got)
	}
	// One goroutine served all of them (plus the cleaner). Counted in the
	// whole process, so waited for: a reactor of an earlier test (its
	// flushers are a Pool) may still be ending its goroutines when this
	// one runs right after it (-run, -shuffle). This pool's own stay idle
	// for 10 s, longer than the wait.
	waitGoroutines(t, 2)
	p.Stop()
	p.Stop() // idempotent
	waitGoroutines(t, 0)
}

func waitIdle[T any](t *testing.T, p *Pool[T], n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.mu.Lock()
		idle := len(p.idle)
		p.mu.Unlock()
		if idle >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle goroutines: got %d, want %d", idle, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// pools are the two kinds of Pool, for tests that hold for both.
func pools[T any]() []struct {
	name string
	make func(func(T)) *Pool[T]
} {
	return []struct {
		name string
		make func(func(T)) *Pool[T]
	}{{"plain", NewPool[T]}, {"queued", NewQueuedPool[T]}}
}

// TestPoolBlockingJobs: a job that blocks does not hold up the others.
func TestPoolBlockingJobs(t *testing.T) {
	for _, k := range pools[bool]() {
		t.Run(k.name, func(t *testing.T) { testPoolBlockingJobs(t, k.make) })
	}
}

func testPoolBlockingJobs(t *testing.T, newPool func(func(bool)) *Pool[bool]) {
	release := make(chan struct{})
	quick := make(chan struct{})
	p := newPool(func(block bool) {
		if block {
			<-release
		} else {
			close(quick)
		}
	})
	for i := 0; i < 10; i++ {
		p.Go(true)
	}
	p.Go(false)
	select {
	case <-quick:
	case <-time.After(5 * time.Second):
		t.Fatal("a job queued behind ten blocked ones did not run")
	}
	close(release)
	waitIdle(t, p, 11)
	p.Stop()
	waitGoroutines(t, 0)
}

// TestPoolIdleEnd: goroutines idle for a whole period end by themselves.
func TestPoolIdleEnd(t *testing.T) {
	for _, k := range pools[int]() {
		t.Run(k.name, func(t *testing.T) { testPoolIdleEnd(t, k.make) })
	}
}

func testPoolIdleEnd(t *testing.T, newPool func(func(int)) *Pool[int]) {
	var wg sync.WaitGroup
	p := newPool(func(int) { wg.Done() })
	p.period = 20 * time.Millisecond
	wg.Add(5)
	for i := 0; i < 5; i++ {
		p.Go(i)
	}
	wg.Wait()
	waitGoroutines(t, 1) // only the cleaner is left
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	if idle != 0 {
		t.Errorf("idle goroutines after two periods: got %d, want 0", idle)
	}
	p.Stop()
	waitGoroutines(t, 0)
	// After Stop a job still runs, on a goroutine that then ends.
	wg.Add(1)
	p.Go(1)
	wg.Wait()
	waitGoroutines(t, 0)
}

// TestQueuedPoolBurst: a burst of jobs queued while the pool's goroutines
// cannot run yet (one P, the caller holding it) runs on two goroutines, the
// one woken and its spare, not one per job; every job runs once, in order.
func TestQueuedPoolBurst(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for round := 0; round < 20; round++ {
		var mu sync.Mutex
		var got []int
		var wg sync.WaitGroup
		p := NewQueuedPool(func(i int) {
			mu.Lock()
			got = append(got, i)
			mu.Unlock()
			wg.Done()
		})
		const n = 100
		wg.Add(n)
		for i := 0; i < n; i++ {
			p.Go(i)
		}
		wg.Wait()
		for i, v := range got {
			if v != i {
				t.Fatalf("round %d: job %d ran as number %d, want in queue order", round, v, i)
			}
		}
		// Goroutines started: those idle once all is done (none ended: the
		// cleaning period is 10 s). Two, plus one for each time the runtime
		// preempted the one working through the queue (its spare then takes
		// over and wakes another): once is common on a loaded machine, and
		// a thread descheduled past sysmon's 10 ms can make it twice or
		// more. At most six; one per job would be a hundred.
		waitIdle(t, p, 1)
		p.mu.Lock()
		started := len(p.idle)
		p.mu.Unlock()
		if started > 6 {
			t.Errorf("round %d: goroutines for a burst of %d jobs: got %d, want <= 6", round, n, started)
		}
		p.Stop()
		waitGoroutines(t, 0)
	}
}

// TestQueuedPoolStopDrains: jobs queued before Stop still run, and Stop
// leaves no goroutine behind.
func TestQueuedPoolStopDrains(t *testing.T) {
	for round := 0; round < 20; round++ {
		release := make(chan struct{})
		var ran atomic.Int64
		p := NewQueuedPool(func(block bool) {
			if block {
				<-release
			}
			ran.Add(1)
		})
		p.Go(true)
		for i := 0; i < 10; i++ {
			p.Go(false)
		}
		p.Stop()
		close(release)
		deadline := time.Now().Add(5 * time.Second)
		for ran.Load() != 11 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: jobs run after Stop: got %d, want 11", round, ran.Load())
			}
			time.Sleep(time.Millisecond)
		}
		waitGoroutines(t, 0)
	}
}
