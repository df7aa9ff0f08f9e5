package forkd_test

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd"
)

// A WebSocket echo server with an HTTP port that also accepts upgrades. Run
// hands over to the command line: `prog start --workers 4`, `prog reload`,
// `prog status`, ... The same main runs in the master and, re-executed, in
// every worker: open per-process resources in OnWorkerStart, not before
// Run.
func Example_echo() {
	s := &forkd.Server{
		Listeners: []*forkd.Listener{
			{Name: "http", Addr: "0.0.0.0:9501", Protocol: forkd.HTTP,
				// Threading: a goroutine per request, in a worker; may block.
				Handler: func(w *forkd.Worker, ctx *fasthttp.RequestCtx) {
					ctx.SetBodyString("hello from worker " + strconv.Itoa(w.ID()))
				}},
			{Name: "ws", Addr: "0.0.0.0:9502", Protocol: forkd.WebSocket,
				OnOpen: func(c *forkd.Conn) {
					// Once per connection: a PROCESS-mode reload or crash
					// hands it to another worker without running OnOpen
					// again (OnResume runs, if set). The id is valid in
					// every process: any worker can Push to it or Close it.
					c.SendText("welcome, " + c.ID().String())
				},
				// One connection's callbacks run one at a time, in order.
				OnMessage: func(c *forkd.Conn, t forkd.MessageType, data []byte) {
					if err := c.Send(t, data); err != nil {
						c.Worker().Log().Warn().Err(err).Msg("echo failed")
					}
				},
				OnClose: func(c *forkd.Conn, code int, reason string) {},
			},
		},
		OnWorkerStart: func(w *forkd.Worker) error {
			// Open databases and the like here: this runs in each worker.
			return nil
		},
	}
	if err := s.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// Workers talk to each other with pipe messages (Swoole's sendMessage and
// onPipeMessage), hand slow jobs to task workers (task, taskwait, onTask,
// onFinish) and run timers (Workerman's Timer::add and Timer::del). Every
// call reports its real outcome as an error to test with errors.Is.
func Example_pipeMessage() {
	s := &forkd.Server{
		Listeners: []*forkd.Listener{{Name: "http", Addr: "0.0.0.0:9501", Protocol: forkd.HTTP,
			Handler: func(w *forkd.Worker, ctx *fasthttp.RequestCtx) {
				// Tell the next worker; ErrUnavailable for a bad id.
				next := (w.ID() + 1) % w.Workers()
				if err := w.SendMessage(next, []byte("hello")); err != nil {
					ctx.Error(err.Error(), fasthttp.StatusServiceUnavailable)
					return
				}
				// Run a job in a task worker and wait for its result.
				res, err := w.TaskWait([]byte("resize image 42"), 2*time.Second)
				if err != nil { // ErrTimeout, ErrUnavailable, ErrTaskFailed, ...
					ctx.Error(err.Error(), fasthttp.StatusBadGateway)
					return
				}
				// Or fire and forget, with a callback in this worker.
				w.Task([]byte("send mail"), 0, func(result []byte, err error) {
					w.Log().Info().Bytes("result", result).AnErr("err", err).Msg("task finished")
				})
				ctx.SetBody(res)
			}}},
		// Threading: a goroutine per message, in the receiving process.
		OnPipeMessage: func(w *forkd.Worker, from int, data []byte) {
			w.Log().Info().Int("from", from).Bytes("data", data).Msg("pipe message")
		},
		// Threading: in a task worker, one task at a time; may block.
		OnTask: func(w *forkd.Worker, from int, data []byte) ([]byte, error) {
			return []byte("done: " + string(data)), nil
		},
		OnWorkerStart: func(w *forkd.Worker) error {
			if !w.IsTask() {
				// A timer in this process, cleared when it stops.
				id := w.Tick(time.Minute, func() { w.Log().Info().RawJSON("stats", w.Stats()).Msg("stats") })
				_ = id // w.ClearTimer(id) stops it
			}
			return nil
		},
	}
	if err := s.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// An https/wss server whose operator endpoint is locked: `prog start
// --user www-data` with FORKD_API_TOKEN set. The master reads the key
// files (and re-reads them on `prog reload`); workers never do. /kick
// answers 403 to other hosts, and with a token 401 without it.
func Example_secure() {
	s := &forkd.Server{
		Listeners: []*forkd.Listener{
			{Name: "https", Addr: "0.0.0.0:443", Protocol: forkd.HTTP,
				TLSCert: "/etc/ssl/example.com/fullchain.pem",
				TLSKey:  "/etc/ssl/example.com/privkey.pem",
				Handler: func(w *forkd.Worker, ctx *fasthttp.RequestCtx) {
					if string(ctx.Path()) != "/kick" {
						ctx.SetBodyString("hello over TLS")
						return
					}
					if !w.API().Check(ctx) { // 401 or 403, already answered
						return
					}
					id, err := forkd.ParseConnID(string(ctx.QueryArgs().Peek("conn")))
					if err != nil {
						ctx.Error("bad conn id", fasthttp.StatusBadRequest)
						return
					}
					if err := w.Close(id, forkd.ClosePolicy, "kicked"); err != nil {
						ctx.Error(err.Error(), fasthttp.StatusNotFound)
					}
				},
				// wss by upgrade on the same port; the Origin must be this
				// server unless --allowed-origins says otherwise.
				OnMessage: func(c *forkd.Conn, t forkd.MessageType, data []byte) { c.Send(t, data) },
			},
		},
	}
	if err := s.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
