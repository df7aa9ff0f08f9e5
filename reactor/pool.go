package reactor

import (
	"sync"
	"time"
)

// Pool runs jobs on goroutines it keeps for reuse. A goroutine started per
// job begins with a small stack and grows it again on every job that runs
// deep (fasthttp's parsing, a WebSocket write into a syscall): that
// copying cost a sixth to a third of a process's CPU. A kept goroutine
// grows its stack once. There are as many goroutines as jobs in flight (a
// job may block); one left idle for a whole cleaning period ends.
type Pool[T any] struct {
	run    func(T)
	period time.Duration // cleaning period

	mu      sync.Mutex
	idle    []*poolG[T] // LIFO: the most recently used first
	tick    uint64      // cleaning periods elapsed
	started bool
	stopped bool
	done    chan struct{}
}

type poolG[T any] struct {
	ch   chan T // one job at a time; closed: end
	tick uint64 // the period it went idle in
}

// PoolIdle is how long, at least, an idle pooled goroutine is kept.
const PoolIdle = 10 * time.Second

// NewPool returns a pool running run for each job.
func NewPool[T any](run func(T)) *Pool[T] {
	return &Pool[T]{run: run, period: PoolIdle}
}

// Go runs j on an idle goroutine, or on a new one. After Stop it still
// runs j, on a goroutine that ends with it.
func (p *Pool[T]) Go(j T) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		g := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		g.ch <- j // never blocks: an idle goroutine's channel is empty
		return
	}
	if !p.started && !p.stopped {
		p.started = true
		p.done = make(chan struct{})
		go p.clean()
	}
	p.mu.Unlock()
	go p.loop(&poolG[T]{ch: make(chan T, 1)}, j)
}

func (p *Pool[T]) loop(g *poolG[T], j T) {
	for ok := true; ok; j, ok = <-g.ch {
		p.run(j)
		if !p.put(g) {
			return
		}
	}
}

// put files g as idle; false once the pool has stopped.
func (p *Pool[T]) put(g *poolG[T]) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false
	}
	g.tick = p.tick
	p.idle = append(p.idle, g)
	return true
}

// clean ends, every period, the goroutines idle for a whole period.
func (p *Pool[T]) clean() {
	t := time.NewTicker(p.period)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		p.mu.Lock()
		p.tick++
		n := 0 // the oldest are at the front
		for n < len(p.idle) && p.tick-p.idle[n].tick >= 2 {
			close(p.idle[n].ch)
			p.idle[n] = nil
			n++
		}
		p.idle = append(p.idle[:0], p.idle[n:]...)
		p.mu.Unlock()
	}
}

// Stop ends the idle goroutines and the cleaner; busy ones end after their
// job. Idempotent.
func (p *Pool[T]) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.stopped = true
	for i, g := range p.idle {
		close(g.ch)
		p.idle[i] = nil
	}
	p.idle = nil
	if p.started {
		close(p.done)
	}
}
