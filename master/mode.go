package master

import (
	"context"
	"fmt"
	"time"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// mode is everything that differs between PROCESS and BASE in the master:
// where the workers' connections come from, and so how work reaches a
// worker and how the stop treats connections. The rest of the master calls
// it without asking which mode runs (m.mode, set by New).
type mode interface {
	// open opens the listeners (after the shared checks of openListeners).
	open() error
	// firstLease is the first connection-id lease of a worker incarnation
	// of slot sl (0: it allocates none).
	firstLease(sl *slot) uint64
	// serve begins taking connections, once every worker is ready.
	serve()
	// attach makes p the worker serving its slot; detach stops routing
	// new work to it (drain); gone runs once its ipc stream has ended.
	attach(p *proc)
	detach(p *proc)
	gone(p *proc)
	// reattach routes work to p again (the watchdog found it unresponsive,
	// and it answered after all); pending is what waits on p (for the
	// watchdog's log): WebSockets and their unhandled messages.
	reattach(p *proc)
	pending(p *proc) (conns, msgs int, ok bool)
	// stopConns ends the connections the master holds at a stop:
	// gracefully within wait, or now. wakeAll first releases anything
	// waiting for a worker.
	wakeAll()
	stopConns(graceful bool, wait time.Duration)
	// conns is the master's own view of the connections, for status:
	// per slot and in total; false when the workers hold them (ask them).
	conns() (perSlot map[int]int, total int, ok bool)
	// list lists every open connection; false when the workers hold them.
	list() ([]reactor.Info, bool)
	// fromWorker takes the frames only this mode's workers send
	// (PROCESS: Response, Credit, and the credit of a SendCredit).
	fromWorker(p *proc, f ipc.Frame)
	// dispatchName is how connections reach workers, as status shows it.
	dispatchName() string
	// Bus: the bus operations' local route in this mode.
	Bus
}

// Bus routes a worker's bus operation (Push, Close, Query, Join, Leave,
// Broadcast, Count, UID, Session) to whoever owns the connection or room,
// and answers
// the worker that asked. The two local buses are the modes' (PROCESS: the
// master's reactor owns every connection, busProcess; BASE: each worker
// owns its own and the master forwards by the id's owner, busBase). A
// cluster backend implements Bus too and is put in m.bus, wrapping the
// local one.
type Bus interface {
	Route(from *proc, f ipc.Frame)
}

func newMode(m *Master) mode {
	if m.opts.Mode == ModeBase {
		return baseMode{m}
	}
	return processMode{m}
}

// processMode: the master's reactor (m.reactor) takes every connection and
// m.backend hands requests and messages to the workers over ipc.
type processMode struct{ m *Master }

func (pm processMode) open() error                { return pm.m.openProcess() }
func (pm processMode) firstLease(*slot) uint64    { return 0 }
func (pm processMode) serve()                     { pm.m.serveReactor() }
func (pm processMode) Route(p *proc, f ipc.Frame) { pm.m.busProcess(p, f) }

func (pm processMode) attach(p *proc) {
	if p.slot.worker() {
		pm.m.backend.attach(p)
	}
}

func (pm processMode) detach(p *proc) { pm.m.backend.detach(p) }

func (pm processMode) fromWorker(p *proc, f ipc.Frame) {
	switch f.Type {
	case ipc.TypeResponse:
		pm.m.backend.response(p, f)
	case ipc.TypeCredit, ipc.TypeSendCredit:
		pm.m.backend.credit(p, f)
	}
}

func (pm processMode) gone(p *proc) {
	if p.slot.worker() {
		pm.m.backend.detach(p)
		pm.m.backend.fail(p)
		pm.m.backend.wakeFlows(p)
	}
}

func (pm processMode) reattach(p *proc) {
	if p.slot.worker() {
		pm.m.backend.reattach(p)
	}
}

func (pm processMode) pending(p *proc) (int, int, bool) {
	if !p.slot.worker() {
		return 0, 0, false
	}
	conns, msgs := pm.m.backend.pending(p)
	return conns, msgs, true
}

func (pm processMode) wakeAll() { pm.m.backend.wakeAll() }

func (pm processMode) stopConns(graceful bool, wait time.Duration) {
	r := pm.m.reactor
	if graceful {
		r.Drain()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		r.Wait(ctx)
		cancel()
	}
	r.Close()
}

func (pm processMode) conns() (map[int]int, int, bool) {
	perSlot := map[int]int{}
	pm.m.reactor.Each(func(c *reactor.Conn) {
		if c.IsWebSocket() {
			perSlot[int(c.Slot.Load())]++
		}
	})
	return perSlot, pm.m.reactor.Len(), true
}

func (pm processMode) list() ([]reactor.Info, bool) {
	out := []reactor.Info{}
	pm.m.reactor.Each(func(c *reactor.Conn) { out = append(out, c.Info(int(c.Slot.Load()))) })
	return out, true
}

func (pm processMode) dispatchName() string { return string(pm.m.dispatch) }

// baseMode: every worker accepts on its own SO_REUSEPORT sockets and owns
// its connections; the master holds none and routes the bus by id owner.
type baseMode struct{ m *Master }

func (bm baseMode) open() error                     { return bm.m.openBase() }
func (bm baseMode) serve()                          {}
func (bm baseMode) attach(*proc)                    {}
func (bm baseMode) detach(*proc)                    {}
func (bm baseMode) gone(*proc)                      {}
func (bm baseMode) reattach(*proc)                  {}
func (bm baseMode) pending(*proc) (int, int, bool)  { return 0, 0, false }
func (bm baseMode) fromWorker(*proc, ipc.Frame)     {}
func (bm baseMode) wakeAll()                        {}
func (bm baseMode) stopConns(bool, time.Duration)   {}
func (bm baseMode) Route(p *proc, f ipc.Frame)      { bm.m.busBase(p, f) }
func (bm baseMode) conns() (map[int]int, int, bool) { return nil, 0, false }
func (bm baseMode) list() ([]reactor.Info, bool)    { return nil, false }
func (bm baseMode) dispatchName() string            { return "kernel (SO_REUSEPORT)" }

func (bm baseMode) firstLease(sl *slot) uint64 {
	if sl.task {
		return 0
	}
	// The incarnation's first connection-id lease (see idAllocator).
	id, _ := bm.m.ids.lease()
	return id
}

// Dispatch is how PROCESS mode picks the worker for a request or a new
// WebSocket (--dispatch).
type Dispatch string

// Dispatch modes.
const (
	DispatchFD         Dispatch = "fd"          // sticky per connection (the default)
	DispatchRoundRobin Dispatch = "round-robin" // each in turn
	DispatchIP         Dispatch = "ip"          // sticky per client address
	DispatchIdle       Dispatch = "idle"        // the worker with the fewest requests in flight
)

// ParseDispatch reads a --dispatch value ("": DispatchFD).
func ParseDispatch(s string) (Dispatch, error) {
	switch d := Dispatch(s); d {
	case "":
		return DispatchFD, nil
	case DispatchFD, DispatchRoundRobin, DispatchIP, DispatchIdle:
		return d, nil
	}
	return "", fmt.Errorf("master: unknown dispatch mode %q (want round-robin, fd, ip or idle)", s)
}
