package forkd

import (
	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd/worker"
)

// app adapts a Server to the worker machinery.
type app struct {
	s *Server
	w *Worker
}

var _ worker.App = (*app)(nil)

func (a *app) WorkerStart(w *worker.Worker) error {
	a.w = &Worker{w: w, s: a.s}
	w.Ext = a.w
	g, err := NewAPIGuard(w.APIToken(), w.Config().APIAllow)
	if err != nil {
		return err
	}
	a.w.api = g
	if w.IsProcess() {
		return nil // a user process starts with its Run, not OnWorkerStart
	}
	if a.s.OnWorkerStart != nil {
		return a.s.OnWorkerStart(a.w)
	}
	return nil
}

func (a *app) WorkerStop(w *worker.Worker, reload bool) {
	if w.IsProcess() {
		return
	}
	if reload && a.s.OnWorkerReload != nil {
		a.s.OnWorkerReload(a.w)
	}
	if a.s.OnWorkerStop != nil {
		a.s.OnWorkerStop(a.w)
	}
}

func (a *app) HTTP(w *worker.Worker, listener int, ctx *fasthttp.RequestCtx) {
	if listener < 0 || listener >= len(a.s.Listeners) || a.s.Listeners[listener].Handler == nil {
		ctx.Error("Not Found", fasthttp.StatusNotFound)
		return
	}
	if ls := w.Config().Listeners; listener < len(ls) && ls[listener].TLS {
		// The request came over TLS (terminated by the master in PROCESS
		// mode): ctx.URI() says https. ctx.IsTLS() does not know.
		ctx.URI().SetScheme("https")
	}
	a.s.Listeners[listener].Handler(a.w, ctx)
}

func (a *app) listener(c *worker.Conn) *Listener {
	i := c.Listener()
	if i < 0 || i >= len(a.s.Listeners) {
		return &Listener{}
	}
	return a.s.callbacks(a.s.Listeners[i])
}

func (a *app) Open(c *worker.Conn) {
	if l := a.listener(c); l.OnOpen != nil {
		l.OnOpen(a.w.conn(c))
	}
}

// Resume runs OnResume only: a resumed connection is not a new one, so
// without OnResume nothing runs (OnOpen's welcome, join announcements and
// the like must not happen again on every reload).
func (a *app) Resume(c *worker.Conn) {
	if l := a.listener(c); l.OnResume != nil {
		l.OnResume(a.w.conn(c))
	}
}

func (a *app) Message(c *worker.Conn, op int, data []byte) {
	if l := a.listener(c); l.OnMessage != nil {
		l.OnMessage(a.w.conn(c), MessageType(op), data)
	}
}

func (a *app) Close(c *worker.Conn, code int, reason string) {
	if l := a.listener(c); l.OnClose != nil {
		l.OnClose(a.w.conn(c), code, reason)
	}
}

func (a *app) BufferFull(c *worker.Conn) {
	if a.s.OnBufferFull != nil {
		a.s.OnBufferFull(a.w.conn(c))
	}
}

func (a *app) BufferDrain(c *worker.Conn) {
	if a.s.OnBufferDrain != nil {
		a.s.OnBufferDrain(a.w.conn(c))
	}
}

func (a *app) PipeMessage(w *worker.Worker, from int, data []byte) {
	if p := a.s.process(w.Config().Process); p != nil && p.OnPipeMessage != nil {
		p.OnPipeMessage(a.w, from, data)
		return
	}
	if a.s.OnPipeMessage != nil {
		a.s.OnPipeMessage(a.w, from, data)
	}
}

func (a *app) Task(w *worker.Worker, from int, data []byte) ([]byte, error) {
	if a.s.OnTask == nil {
		return nil, ErrUnavailable
	}
	return a.s.OnTask(a.w, from, data)
}
