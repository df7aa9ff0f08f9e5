package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd"
)

//go:embed chat.html
var chatHTML []byte

// chatState is what a /chat connection carries.
type chatState struct {
	room, name string
}

func newServer() *forkd.Server {
	s := &forkd.Server{Name: "server", Usage: "forkd's built-in chat and push service (Swoole's BASE and PROCESS modes)"}
	s.Listeners = []*forkd.Listener{
		{Name: "http", Addr: "0.0.0.0:9501", Protocol: forkd.HTTP, Handler: serveHTTP, Label: "chat page"},
		{Name: "ws", Addr: "0.0.0.0:9502", Protocol: forkd.WebSocket,
			OnOpen: onOpen, OnMessage: onMessage, OnClose: onClose, OnResume: onResume},
	}
	s.OnWorkerStart = func(w *forkd.Worker) error {
		if !w.IsTask() {
			// A per-process timer: a stats line every minute (Workerman's Timer::add).
			w.Tick(time.Minute, func() {
				w.Log().Info().RawJSON("stats", w.Stats()).Msg("worker stats")
			})
		}
		return nil
	}
	// A client that does not read its pushes: its send buffer fills
	// (pushes fail with ErrBufferFull), then drains once it reads again.
	s.OnBufferFull = func(c *forkd.Conn) {
		c.Worker().Log().Warn().Str("conn", c.ID().String()).Msg("send buffer full")
	}
	s.OnBufferDrain = func(c *forkd.Conn) {
		c.Worker().Log().Info().Str("conn", c.ID().String()).Msg("send buffer drained")
	}
	s.OnPipeMessage = onRosterRequest
	s.OnTask = func(w *forkd.Worker, from int, data []byte) ([]byte, error) {
		// "MS DEADLINE": sleep MS milliseconds, unless that could not end
		// before the caller stops waiting (DEADLINE, Unix ms). A task queued
		// behind others runs after its caller's TaskWait timed out; without
		// the check, 1024 abandoned /slow?ms=60000 held a task worker for
		// 17 hours.
		msText, deadlineText, _ := strings.Cut(string(data), " ")
		ms, err := strconv.Atoi(msText)
		deadline, derr := strconv.ParseInt(deadlineText, 10, 64)
		if err != nil || derr != nil || ms < 0 {
			return nil, errors.New("slow: bad duration")
		}
		if time.Now().Add(time.Duration(ms) * time.Millisecond).After(time.UnixMilli(deadline)) {
			return nil, errors.New("slow: it could not end before its caller stops waiting")
		}
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return []byte(strconv.Itoa(w.ID())), nil
	}
	return s
}

// operatorPaths act on other people's connections or on the server: they
// need the API token, or with none set a client on loopback (--api-allow
// widens). Connection ids are not secrets; this is the lock.
var operatorPaths = map[string]bool{"/push": true, "/broadcast": true, "/panic": true,
	"/online": true, "/room": true, "/session": true}

