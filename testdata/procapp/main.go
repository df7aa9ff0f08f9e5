// Command procapp is a test program for user processes (Server.Processes):
// a process named "relay" takes pipe messages from workers and acts on the
// bus for them — `push ID TEXT` pushes TEXT to connection ID, `room R TEXT`
// broadcasts TEXT to room R — then answers the sending worker with a pipe
// message `ack TEXT`. GET /relay?cmd=... sends one command from the worker
// serving it and answers with the ack it got back (504 without one in 5s).
// WebSocket clients are sent their connection id first and join room
// "all". The root package's process_test.go builds and drives it; it lives
// in testdata so `go build ./...` leaves it alone.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd"
)

// acks are the relay's answers awaited by this worker's /relay requests,
// by the command's text.
var acks = struct {
	sync.Mutex
	m map[string]chan string
}{m: map[string]chan string{}}

func main() {
	s := &forkd.Server{
		Name: "procapp",
		Listeners: []*forkd.Listener{
			{Name: "http", Addr: "127.0.0.1:9521", Protocol: forkd.HTTP, Handler: serveHTTP},
			{Name: "ws", Addr: "127.0.0.1:9522", Protocol: forkd.WebSocket,
				OnOpen: func(c *forkd.Conn) {
					c.Worker().Join(c.ID(), "all")
					c.Send(forkd.TextMessage, []byte(c.ID().String()))
				}},
		},
		OnTask: func(w *forkd.Worker, from int, data []byte) ([]byte, error) { return data, nil },
		OnPipeMessage: func(w *forkd.Worker, from int, data []byte) {
			text, ok := strings.CutPrefix(string(data), "ack ")
			if !ok {
				return
			}
			acks.Lock()
			ch := acks.m[text]
			acks.Unlock()
			if ch != nil {
				ch <- string(data)
			}
		},
		Processes: []*forkd.Process{{
			Name: "relay",
			Run: func(ctx context.Context, w *forkd.Worker) error {
				w.Log().Info().Str("process", w.ProcessName()).Msg("relay running")
				<-ctx.Done() // a queue consumer would loop on its queue here
				return nil
			},
			OnPipeMessage: relay,
		}},
	}
	if err := s.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "procapp:", err)
		os.Exit(1)
	}
}

// relay runs in the user process: one command from a worker.
func relay(w *forkd.Worker, from int, data []byte) {
	verb, rest, _ := strings.Cut(string(data), " ")
	target, text, _ := strings.Cut(rest, " ")
	var err error
	switch verb {
	case "push":
		var id forkd.ConnID
		if id, err = forkd.ParseConnID(target); err == nil {
			err = w.Push(id, forkd.TextMessage, []byte(text))
		}
	case "room":
		_, err = w.Broadcast(target, forkd.TextMessage, []byte(text), 0)
	default:
		err = fmt.Errorf("unknown command %q", verb)
	}
	reply := "ack " + text
	if err != nil {
		reply += " error: " + err.Error()
	}
	w.SendMessage(from, []byte(reply))
}

func serveHTTP(w *forkd.Worker, ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/hello":
		ctx.SetBodyString("hello")
	case "/relay":
		cmd := string(ctx.QueryArgs().Peek("cmd"))
		_, rest, _ := strings.Cut(cmd, " ")
		_, text, _ := strings.Cut(rest, " ")
		ch := make(chan string, 1)
		acks.Lock()
		acks.m[text] = ch
		acks.Unlock()
		defer func() {
			acks.Lock()
			delete(acks.m, text)
			acks.Unlock()
		}()
		if err := w.SendMessage(w.ProcessID("relay"), []byte(cmd)); err != nil {
			ctx.Error("send to relay: "+err.Error(), fasthttp.StatusServiceUnavailable)
			return
		}
		select {
		case a := <-ch:
			ctx.SetBodyString(a)
		case <-time.After(5 * time.Second):
			ctx.Error("no ack from relay", fasthttp.StatusGatewayTimeout)
		}
	default:
		ctx.Error("Not Found", fasthttp.StatusNotFound)
	}
}
