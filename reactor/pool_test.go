package reactor

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitGoroutines waits until at most n goroutines run.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: got %d, want <= %d", runtime.NumGoroutine(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPoolReusesGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
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
	// One goroutine served all of them (plus the cleaner).
	if got := runtime.NumGoroutine() - base; got > 2 {
		t.Errorf("goroutines after 100 sequential jobs: got %d more, want <= 2", got)
	}
	p.Stop()
	p.Stop() // idempotent
	waitGoroutines(t, base)
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

// TestPoolBlockingJobs: a job that blocks does not hold up the others.
func TestPoolBlockingJobs(t *testing.T) {
	base := runtime.NumGoroutine()
	release := make(chan struct{})
	quick := make(chan struct{})
	p := NewPool(func(block bool) {
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
	waitGoroutines(t, base)
}

// TestPoolIdleEnd: goroutines idle for a whole period end by themselves.
func TestPoolIdleEnd(t *testing.T) {
	base := runtime.NumGoroutine()
	var wg sync.WaitGroup
	p := NewPool(func(int) { wg.Done() })
	p.period = 20 * time.Millisecond
	wg.Add(5)
	for i := 0; i < 5; i++ {
		p.Go(i)
	}
	wg.Wait()
	waitGoroutines(t, base+1) // only the cleaner is left
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	if idle != 0 {
		t.Errorf("idle goroutines after two periods: got %d, want 0", idle)
	}
	p.Stop()
	waitGoroutines(t, base)
	// After Stop a job still runs, on a goroutine that then ends.
	wg.Add(1)
	p.Go(1)
	wg.Wait()
	waitGoroutines(t, base)
}
