package master

import (
	"time"

	"github.com/forkd/forkd/internal/stall"
	"github.com/forkd/forkd/ipc"
)

// StateUnresponsive is a worker that has not answered the master's pings
// for --worker-timeout: it gets no new work, and if it stays silent for
// another --worker-timeout it is killed and replaced.
const StateUnresponsive = "unresponsive"

// Watchdog defaults.
const (
	DefaultWorkerTimeout  = 5 * time.Second
	DefaultRequestTimeout = 60 * time.Second
)

// watch pings p over its ipc stream for its whole life. A worker answers a
// Ping from its event loop (a goroutine of its own, through its ipc writer),
// not from its reader, so a Pong says the process runs, schedules and
// writes. Silent for WorkerTimeout: unresponsive (no new requests, tasks or
// connections go to it); silent for twice that: killed, with what it was
// doing logged, and replaced like a crashed worker. A starting or draining
// worker is not judged (start-up and drain have their own limits).
//
// Silence is counted only while the master itself ran: when this loop's
// ticks stop for a while (the master stopped, its container frozen, the
// machine suspended or swapping), the workers' answers could not be
// read either, so silence counts again from the resumption. Otherwise a
// master paused for twice --worker-timeout would kill every healthy
// worker, and their connections, when it resumed.
func (m *Master) watch(p *proc) {
	limit := m.opts.WorkerTimeout
	every := max(limit/5, 20*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	var seq uint32
	paused := stall.New(every, 0)
	paused.Tick(time.Now())
	for {
		select {
		case <-p.exited:
			return
		case <-t.C:
		}
		now := time.Now()
		paused.Tick(now)
		st := p.State()
		if st != StateReady && st != StateUnresponsive {
			p.lastPong.Store(now.UnixNano())
			continue
		}
		seq++
		p.out.Send(&ipc.Header{Type: ipc.TypePing, Seq: seq}, nil, nil)
		silent := now.Sub(paused.Since(time.Unix(0, p.lastPong.Load())))
		switch {
		case silent >= 2*limit:
			m.killHung(p, silent)
			return
		case silent >= limit && st == StateReady:
			if p.state.CompareAndSwap(StateReady, StateUnresponsive) {
				m.mode.detach(p)
				m.logHung(p, silent, "worker unresponsive: no new work for it")
			}
		case silent < limit && st == StateUnresponsive:
			if p.state.CompareAndSwap(StateUnresponsive, StateReady) {
				m.log.Warn().Int("worker", p.slot.id).Int("worker_pid", p.pid).Dur("silent", silent).Msg("worker answers again")
				if m.current(p.slot.id) == p && !p.drained.Load() {
					m.mode.reattach(p)
				}
			}
		}
	}
}

// pong records a worker's answer.
func (p *proc) pong() { p.lastPong.Store(time.Now().UnixNano()) }

// killHung kills a worker silent for too long; its exit replaces it.
func (m *Master) killHung(p *proc, silent time.Duration) {
	m.logHung(p, silent, "worker hung: killing and replacing it")
	p.setState(StateUnresponsive)
	m.mode.detach(p)
	p.kill()
}

// logHung logs what a silent worker was doing.
func (m *Master) logHung(p *proc, silent time.Duration, msg string) {
	p.mu.Lock()
	reqs, tasks, routes := len(p.calls), len(p.tasks), len(p.routes)
	p.mu.Unlock()
	ev := m.log.Error().Int("worker", p.slot.id).Int("worker_pid", p.pid).Str("kind", p.slot.kind()).
		Dur("silent", silent).Dur("timeout", m.opts.WorkerTimeout).
		Int("http_in_flight", reqs).Int("tasks_in_flight", tasks).Int("bus_ops_in_flight", routes).
		Int("bus_queued_bytes", p.out.Pending()).Dur("uptime", time.Since(p.start))
	if conns, msgs, ok := m.mode.pending(p); ok {
		ev = ev.Int("ws_conns_waiting", conns).Int("ws_messages_unhandled", msgs)
	}
	ev.Msg(msg)
}

// reattach routes work to p again (it answered after all).
func (b *procBackend) reattach(p *proc) {
	b.mu.Lock()
	b.serving[p.slot.id].CompareAndSwap(nil, p)
	b.cond.Broadcast()
	b.mu.Unlock()
}

// sweepRequests answers 504 to every HTTP request a worker has held for
// longer than RequestTimeout (PROCESS mode). One sweeper for all requests,
// not a timer per request (see reactor's sweeper for why).
func (m *Master) sweepRequests() {
	limit := m.opts.RequestTimeout
	every := min(max(limit/8, 10*time.Millisecond), time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	// A request's start is the backend's coarse clock (procBackend.clock),
	// which this loop advances: it is behind the real start by at most the
	// gap up to the next tick. Counting the largest gap that can still
	// matter against every request (gaps ending within the last limit: a
	// tick delayed under load makes one longer), none is answered 504
	// before it has been held limit; at most that gap plus a tick after.
	last := time.Now().UnixNano()
	if m.backend != nil {
		last = m.backend.clock.Load() // since then, requests carry its value
	}
	var gaps gapMax
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		gaps.add(now, now-last)
		last = now
		if m.backend != nil {
			m.backend.clock.Store(now)
		}
		cutoff := now - int64(limit) - gaps.max(now-int64(limit))
		m.mu.Lock()
		var procs []*proc
		for _, sl := range m.slots {
			if !sl.worker() {
				continue
			}
			for _, p := range append([]*proc{sl.cur, sl.next}, sl.old...) {
				if p != nil {
					procs = append(procs, p)
				}
			}
		}
		m.mu.Unlock()
		for _, p := range procs {
			var late []*httpCall
			p.mu.Lock()
			for seq, c := range p.calls {
				if c.start < cutoff {
					delete(p.calls, seq)
					late = append(late, c)
				}
			}
			p.mu.Unlock()
			if len(late) > 0 {
				m.log.Warn().Int("worker", p.slot.id).Int("worker_pid", p.pid).Int("requests", len(late)).
					Dur("request_timeout", limit).Msg("requests unanswered: 504")
			}
			for _, c := range late {
				c.timedOut = true
				c.done <- struct{}{}
			}
		}
	}
}

// gapMax is the largest of the gaps between sweep ticks that ended after a
// given time (a sliding window's maximum: a queue of gaps, each larger than
// every later one).
type gapMax struct{ q []tickGap }

type tickGap struct{ end, gap int64 }

func (g *gapMax) add(end, gap int64) {
	for len(g.q) > 0 && g.q[len(g.q)-1].gap <= gap {
		g.q = g.q[:len(g.q)-1]
	}
	g.q = append(g.q, tickGap{end, gap})
}

// max reports the largest gap that ended after since (the latest is always
// counted).
func (g *gapMax) max(since int64) int64 {
	for len(g.q) > 1 && g.q[0].end <= since {
		g.q = g.q[1:]
	}
	if len(g.q) == 0 {
		return 0
	}
	return g.q[0].gap
}