func serveHTTP(w *forkd.Worker, ctx *fasthttp.RequestCtx) {
	if operatorPaths[string(ctx.Path())] && !w.API().Check(ctx) {
		w.Log().Warn().Str("path", string(ctx.Path())).Str("remote", ctx.RemoteAddr().String()).
			Int("status", ctx.Response.StatusCode()).Msg("operator API refused")
		return
	}
	switch string(ctx.Path()) {
	case "/":
		ctx.SetContentType("text/html; charset=utf-8")
		ctx.SetBody(chatHTML)
	case "/hello":
		ctx.Response.Header.Set("X-Worker-Id", strconv.Itoa(w.ID()))
		ctx.Response.Header.Set("X-Worker-Pid", strconv.Itoa(w.Pid()))
		ctx.SetBodyString("hello")
	case "/push":
		if !ctx.IsPost() {
			ctx.Error("use POST", fasthttp.StatusMethodNotAllowed)
			return
		}
		if uid := ctx.QueryArgs().Peek("uid"); len(uid) > 0 {
			pushUID(w, ctx, string(uid))
			return
		}
		id, err := forkd.ParseConnID(string(ctx.QueryArgs().Peek("conn")))
		if err != nil {
			ctx.Error("bad conn id", fasthttp.StatusBadRequest)
			return
		}
		pushError(ctx, w.Push(id, forkd.TextMessage, ctx.PostBody()))
	case "/online", "/room", "/session":
		serveUsers(w, ctx)
	case "/broadcast":
		if !ctx.IsPost() {
			ctx.Error("use POST", fasthttp.StatusMethodNotAllowed)
			return
		}
		room := string(ctx.QueryArgs().Peek("room"))
		if room == "" {
			ctx.Error("missing room", fasthttp.StatusBadRequest)
			return
		}
		exclude, err := parseExclude(ctx.QueryArgs().Peek("exclude"))
		if err != nil {
			ctx.Error("bad exclude: want comma-separated conn ids", fasthttp.StatusBadRequest)
			return
		}
		// Kept in the room's history as sent; with stamp=1 a JSON object
		// body gets the room's "seq" and "epoch" like the chat's lines.
		var res forkd.BroadcastResult
		if string(ctx.QueryArgs().Peek("stamp")) == "1" {
			res, err = w.BroadcastJSON(room, ctx.PostBody(), exclude...)
		} else {
			res, err = w.BroadcastExcept(room, forkd.TextMessage, ctx.PostBody(), exclude...)
		}
		if errors.Is(err, forkd.ErrUnavailable) {
			// In a cluster: the room's history owner numbers every
			// broadcast, and it did not answer (docs/cluster.md).
			ctx.Error("unavailable: the room's owner node did not answer", fasthttp.StatusServiceUnavailable)
			return
		}
		if err != nil {
			pushError(ctx, err)
			return
		}
		// The body is the count of members reached (the SPEC's "member
		// count"); members skipped because their send buffer was full are
		// in a header, and in the JSON answer a client may ask for.
		ctx.Response.Header.Set("X-Broadcast-Reached", strconv.Itoa(res.Reached))
		ctx.Response.Header.Set("X-Broadcast-Skipped", strconv.Itoa(res.Skipped))
		ctx.Response.Header.Set("X-Broadcast-Seq", strconv.FormatUint(res.Seq, 10))
		ctx.Response.Header.Set("X-Broadcast-Epoch", strconv.FormatUint(uint64(res.Epoch), 10))
		if bytes.Contains(ctx.Request.Header.Peek("Accept"), []byte("application/json")) {
			b, _ := json.Marshal(res)
			ctx.SetContentType("application/json")
			ctx.SetBody(b)
			return
		}
		ctx.SetBodyString(strconv.Itoa(res.Reached))
	case "/panic":
		// Shows crash isolation: the worker recovers, logs the stack and
		// answers 500; nothing else is affected.
		panic("GET /panic: deliberate panic in an HTTP handler")
	case "/slow":
		ms, err := strconv.Atoi(string(ctx.QueryArgs().Peek("ms")))
		if err != nil || ms < 0 || ms > 60000 {
			ctx.Error("want ?ms=0..60000", fasthttp.StatusBadRequest)
			return
		}
		wait := time.Duration(ms)*time.Millisecond + 10*time.Second
		task := strconv.Itoa(ms) + " " + strconv.FormatInt(time.Now().Add(wait).UnixMilli(), 10)
		res, err := w.TaskWait([]byte(task), wait)
		switch {
		case errors.Is(err, forkd.ErrUnavailable):
			ctx.Error("no task workers: start the server with --task-workers N", fasthttp.StatusServiceUnavailable)
		case err != nil:
			ctx.Error("task failed: "+err.Error(), fasthttp.StatusBadGateway)
		default:
			ctx.Response.Header.Set("X-Task-Worker-Id", string(res))
			ctx.SetBodyString("slept " + strconv.Itoa(ms) + " ms\n")
		}
	default:
		ctx.Error("Not Found", fasthttp.StatusNotFound)
	}
}

func pushError(ctx *fasthttp.RequestCtx, err error) {
	switch {
	case err == nil:
		ctx.SetBodyString("ok")
	case errors.Is(err, forkd.ErrNoConnection), errors.Is(err, forkd.ErrClosed):
		ctx.Error("no such connection", fasthttp.StatusNotFound)
	case errors.Is(err, forkd.ErrInvalid):
		ctx.Error(err.Error(), fasthttp.StatusBadRequest)
	case errors.Is(err, forkd.ErrTooLarge):
		ctx.Error("message too large", fasthttp.StatusRequestEntityTooLarge)
	case errors.Is(err, forkd.ErrBufferFull):
		ctx.Error("connection send buffer full", fasthttp.StatusServiceUnavailable)
	case errors.Is(err, forkd.ErrUnavailable):
		// In a cluster: the holder's node is gone or unreachable (docs/cluster.md).
		ctx.Error("unavailable: the connection's node did not answer", fasthttp.StatusServiceUnavailable)
	default:
		ctx.Error(err.Error(), fasthttp.StatusServiceUnavailable)
	}
}

