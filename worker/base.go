package worker

import (
	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// baseHandler is the worker's reactor.Handler in BASE mode: the reactor in
// this process hands requests and messages straight to the user's code.
type baseHandler Worker

func (h *baseHandler) HTTP(l *reactor.Listener, ctx *fasthttp.RequestCtx) {
	w := (*Worker)(h)
	w.inflight.Add(1)
	defer w.inflight.Done()
	w.counted()
	if !w.serveHTTP(l.Index, ctx) {
		ctx.Response.Reset()
		ctx.Error("Internal Server Error", fasthttp.StatusInternalServerError)
	}
	if w.draining.Load() {
		ctx.SetConnectionClose()
	}
}

func (h *baseHandler) Open(rc *reactor.Conn) {
	w := (*Worker)(h)
	c := &Conn{id: rc.ID(), w: w, listener: rc.Listener().Index, hs: *rc.Handshake(), rc: rc}
	rc.Data = c
	w.inflight.Add(1)
	defer w.inflight.Done()
	w.guard(c, "OnOpen", func() { w.app.Open(c) })
}

func (h *baseHandler) Message(rc *reactor.Conn, op int, data []byte) {
	w := (*Worker)(h)
	c, _ := rc.Data.(*Conn)
	if c == nil {
		return
	}
	w.inflight.Add(1)
	defer w.inflight.Done()
	w.counted()
	t0 := mono() // the monotonic clock alone: time.Now reads the wall clock too
	w.guard(c, "OnMessage", func() { w.app.Message(c, op, data) })
	w.m.MessageLatency.Observe(mono() - t0)
}

func (h *baseHandler) Close(rc *reactor.Conn, code int, reason string) {
	w := (*Worker)(h)
	c, _ := rc.Data.(*Conn)
	if c == nil {
		return
	}
	c.closed.Store(true)
	w.guard(nil, "OnClose", func() { w.app.Close(c, code, reason) })
}

func (h *baseHandler) BufferFull(rc *reactor.Conn) {
	w := (*Worker)(h)
	if c, _ := rc.Data.(*Conn); c != nil {
		w.guard(nil, "OnBufferFull", func() { w.app.BufferFull(c) })
	}
}

func (h *baseHandler) BufferDrain(rc *reactor.Conn) {
	w := (*Worker)(h)
	if c, _ := rc.Data.(*Conn); c != nil {
		w.guard(nil, "OnBufferDrain", func() { w.app.BufferDrain(c) })
	}
}

// RoomChanged tells the master how many members of room this worker holds,
// so broadcasts go only to workers with members. While the room has members
// here it waits until the master has the count: a Join must not return (and
// its connection be told it is in) before the master routes the room's
// broadcasts here, or a broadcast from another worker right after could
// miss the new member. A room left empty, or a worker draining (whose
// master may be gone), reports without waiting: a late "0" only costs the
// master a frame to a worker with no member left.
func (h *baseHandler) RoomChanged(room string, members int) {
	w := (*Worker)(h)
	hd := ipc.Header{Type: ipc.TypeJoin, Flags: ipc.JoinCount, Arg: uint32(members)}
	if members > 0 && !w.draining.Load() {
		w.call(hd, []byte(room), nil, 0)
		return
	}
	w.out.SendWait(&hd, []byte(room), nil)
}
