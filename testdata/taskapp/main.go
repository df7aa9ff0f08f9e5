// Command taskapp is a test program for package forkd's worker API: tasks
// (Task with its done callback, TaskWait, TaskWaitMulti), timers (Tick,
// After, ClearTimer), pipe messages (SendMessage, OnPipeMessage) and the
// Sender from a task worker. Each HTTP endpoint runs one scenario in the
// worker that serves it and answers with what happened, as JSON; the
// root package's api_test.go builds and drives it. It lives in testdata so
// `go build ./...` and `go vet ./...` leave it alone.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd"
)

func main() {
	s := &forkd.Server{
		Name: "taskapp",
		Listeners: []*forkd.Listener{
			{Name: "http", Addr: "127.0.0.1:9511", Protocol: forkd.HTTP, Handler: serveHTTP},
			{Name: "ws", Addr: "127.0.0.1:9512", Protocol: forkd.WebSocket, OnOpen: onOpen,
				OnMessage: func(c *forkd.Conn, t forkd.MessageType, data []byte) { c.Send(t, data) }},
		},
		OnTask:        onTask,
		OnPipeMessage: onPipeMessage,
	}
	if err := s.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "taskapp:", err)
		os.Exit(1)
	}
}

// kind names an API error for the test to compare.
func kind(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, forkd.ErrTimeout):
		return "timeout"
	case errors.Is(err, forkd.ErrTaskFailed):
		return "failed"
	case errors.Is(err, forkd.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, forkd.ErrNoConnection):
		return "noconn"
	case errors.Is(err, forkd.ErrClosed):
		return "closed"
	case errors.Is(err, forkd.ErrBufferFull):
		return "full"
	}
	return "other"
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func onOpen(c *forkd.Conn) {
	b, _ := json.Marshal(map[string]any{"conn": c.ID().String(), "worker": c.Worker().ID()})
	c.Send(forkd.TextMessage, b)
}

// onTask runs in a task worker: "echo|X", "sleep|MS", "fail|MSG", "panic",
// "push|CONN|TEXT" (the Sender from a task worker) and "pipe|TO|TOKEN" (a
// pipe message from a task worker).
func onTask(w *forkd.Worker, from int, data []byte) ([]byte, error) {
	op, arg, _ := strings.Cut(string(data), "|")
	switch op {
	case "echo":
		return []byte(fmt.Sprintf("%s@%d<-%d", arg, w.ID(), from)), nil
	case "sleep":
		ms, _ := strconv.Atoi(arg)
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return []byte(strconv.Itoa(w.ID())), nil
	case "fail":
		return nil, errors.New(arg)
	case "panic":
		panic("deliberate panic in OnTask")
	case "push":
		idText, text, _ := strings.Cut(arg, "|")
		id, err := forkd.ParseConnID(idText)
		if err != nil {
			return nil, err
		}
		err = w.Push(id, forkd.TextMessage, []byte(text))
		return []byte(kind(err)), nil
	case "pipe":
		to, token, _ := strings.Cut(arg, "|")
		n, _ := strconv.Atoi(to)
		err := w.SendMessage(n, []byte("pong|"+token+"|"+strconv.Itoa(w.ID())))
		return []byte(kind(err)), nil
	}
	return nil, fmt.Errorf("unknown task %q", data)
}

// Pipe messages: "ping|TOKEN" is answered to its sender with
// "pong|TOKEN|ID"; a pong wakes the request waiting for TOKEN.
type pong struct {
	From   int // OnPipeMessage's from
	Worker int // the id the answering process put in the pong
}

var (
	waitersMu sync.Mutex
	waiters   = map[string]chan pong{}
	tokens    atomic.Uint64
)

func expect() (string, chan pong) {
	token := strconv.FormatUint(tokens.Add(1), 10) + "-" + strconv.Itoa(os.Getpid())
	ch := make(chan pong, 1)
	waitersMu.Lock()
	waiters[token] = ch
	waitersMu.Unlock()
	return token, ch
}

func forget(token string) {
	waitersMu.Lock()
	delete(waiters, token)
	waitersMu.Unlock()
}