type event struct {
	Type   string `json:"type"`
	Conn   string `json:"conn,omitempty"`
	Worker *int   `json:"worker,omitempty"`
	Room   string `json:"room"`
	Name   string `json:"name,omitempty"`
	From   string `json:"from,omitempty"`
	Text   string `json:"text,omitempty"`
	TS     int64  `json:"ts,omitempty"`
}

func send(c *forkd.Conn, ev event) error {
	b, _ := json.Marshal(ev)
	return c.Send(forkd.TextMessage, b)
}

// broadcast sends ev to room as a numbered JSON line: the history owner
// writes "seq" and "epoch" into it, and a member that reconnects with
// since=SEQ&epoch=E gets what it missed (see onOpen).
func broadcast(w *forkd.Worker, room string, ev event) {
	b, _ := json.Marshal(ev)
	if _, err := w.BroadcastJSON(room, b); err != nil {
		w.Log().Warn().Err(err).Str("room", room).Msg("broadcast failed")
	}
}

// panicMessage, sent as a whole message on /echo, makes OnMessage panic.
const panicMessage = "__panic__"

func onOpen(c *forkd.Conn) {
	switch c.Path() {
	case "/echo":
	case "/chat":
		st := newChatState(c)
		// The welcome goes first: once the connection is in the room, the
		// room's traffic (another member's join, say) may reach it at once.
		id := c.Worker().ID()
		send(c, event{Type: "welcome", Conn: c.ID().String(), Worker: &id, Room: st.room})
		if err := chatEnter(c, st); err != nil {
			if errors.Is(err, forkd.ErrInvalid) {
				// The client's own input (a room name starting with NUL,
				// say): a policy violation, not the server's failure.
				c.Worker().Log().Info().Err(err).Str("conn", c.ID().String()).Msg("chat join refused")
				c.Close(forkd.ClosePolicy, "invalid room or uid")
				return
			}
			c.Worker().Log().Warn().Err(err).Str("conn", c.ID().String()).Str("room", st.room).Msg("chat join failed")
			c.Close(forkd.CloseInternal, "could not join room")
			return
		}
		if quietMember(c) {
			return // in the room, unannounced and told no roster
		}
		broadcast(c.Worker(), st.room, event{Type: "join", Room: st.room, Name: st.name})
		roster.add(st.room, c.ID(), st.name)
		sendRoster(c, st.room)
	default:
		c.Close(forkd.ClosePolicy, "unknown path: use /echo or /chat")
	}
}

// newChatState reads a chat connection's room and name from its handshake
// and keeps them as its context.
func newChatState(c *forkd.Conn) *chatState {
	st := &chatState{room: c.Query("room"), name: c.Query("name")}
	if st.room == "" {
		st.room = "lobby"
	}
	if st.name == "" {
		st.name = "guest-" + c.ID().String()
	}
	c.SetContext(st)
	return st
}

// onResume rebuilds a chat connection's state in a worker that took it
// over (PROCESS mode): the room membership lives on in the master.
func onResume(c *forkd.Conn) {
	if c.Path() == "/chat" {
		st := resumeChatState(c)
		if !quietMember(c) {
			roster.add(st.room, c.ID(), st.name)
		}
	}
}

func onMessage(c *forkd.Conn, t forkd.MessageType, data []byte) {
	st, _ := c.Context().(*chatState)
	if st == nil { // /echo
		if string(data) == panicMessage {
			// Shows crash isolation: this connection is closed with 1011,
			// the stack is logged, the worker and its other connections go on.
			panic("/echo: deliberate panic in OnMessage")
		}
		if n, size, ok := floodCommand(data); ok {
			flood(c, n, size)
			return
		}
		c.Send(t, data)
		return
	}
	broadcast(c.Worker(), st.room, event{Type: "message", Room: st.room, From: st.name, Text: string(data), TS: time.Now().UnixMilli()})
}

// quietMember: a /chat?quiet=1 member joins and leaves its room without
// announcements and gets no roster: it only reads what is said and
// broadcast there. A room of n announced members costs n² join messages
// and rosters; quiet members let a room hold 100,000 (bench's broadcast
// scenario joins that way).
func quietMember(c *forkd.Conn) bool { return c.Query("quiet") == "1" }

