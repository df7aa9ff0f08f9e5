package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/urfave/cli/v2"
	"github.com/valyala/fasthttp"
)

// The test binary doubles as a stand-in for the server binary (TestMain runs
// helperMain when helperEnv is set): `bench-baseline` runs Baseline, and
// `start`, `status --json` and `stop` run a single-process fake of the
// built-in application, chat included, so Run's whole path (spawn, readiness,
// status, every scenario, stop, report) is exercised without the real server.

const helperEnv = "FORKD_BENCH_TEST_HELPER"

func helperMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "helper: no command")
		return 2
	}
	if args[0] == clientCommandName { // the real load generator child
		app := &cli.App{Name: "helper", Commands: []*cli.Command{clientCommand()}}
		if err := app.Run(append([]string{"helper"}, args...)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	httpAddr := fs.String("http", "", "")
	wsAddr := fs.String("ws", "", "")
	mode := fs.String("mode", "process", "")
	workers := fs.Int("workers", 1, "")
	runDir := fs.String("run-dir", "", "")
	fs.String("log-level", "", "")
	fs.Bool("json", false, "")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	statusFile := filepath.Join(*runDir, "fake-status.json")
	switch args[0] {
	case "bench-baseline":
		if err := serveBaseline(ctx, *httpAddr, *wsAddr, announceBaseline); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	case "start":
		if os.Getenv("FORKD_BENCH_TEST_HANG") == "1" {
			fmt.Fprintln(os.Stderr, "helper: hanging instead of listening")
			<-ctx.Done()
			return 1
		}
		st := map[string]any{"mode": *mode, "master_pid": os.Getpid()}
		var ws []map[string]any
		for i := range *workers {
			ws = append(ws, map[string]any{"id": i, "pid": os.Getpid(), "state": "ready"})
		}
		st["workers"], st["task_workers"] = ws, []any{}
		err := fakeServer(ctx, *httpAddr, *wsAddr, func(h, w string) error {
			st["listeners"] = []map[string]any{{"name": "http", "addr": h}, {"name": "ws", "addr": w}}
			b, _ := json.Marshal(st)
			return os.WriteFile(statusFile, b, 0o644)
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	case "status":
		b, err := os.ReadFile(statusFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "server is not running")
			return 1
		}
		os.Stdout.Write(b)
	case "stop":
		b, err := os.ReadFile(statusFile)
		var st statusJSON
		if err != nil || json.Unmarshal(b, &st) != nil {
			fmt.Fprintln(os.Stderr, "server is not running")
			return 1
		}
		syscall.Kill(st.MasterPid, syscall.SIGTERM)
		for range 100 {
			if syscall.Kill(st.MasterPid, 0) != nil {
				return 0
			}
			time.Sleep(20 * time.Millisecond)
		}
	default:
		fmt.Fprintln(os.Stderr, "helper: unknown command", args[0])
		return 2
	}
	return 0
}

// fakeChat is a one-process version of the chat: /chat, /push, /broadcast,
// plus /hello and /echo.
type fakeChat struct {
	mu    sync.Mutex
	seq   int
	conns map[string]*fakeMember
	rooms map[string]map[string]*fakeMember
	uids  map[string]map[string]*fakeMember
	wg    sync.WaitGroup
}

type fakeMember struct {
	c    *websocket.Conn
	wmu  sync.Mutex
	room string
}

func (m *fakeMember) send(b []byte) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	return m.c.WriteMessage(websocket.TextMessage, b)
}

// fakeServer serves the fake chat on httpAddr and wsAddr (port 0: any)
// and calls listening with the addresses bound, as the real server
// reports them in its status.
func fakeServer(ctx context.Context, httpAddr, wsAddr string, listening func(httpAddr, wsAddr string) error) error {
	f := &fakeChat{conns: map[string]*fakeMember{}, rooms: map[string]map[string]*fakeMember{}, uids: map[string]map[string]*fakeMember{}}
	up := websocket.FastHTTPUpgrader{CheckOrigin: func(*fasthttp.RequestCtx) bool { return true }}
	handler := func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/hello":
			ctx.Response.Header.Set("X-Worker-Id", "0")
			ctx.SetBodyString("hello")
		case "/echo":
			_ = up.Upgrade(ctx, func(c *websocket.Conn) {
				defer c.Close()
				for {
					op, b, err := c.ReadMessage()
					if err != nil || c.WriteMessage(op, b) != nil {
						return
					}
				}
			})
		case "/chat":
			room := string(ctx.QueryArgs().Peek("room"))
			name := string(ctx.QueryArgs().Peek("name"))
			uid := string(ctx.QueryArgs().Peek("uid"))
			_ = up.Upgrade(ctx, func(c *websocket.Conn) { f.chat(c, room, name, uid) })
		case "/push":
			if uid := string(ctx.QueryArgs().Peek("uid")); uid != "" {
				f.mu.Lock()
				var ms []*fakeMember
				for _, m := range f.uids[uid] {
					ms = append(ms, m)
				}
				f.mu.Unlock()
				if len(ms) == 0 {
					ctx.Error("user offline", fasthttp.StatusNotFound)
					return
				}
				for _, m := range ms {
					_ = m.send(ctx.PostBody())
				}
				ctx.SetBodyString(strconv.Itoa(len(ms)))
				return
			}
			f.mu.Lock()
			m := f.conns[string(ctx.QueryArgs().Peek("conn"))]
			f.mu.Unlock()
			if m == nil || m.send(ctx.PostBody()) != nil {
				ctx.Error("no such connection", fasthttp.StatusNotFound)
				return
			}
			ctx.SetBodyString("ok")
		case "/broadcast":
			f.mu.Lock()
			var ms []*fakeMember
			for _, m := range f.rooms[string(ctx.QueryArgs().Peek("room"))] {
				ms = append(ms, m)
			}
			f.mu.Unlock()
			for _, m := range ms {
				_ = m.send(ctx.PostBody())
			}
			ctx.SetBodyString(strconv.Itoa(len(ms)))
		default:
			ctx.Error("not found", fasthttp.StatusNotFound)
		}
	}
	var srvs []*fasthttp.Server
	var bound []string
	errc := make(chan error, 2)
	for _, addr := range []string{httpAddr, wsAddr} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, s := range srvs {
				_ = s.Shutdown()
			}
			return err
		}
		bound = append(bound, ln.Addr().String())
		// KeepHijackedConns: a push or broadcast may write to a member
		// whose handler has just returned; fasthttp would otherwise have
		// released the connection wrapper it writes through (a nil
		// dereference that took the fake server down under load). The
		// handlers close their connections themselves.
		s := &fasthttp.Server{Handler: handler, KeepHijackedConns: true}
		srvs = append(srvs, s)
		go func() { errc <- s.Serve(ln) }()
	}
	if err := listening(bound[0], bound[1]); err != nil {
		for _, s := range srvs {
			_ = s.Shutdown()
		}
		return err
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	for _, s := range srvs {
		_ = s.Shutdown()
	}
	f.mu.Lock()
	for _, m := range f.conns {
		m.c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	return err
}

func (f *fakeChat) chat(c *websocket.Conn, room, name, uid string) {
	f.wg.Add(1)
	defer f.wg.Done()
	m := &fakeMember{c: c, room: room}
	f.mu.Lock()
	f.seq++
	id := "c" + strconv.Itoa(f.seq)
	f.conns[id] = m
	if f.rooms[room] == nil {
		f.rooms[room] = map[string]*fakeMember{}
	}
	if os.Getenv("FORKD_BENCH_TEST_LOSE") != "1" || f.seq%10 != 0 { // a buggy server loses every 10th join
		f.rooms[room][id] = m
	}
	if uid != "" {
		if f.uids[uid] == nil {
			f.uids[uid] = map[string]*fakeMember{}
		}
		f.uids[uid][id] = m
	}
	var others []*fakeMember
	for oid, o := range f.rooms[room] {
		if oid != id {
			others = append(others, o)
		}
	}
	f.mu.Unlock()
	w, _ := json.Marshal(map[string]any{"type": "welcome", "conn": id, "worker": f.seq % 2, "room": room})
	_ = m.send(w)
	join, _ := json.Marshal(map[string]any{"type": "join", "room": room, "name": name})
	for _, o := range others {
		_ = o.send(join)
	}
	defer func() {
		f.mu.Lock()
		delete(f.conns, id)
		delete(f.rooms[room], id)
		delete(f.uids[uid], id)
		f.mu.Unlock()
		c.Close()
	}()
	for {
		if _, _, err := c.NextReader(); err != nil {
			return
		}
	}
}