func onPipeMessage(w *forkd.Worker, from int, data []byte) {
	parts := strings.Split(string(data), "|")
	switch {
	case len(parts) == 2 && parts[0] == "ping":
		if err := w.SendMessage(from, []byte("pong|"+parts[1]+"|"+strconv.Itoa(w.ID()))); err != nil {
			w.Log().Error().Err(err).Int("to", from).Msg("pong failed")
		}
	case len(parts) == 3 && parts[0] == "ping": // from another cluster node: ping|TOKEN|NODE
		node, _ := strconv.Atoi(parts[2])
		if err := w.SendMessageNode(node, from, []byte("pong|"+parts[1]+"|"+strconv.Itoa(w.ID()))); err != nil {
			w.Log().Error().Err(err).Int("node", node).Int("to", from).Msg("pong failed")
		}
	case len(parts) == 3 && parts[0] == "pong":
		id, _ := strconv.Atoi(parts[2])
		waitersMu.Lock()
		ch := waiters[parts[1]]
		waitersMu.Unlock()
		if ch != nil {
			ch <- pong{From: from, Worker: id}
		}
	}
}

func reply(ctx *fasthttp.RequestCtx, w *forkd.Worker, v map[string]any) {
	v["worker"] = w.ID()
	b, _ := json.Marshal(v)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func serveHTTP(w *forkd.Worker, ctx *fasthttp.RequestCtx) {
	q := ctx.QueryArgs()
	timeout := time.Duration(q.GetUintOrZero("timeout")) * time.Millisecond
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	switch string(ctx.Path()) {
	case "/hello":
		ctx.Response.Header.Set("X-Worker-Id", strconv.Itoa(w.ID()))
		ctx.SetBodyString("hello")

	case "/remote": // the client's address, as the handler sees it
		reply(ctx, w, map[string]any{"addr": ctx.RemoteAddr().String(), "ip": ctx.RemoteIP().String()})

	case "/task": // fire-and-forget with a done callback (onFinish)
		type fin struct {
			res  []byte
			err  error
			pid  int
			when time.Duration
		}
		done := make(chan fin, 1)
		start := time.Now()
		w.Task(q.Peek("data"), timeout, func(res []byte, err error) {
			done <- fin{res, err, os.Getpid(), time.Since(start)}
		})
		returned := time.Since(start)
		select {
		case f := <-done:
			reply(ctx, w, map[string]any{"returned_ms": ms(returned), "finished_ms": ms(f.when),
				"result": string(f.res), "err": errText(f.err), "kind": kind(f.err), "same_process": f.pid == os.Getpid()})
		case <-time.After(timeout + 5*time.Second):
			reply(ctx, w, map[string]any{"returned_ms": ms(returned), "kind": "never finished"})
		}

	case "/taskwait":
		start := time.Now()
		res, err := w.TaskWait(q.Peek("data"), timeout)
		reply(ctx, w, map[string]any{"result": string(res), "err": errText(err), "kind": kind(err), "took_ms": ms(time.Since(start))})

	case "/multi":
		var datas [][]byte
		for _, d := range q.PeekMulti("d") {
			datas = append(datas, append([]byte(nil), d...))
		}
		start := time.Now()
		res, errs := w.TaskWaitMulti(datas, timeout)
		results, kinds, texts := []string{}, []string{}, []string{}
		for i := range res {
			results = append(results, string(res[i]))
			kinds = append(kinds, kind(errs[i]))
			texts = append(texts, errText(errs[i]))
		}
		reply(ctx, w, map[string]any{"results": results, "kinds": kinds, "errs": texts, "took_ms": ms(time.Since(start))})

	case "/timers":
		reply(ctx, w, timers(w))

	case "/pipe": // SendMessage to worker ?to=, which answers with a pong
		to := q.GetUintOrZero("to")
		if t := string(q.Peek("to")); t == "-1" {
			to = -1
		}
		token, ch := expect()
		defer forget(token)
		send := func() error { return w.SendMessage(to, []byte("ping|"+token)) }
		if node := q.GetUintOrZero("node"); node != 0 { // a worker of another cluster node
			send = func() error { return w.SendMessageNode(node, to, []byte("ping|"+token+"|"+strconv.Itoa(w.Node()))) }
		}
		if err := send(); err != nil {
			reply(ctx, w, map[string]any{"to": to, "err": errText(err), "kind": kind(err)})
			return
		}
		select {
		case p := <-ch:
			reply(ctx, w, map[string]any{"to": to, "kind": "ok", "pong_from": p.From, "pong_worker": p.Worker})
		case <-time.After(timeout):
			reply(ctx, w, map[string]any{"to": to, "kind": "no pong"})
		}

	case "/taskpipe": // a task worker sends this worker a pipe message
		token, ch := expect()
		defer forget(token)
		res, err := w.TaskWait([]byte("pipe|"+strconv.Itoa(w.ID())+"|"+token), timeout)
		if err != nil {
			reply(ctx, w, map[string]any{"err": errText(err), "kind": kind(err)})
			return
		}
		select {
		case p := <-ch:
			reply(ctx, w, map[string]any{"kind": string(res), "pong_from": p.From, "pong_worker": p.Worker})
		case <-time.After(timeout):
			reply(ctx, w, map[string]any{"kind": "no pipe message"})
		}

	case "/connop": // ?op=exists|join|leave|count|close on ?conn= (any worker, any cluster node), ?room=
		id, err := forkd.ParseConnID(string(q.Peek("conn")))
		if err != nil {
			ctx.Error("bad conn", fasthttp.StatusBadRequest)
			return
		}
		room := string(q.Peek("room"))
		switch string(q.Peek("op")) {
		case "exists":
			reply(ctx, w, map[string]any{"exists": w.Exists(id)})
		case "join":
			err = w.Join(id, room)
			reply(ctx, w, map[string]any{"kind": kind(err)})
		case "leave":
			err = w.Leave(id, room)
			reply(ctx, w, map[string]any{"kind": kind(err)})
		case "count":
			n, err := w.RoomCount(room)
			reply(ctx, w, map[string]any{"count": n, "kind": kind(err)})
		case "close":
			err = w.Close(id, 4000, "closed from afar")
			reply(ctx, w, map[string]any{"kind": kind(err)})
		default:
			ctx.Error("bad op", fasthttp.StatusBadRequest)
		}

	case "/taskpush": // a task worker pushes to ?conn=
		res, err := w.TaskWait([]byte("push|"+string(q.Peek("conn"))+"|"+string(q.Peek("text"))), timeout)
		reply(ctx, w, map[string]any{"result": string(res), "kind": kind(err), "err": errText(err)})

	default:
		ctx.Error("Not Found", fasthttp.StatusNotFound)
	}
}

// timers runs the timer scenario in this worker: a 50ms Tick, a slow 50ms
// Tick (its callback takes 200ms), an After(150ms), an After cleared before
// it fires; after 600ms the ticks are cleared and, 300ms later, counted.
func timers(w *forkd.Worker) map[string]any {
	var mu sync.Mutex
	var ticks []float64
	var slow atomic.Int32
	var afterAt atomic.Int64
	var clearedFired atomic.Bool
	stats := func() int {
		var st struct {
			Timers int `json:"timers"`
		}
		json.Unmarshal(w.Stats(), &st)
		return st.Timers
	}
	before := stats()
	t0 := time.Now()
	tick := w.Tick(50*time.Millisecond, func() {
		mu.Lock()
		ticks = append(ticks, ms(time.Since(t0)))
		mu.Unlock()
	})
	slowID := w.Tick(50*time.Millisecond, func() {
		slow.Add(1)
		time.Sleep(200 * time.Millisecond)
	})
	after := w.After(150*time.Millisecond, func() { afterAt.Store(int64(time.Since(t0))) })
	gone := w.After(100*time.Millisecond, func() { clearedFired.Store(true) })
	clearedGone := w.ClearTimer(gone)
	during := stats()
	time.Sleep(600 * time.Millisecond)
	clear1 := w.ClearTimer(tick)
	clear2 := w.ClearTimer(tick)
	w.ClearTimer(slowID)
	mu.Lock()
	atClear := len(ticks)
	mu.Unlock()
	slowAtClear := slow.Load()
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	return map[string]any{
		"ticks_ms":          ticks,
		"ticks_at_clear":    atClear,
		"ticks_after_clear": len(ticks) - atClear,
		"slow_runs":         slowAtClear,
		"slow_after_clear":  slow.Load() - slowAtClear,
		"after_ms":          ms(time.Duration(afterAt.Load())),
		"clear_after_fired": w.ClearTimer(after),
		"cleared_fired":     clearedFired.Load(),
		"clear_pending":     clearedGone,
		"clear_first":       clear1,
		"clear_again":       clear2,
		"timers_before":     before,
		"timers_during":     during,
		"timers_after":      stats(),
	}
}