// floodMessage, "__flood__ N SIZE" sent on /echo, makes the connection
// send N binary messages of SIZE bytes at once (at most 1,000 of 1 MiB),
// then wait for their outcomes (Conn.Flush). It shows where a failure is
// reported in each mode: in BASE mode by Send itself; in PROCESS mode,
// where Send does not wait for the master, by Flush. Logged as
// "flood done" with the first Send error and Flush's.
const floodMessage = "__flood__ "

func floodCommand(data []byte) (n, size int, ok bool) {
	rest, found := bytes.CutPrefix(data, []byte(floodMessage))
	if !found {
		return 0, 0, false
	}
	f := strings.Fields(string(rest))
	if len(f) != 2 {
		return 0, 0, false
	}
	n, err1 := strconv.Atoi(f[0])
	size, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || n < 1 || n > 1000 || size < 1 || size > 1<<20 {
		return 0, 0, false
	}
	return n, size, true
}

func flood(c *forkd.Conn, n, size int) {
	msg := bytes.Repeat([]byte{'f'}, size)
	sent := 0
	var sendErr error
	for ; sent < n; sent++ {
		if sendErr = c.Send(forkd.BinaryMessage, msg); sendErr != nil {
			break
		}
	}
	flushErr := c.Flush()
	c.Worker().Log().Info().Str("conn", c.ID().String()).Int("sent", sent).
		Str("send_err", outcomeName(sendErr)).Str("flush_err", outcomeName(flushErr)).Msg("flood done")
}

// outcomeName names a send outcome for a log field.
func outcomeName(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, forkd.ErrBufferFull):
		return "buffer_full"
	case errors.Is(err, forkd.ErrClosed):
		return "closed"
	case errors.Is(err, forkd.ErrNoConnection):
		return "no_connection"
	case errors.Is(err, forkd.ErrUnavailable):
		return "unavailable"
	}
	return "other"
}

func onClose(c *forkd.Conn, code int, reason string) {
	if st, _ := c.Context().(*chatState); st != nil && !quietMember(c) {
		roster.remove(st.room, c.ID())
		broadcast(c.Worker(), st.room, event{Type: "leave", Room: st.room, Name: st.name})
	}
}

// roster is this process's share of who is in which chat room: the members
// whose callbacks run here. A newcomer is told who was there before it
// ({"type":"member"} per member): this worker answers from its own share,
// and asks every other worker for theirs with a pipe message.
var roster = rosterSet{rooms: map[string]map[forkd.ConnID]string{}}

type rosterSet struct {
	mu    sync.Mutex
	rooms map[string]map[forkd.ConnID]string
}

func (r *rosterSet) add(room string, id forkd.ConnID, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rooms[room] == nil {
		r.rooms[room] = map[forkd.ConnID]string{}
	}
	r.rooms[room][id] = name
}

func (r *rosterSet) remove(room string, id forkd.ConnID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.rooms[room], id)
	if len(r.rooms[room]) == 0 {
		delete(r.rooms, room)
	}
}

// names lists the members of room held here, but one.
func (r *rosterSet) names(room string, except forkd.ConnID) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id, name := range r.rooms[room] {
		if id != except {
			out = append(out, name)
		}
	}
	return out
}

// sendRoster tells newcomer c who is in room: this worker's members at
// once, the other workers' through OnPipeMessage (onRosterRequest).
func sendRoster(c *forkd.Conn, room string) {
	w := c.Worker()
	pushRoster(w, c.ID(), room)
	req := []byte("roster\n" + room + "\n" + c.ID().String())
	for id := 0; id < w.Workers(); id++ {
		if id != w.ID() {
			if err := w.SendMessage(id, req); err != nil {
				w.Log().Debug().Err(err).Int("to", id).Msg("roster request not sent")
			}
		}
	}
}

func pushRoster(w *forkd.Worker, to forkd.ConnID, room string) {
	for _, name := range roster.names(room, to) {
		b, _ := json.Marshal(event{Type: "member", Room: room, Name: name})
		if err := w.Push(to, forkd.TextMessage, b); err != nil {
			return // the newcomer is gone
		}
	}
}

// onRosterRequest answers another worker's "roster\nROOM\nCONN" request.
func onRosterRequest(w *forkd.Worker, from int, data []byte) {
	parts := strings.SplitN(string(data), "\n", 3)
	if len(parts) != 3 || parts[0] != "roster" {
		return
	}
	id, err := forkd.ParseConnID(parts[2])
	if err != nil {
		return
	}
	pushRoster(w, id, parts[1])
}
