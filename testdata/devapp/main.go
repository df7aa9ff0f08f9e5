// Command devapp is a test program for what a new user meets first: a
// program of their own with its own listener names and addresses (no
// "http" or "ws"), run through the library's CLI (help, errors, -d,
// restart, --watch, bench with other paths), and the guide's recipes
// (static files with compression, per-connection state that survives a
// PROCESS-mode reload). The root package's firsthour_test.go builds and
// drives it. It lives in testdata so `go build ./...` leaves it alone.
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd"
	_ "github.com/forkd/forkd/bench" // `devapp bench`: a program asks for the benchmark by importing it
)

// version is set by the --watch test's second build (-ldflags -X).
var version = "v1"

func main() {
	s := &forkd.Server{
		Name:  "devapp",
		Usage: "a test program with listeners of its own",
		Listeners: []*forkd.Listener{
			{Name: "api", Addr: "127.0.0.1:9611", Protocol: forkd.HTTP, Handler: serveHTTP, Label: "api root"},
			// events: a welcome on open and an echo; no OnResume, so a
			// connection a new worker takes over hears nothing new. Path
			// /e is a bare echo (for bench --ws-path /e).
			{Name: "events", Addr: "127.0.0.1:9612", Protocol: forkd.WebSocket,
				OnOpen: func(c *forkd.Conn) {
					if c.Path() != "/e" {
						c.SendText("welcome " + c.ID().String())
					}
				},
				OnMessage: func(c *forkd.Conn, t forkd.MessageType, data []byte) {
					c.Send(t, data)
				}},
			// state: the guide's per-connection state recipe.
			{Name: "state", Addr: "127.0.0.1:9613", Protocol: forkd.WebSocket,
				OnOpen: func(c *forkd.Conn) {
					c.SetContext(&session{name: c.Query("name")})
					c.SendText("hello " + c.Query("name"))
				},
				// A worker taking over the connection (PROCESS mode: a
				// reload or a crash) rebuilds the state from the handshake,
				// and greets nobody: the client saw nothing happen.
				OnResume: func(c *forkd.Conn) {
					c.SetContext(&session{name: c.Query("name")})
				},
				OnMessage: func(c *forkd.Conn, t forkd.MessageType, data []byte) {
					st, _ := c.Context().(*session)
					if st == nil {
						c.SendText("no state")
						return
					}
					st.mu.Lock()
					st.count++
					n := st.count
					st.mu.Unlock()
					c.SendText(fmt.Sprintf("%s #%d: %s", st.name, n, data))
				}},
		},
		OnWorkerStart: func(w *forkd.Worker) error {
			static = newStatic()
			return nil
		},
	}
	if err := s.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "devapp:", err)
		os.Exit(1)
	}
}

// session is what a "state" connection carries.
type session struct {
	mu    sync.Mutex
	name  string
	count int // messages since this worker took the connection
}

// static serves DEVAPP_STATIC under /static/ (the guide's recipe), with
// gzip and brotli for clients that accept them.
var static fasthttp.RequestHandler

func newStatic() fasthttp.RequestHandler {
	root := os.Getenv("DEVAPP_STATIC")
	if root == "" {
		return nil
	}
	fs := &fasthttp.FS{
		Root:           root,
		PathRewrite:    fasthttp.NewPathPrefixStripper(len("/static")),
		Compress:       true,
		CompressBrotli: true,
		CompressRoot:   os.Getenv("DEVAPP_STATIC_CACHE"), // compressed copies
	}
	return fs.NewRequestHandler()
}

func serveHTTP(w *forkd.Worker, ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	switch {
	case path == "/ping":
		ctx.Response.Header.Set("X-Worker-Pid", strconv.Itoa(w.Pid()))
		ctx.SetBodyString("pong")
	case path == "/version":
		ctx.SetBodyString(version)
	case path == "/push":
		id, err := forkd.ParseConnID(string(ctx.QueryArgs().Peek("conn")))
		if err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadRequest)
			return
		}
		if err := w.Push(id, forkd.TextMessage, ctx.PostBody()); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusNotFound)
			return
		}
		ctx.SetBodyString("ok")
	case len(path) > len("/static/") && path[:len("/static/")] == "/static/" && static != nil:
		static(ctx)
	default:
		ctx.Error("not found", fasthttp.StatusNotFound)
	}
}
