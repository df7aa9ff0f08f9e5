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
//
// A queued pool (NewQueuedPool) has as many as jobs running, plus one spare
// while jobs wait, and wakes fewer: see Go.
type Pool[T any] struct {
	run    func(T)
	period time.Duration // cleaning period
	queued bool

	mu      sync.Mutex
	idle    []*poolG[T] // LIFO: the most recently used first
	q       []T         // queued pool: jobs no goroutine has taken yet, from q[qh]
	qh      int
	spare   int    // queued pool: goroutines woken or started that have not looked at q yet
	tick    uint64 // cleaning periods elapsed
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

// NewQueuedPool returns a pool running run for each job, in which jobs wait
// in a queue for the pool's goroutines (see Go).
func NewQueuedPool[T any](run func(T)) *Pool[T] {
	return &Pool[T]{run: run, period: PoolIdle, queued: true}
}

// Go runs j on an idle goroutine, or on a new one. After Stop it still
// runs j, on a goroutine that ends with it.
//
// In a queued pool, j joins the queue, and a goroutine is woken only when
// none is spare (woken and not yet at the queue). A goroutine takes the
// jobs one by one; whenever it takes one and leaves others queued, it makes
// sure a spare is awake, which takes over the queue if the job blocks. A
// burst of jobs queued while the pool's goroutines wait for the CPU (one P)
// so costs two wake-ups, not one per job, and a job that blocks still holds
// up no other: the spare runs as soon as it does.
func (p *Pool[T]) Go(j T) {
	p.mu.Lock()
	if p.queued && !p.stopped {
		p.push(j)
		if p.spare > 0 {
			p.mu.Unlock()
			return
		}
		p.wakeLocked() // unlocks
		return
	}
	if n := len(p.idle); n > 0 {
		g := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		g.ch <- j // never blocks: an idle goroutine's channel is empty
		return
	}
	p.startCleaner()
	p.mu.Unlock()
	go p.loop(&poolG[T]{ch: make(chan T, 1)}, j)
}

// push queues j (queued pool; p.mu held).
func (p *Pool[T]) push(j T) {
	if p.qh > 0 && len(p.q) == cap(p.q) {
		n := copy(p.q, p.q[p.qh:])
		clear(p.q[n:])
		p.q, p.qh = p.q[:n], 0
	}
	p.q = append(p.q, j)
}

// pop takes the next queued job (queued pool; p.mu held).
func (p *Pool[T]) pop() (j T, ok bool) {
	if p.qh == len(p.q) {
		return j, false
	}
	var zero T
	j, p.q[p.qh] = p.q[p.qh], zero
	if p.qh++; p.qh == len(p.q) {
		p.q, p.qh = p.q[:0], 0
	}
	return j, true
}

// wakeLocked makes one more goroutine spare: an idle one, or a new one.
// Called with p.mu held; returns with it released.
func (p *Pool[T]) wakeLocked() {
	p.spare++
	if n := len(p.idle); n > 0 {
		g := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		var wake T
		g.ch <- wake // never blocks: an idle goroutine's channel is empty
		return
	}
	p.startCleaner()
	p.mu.Unlock()
	go p.qloop(&poolG[T]{ch: make(chan T, 1)})
}

// startCleaner starts the cleaning goroutine once (p.mu held).
func (p *Pool[T]) startCleaner() {
	if !p.started && !p.stopped {
		p.started = true
		p.done = make(chan struct{})
		go p.clean()
	}
}

// qloop is a queued pool's goroutine: it starts spare, takes queued jobs
// while there are any, and waits as idle for the next wake-up (what is sent
// on its channel is only a wake-up; closed: end).
func (p *Pool[T]) qloop(g *poolG[T]) {
	p.mu.Lock()
	p.spare--
	for {
		j, ok := p.pop()
		if !ok {
			if p.stopped {
				p.mu.Unlock()
				return
			}
			g.tick = p.tick
			p.idle = append(p.idle, g)
			p.mu.Unlock()
			if _, open := <-g.ch; !open {
				return
			}
			p.mu.Lock()
			p.spare--
			continue
		}
		if p.qh < len(p.q) && p.spare == 0 {
			p.wakeLocked() // someone to take the rest if j blocks
		} else {
			p.mu.Unlock()
		}
		p.run(j)
		p.mu.Lock()
	}
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
// job (in a queued pool: once the queue is empty). Idempotent.
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
