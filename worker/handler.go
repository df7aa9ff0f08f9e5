package worker

import (
	"runtime/debug"

	"github.com/valyala/fasthttp"
)

// Code both modes use: the user's HTTP handler runs here whether the
// request came from this worker's reactor (BASE) or over ipc (PROCESS).

// serveHTTP runs the user's handler; a panic is logged with its stack and
// answered 500 (false).
func (w *Worker) serveHTTP(listener int, ctx *fasthttp.RequestCtx) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			w.log.Error().Str("in", "HTTP handler").Str("path", string(ctx.Path())).Str("stack", stack()).Msgf("panic: %v", p)
			ok = false
		}
	}()
	w.app.HTTP(w, listener, ctx)
	return true
}

func stack() string { return string(debug.Stack()) }
