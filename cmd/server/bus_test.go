package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd/master"
)

// busMember is a WebSocket client of the built-in app whose messages a
// goroutine collects, so a test can wait for what it expects while other
// traffic (joins, leaves) goes on.
type busMember struct {
	name   string
	id     string // connection id from the welcome
	worker int    // worker from the welcome
	c      *websocket.Conn
	in     chan string
	seen   []string

	sendMu  sync.Mutex
	readErr atomic.Pointer[error] // why the reader stopped
}

// joinChat dials /chat?room=room&name=name on addr and reads the welcome.
func joinChat(t *testing.T, s *server, addr, room, name string) *busMember {
	t.Helper()
	c := s.dial(addr, "/chat?room="+room+"&name="+name)
	w := readJSON(t, c, 5*time.Second)
	if w.Type != "welcome" || w.Room != room || w.Conn == "" {
		t.Fatalf("%s: first message: got %+v, want a welcome to room %q with a conn id", name, w, room)
	}
	return newBusMember(c, name, w.Conn, w.Worker)
}

// newBusMember starts reading c's messages into a busMember's queue
// (waitUntil bounds the waits; the read deadline is cleared).
func newBusMember(c *websocket.Conn, name, id string, worker int) *busMember {
	m := &busMember{name: name, id: id, worker: worker, c: c, in: make(chan string, 4096)}
	c.SetReadDeadline(time.Time{}) // waitUntil bounds the waits
	go func() {
		defer close(m.in)
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				m.readErr.Store(&err)
				return
			}
			m.in <- string(b)
		}
	}()
	return m
}

// waitUntil collects messages until cond holds for all seen so far.
func (m *busMember) waitUntil(t *testing.T, limit time.Duration, what string, cond func(seen []string) bool) {
	t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for !cond(m.seen) {
		select {
		case s, ok := <-m.in:
			if !ok {
				var err error
				if p := m.readErr.Load(); p != nil {
					err = *p
				}
				t.Fatalf("%s (conn %s, worker %d): connection ended (%v) while waiting for %s; got %q", m.name, m.id, m.worker, err, what, m.seen)
			}
			m.seen = append(m.seen, s)
		case <-timer.C:
			t.Fatalf("%s (conn %s, worker %d): timed out after %s waiting for %s; got %d messages: %q", m.name, m.id, m.worker, limit, what, len(m.seen), m.seen)
		}
	}
}

func (m *busMember) send(text string) error {
	m.sendMu.Lock()
	defer m.sendMu.Unlock()
	m.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := m.c.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
		return fmt.Errorf("%s: send: %w", m.name, err)
	}
	return nil
}

// events parses the chat events among seen (other messages are skipped).
func events(seen []string, typ string) []chatMsg {
	var out []chatMsg
	for _, s := range seen {
		var m chatMsg
		if json.Unmarshal([]byte(s), &m) == nil && m.Type == typ {
			out = append(out, m)
		}
	}
	return out
}

func contains(seen []string, s string) bool {
	for _, x := range seen {
		if x == s {
			return true
		}
	}
	return false
}

// memberOn returns the first member held by worker w.
func memberOn(members []*busMember, w int) *busMember {
	for _, m := range members {
		if m.worker == w {
			return m
		}
	}
	return nil
}

// chatRoom joins n members to room (a room nobody is in yet), spread over
// both workers: it keeps connecting (bounded) until the n members cover
// workers 0 and 1; a surplus connection on an already-covered worker is
// closed again, and chatRoom returns once the server no longer counts it
// (callers check the room's exact count).
func chatRoom(t *testing.T, s *server, addr, room string, n int) []*busMember {
	t.Helper()
	var members []*busMember
	per := map[int]int{}
	for try := 0; len(members) < n; try++ {
		if try > 200 {
			t.Fatalf("could not spread %d members over 2 workers in 200 connections: %v", n, per)
		}
		m := joinChat(t, s, addr, room, fmt.Sprintf("m%d", try))
		if m.worker != 0 && m.worker != 1 {
			t.Fatalf("welcome worker: got %d, want 0 or 1", m.worker)
		}
		// The last free place must go to a worker that has no member yet.
		if len(members) == n-1 && len(per) == 1 && per[m.worker] > 0 {
			m.c.Close()
			// The server counts it until its worker has read the close: a
			// broadcast right after could count n+1 (BASE mode: the kernel
			// puts two connections in a row on one worker half the time).
			waitRoomCount(t, s, room, len(members))
			continue
		}
		// In the room once its own join is announced (the welcome comes
		// first, before the join).
		m.waitUntil(t, 10*time.Second, "its own join", func(seen []string) bool {
			for _, e := range events(seen, "join") {
				if e.Name == m.name {
					return true
				}
			}
			return false
		})
		per[m.worker]++
		members = append(members, m)
	}
	if per[0] == 0 || per[1] == 0 {
		t.Fatalf("members per worker: got %v, want both workers", per)
	}
	return members
}

// waitRoomCount waits until POST /broadcast to room (a marker text, which
// the tests' checks skip) counts want members.
func waitRoomCount(t *testing.T, s *server, room string, want int) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("room %s to count %d", room, want), func() bool {
		resp, body := s.post("/broadcast?room="+room, "count")
		return resp.StatusCode == 200 && body == strconv.Itoa(want)
	})
}

// TestBusChatRoom: a room of 8 members spread over both workers gets every
// member's message with the right room/from/text, and the joins and leaves;
// /broadcast reaches everyone and returns the member count.
func TestBusChatRoom(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, mode, 2)
			const room = "r1"
			members := chatRoom(t, s, s.wsAddr, room, 8)
			names := map[string]bool{}
			for _, m := range members {
				names[m.name] = true
			}
			// Each member sees its own join and every later member's.
			for i, m := range members {
				want := map[string]bool{}
				for _, later := range members[i:] {
					want[later.name] = true
				}
				m.waitUntil(t, 10*time.Second, "the joins of itself and later members", func(seen []string) bool {
					got := map[string]bool{}
					for _, e := range events(seen, "join") {
						if e.Room != room {
							t.Fatalf("join event for room %q, want %q", e.Room, room)
						}
						got[e.Name] = true
					}
					for name := range want {
						if !got[name] {
							return false
						}
					}
					return true
				})
			}

			// Every member sends one line; every member gets all 8.
			var wg sync.WaitGroup
			for _, m := range members {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := m.send("hello from " + m.name); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			if t.Failed() {
				t.FailNow()
			}
			for _, m := range members {
				m.waitUntil(t, 10*time.Second, "all 8 messages", func(seen []string) bool {
					got := map[string]int{}
					for _, e := range events(seen, "message") {
						if e.Room != room || e.Text != "hello from "+e.From || !names[e.From] || e.TS == 0 {
							t.Fatalf("%s got a bad message event %+v", m.name, e)
						}
						got[e.From]++
					}
					for name := range names {
						if got[name] > 1 {
							t.Fatalf("%s got %d messages from %s, want 1", m.name, got[name], name)
						}
					}
					return len(got) == len(names)
				})
			}

			// POST /broadcast: the member count, and everyone gets the body.
			resp, body := s.post("/broadcast?room="+room, "to all")
			if resp.StatusCode != 200 || body != "8" {
				t.Fatalf("POST /broadcast: got %d %q, want 200 \"8\"", resp.StatusCode, body)
			}
			for _, m := range members {
				m.waitUntil(t, 10*time.Second, "the /broadcast body", func(seen []string) bool { return contains(seen, "to all") })
			}
			resp, body = s.post("/broadcast?room=nobody-here", "x")
			if resp.StatusCode != 200 || body != "0" {
				t.Fatalf("POST /broadcast to an empty room: got %d %q, want 200 \"0\"", resp.StatusCode, body)
			}

			// A leaving member is announced to the others.
			gone := members[0]
			gone.c.Close()
			for _, m := range members[1:] {
				m.waitUntil(t, 10*time.Second, "the leave of "+gone.name, func(seen []string) bool {
					for _, e := range events(seen, "leave") {
						if e.Name == gone.name && e.Room == room {
							return true
						}
					}
					return false
				})
			}
			waitRoomCount(t, s, room, 7)
		})
	}
}

// TestBusPush: /push reaches connections on either worker (also on the HTTP
// port by upgrade), in order; unknown and stale ids get 404; `connections
// --json` and `status` show what is open.
func TestBusPush(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, mode, 2)
			members := chatRoom(t, s, s.wsAddr, "p", 4)
			viaHTTP := joinChat(t, s, s.httpAddr, "p", "upgraded")
			members = append(members, viaHTTP)

			for i, m := range members {
				text := fmt.Sprintf("push %d to %s", i, m.name)
				resp, body := s.post("/push?conn="+m.id, text)
				if resp.StatusCode != 200 || body != "ok" {
					t.Fatalf("POST /push to %s (worker %d): got %d %q, want 200 ok", m.name, m.worker, resp.StatusCode, body)
				}
				m.waitUntil(t, 10*time.Second, "the pushed text", func(seen []string) bool { return contains(seen, text) })
			}

			// 200 pushes from one client to one connection arrive in order,
			// for a member of each worker.
			for _, w := range []int{0, 1} {
				m := memberOn(members, w)
				client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1}}
				for i := 0; i < 200; i++ {
					resp, err := client.Post("http://"+s.httpAddr+"/push?conn="+m.id, "text/plain", strings.NewReader("seq "+strconv.Itoa(i)))
					if err != nil {
						t.Fatalf("push %d: %v", i, err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						t.Fatalf("push %d: got %d %q", i, resp.StatusCode, b)
					}
				}
				client.CloseIdleConnections()
				var got []string
				m.waitUntil(t, 10*time.Second, "200 pushes", func(seen []string) bool {
					got = got[:0]
					for _, s := range seen {
						if strings.HasPrefix(s, "seq ") {
							got = append(got, s)
						}
					}
					return len(got) == 200
				})
				for i, s := range got {
					if want := "seq " + strconv.Itoa(i); s != want {
						t.Fatalf("worker %d member: push %d arrived as %q, want %q (out of order)", w, i, s, want)
					}
				}
			}

			// connections --json lists what is open.
			out, err := s.run("connections", "--json")
			if err != nil {
				t.Fatalf("connections --json: %v\n%s", err, out)
			}
			var infos []master.ConnInfo
			if err := json.Unmarshal([]byte(out), &infos); err != nil {
				t.Fatalf("connections --json: %v: %s", err, out)
			}
			byID := map[string]master.ConnInfo{}
			for _, in := range infos {
				byID[in.ID] = in
			}
			for _, m := range members {
				in, ok := byID[m.id]
				if !ok {
					t.Fatalf("connections --json: %s (conn %s) missing from %s", m.name, m.id, out)
				}
				wantListener := "ws"
				if m == viaHTTP {
					wantListener = "http"
				}
				if in.Worker != m.worker || in.Listener != wantListener || in.Protocol != "websocket" ||
					in.Remote != m.c.LocalAddr().String() || in.BytesIn == 0 || in.BytesOut == 0 {
					t.Errorf("connections --json: %s: got %+v, want worker %d, listener %s, websocket from %s, bytes in/out > 0",
						m.name, in, m.worker, wantListener, m.c.LocalAddr())
				}
				if _, err := time.Parse(time.RFC3339Nano, in.Since); err != nil {
					t.Errorf("connections --json: %s: since %q: %v", m.name, in.Since, err)
				}
			}
			// A plain keep-alive HTTP connection shows as http.
			hc, err := dialTCP(s.httpAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer hc.Close()
			fmt.Fprintf(hc, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
			if r, body := readHTTP(t, bufio.NewReader(hc)); r.StatusCode != 200 || body != "hello" {
				t.Fatalf("keep-alive GET /hello: got %d %q", r.StatusCode, body)
			}
			out, _ = s.run("connections", "--json")
			infos = nil
			json.Unmarshal([]byte(out), &infos)
			found := false
			for _, in := range infos {
				if in.Remote == hc.LocalAddr().String() {
					found = true
					if in.Protocol != "http" || in.Listener != "http" || in.BytesIn == 0 || in.BytesOut == 0 {
						t.Errorf("connections --json: keep-alive HTTP connection: got %+v, want protocol http on listener http, bytes > 0", in)
					}
				}
			}
			if !found {
				t.Errorf("connections --json: keep-alive HTTP connection from %s missing: %s", hc.LocalAddr(), out)
			}
			text, err := s.run("connections")
			if err != nil || !strings.Contains(text, members[0].id) || !strings.Contains(text, "connections") {
				t.Errorf("connections: got %v\n%s", err, text)
			}

			// status shows the connection counts.
			st := s.status()
			per := map[int]int{}
			for _, m := range members {
				per[m.worker]++
			}
			if st.Connections < len(members) {
				t.Errorf("status: %d connections, want at least %d", st.Connections, len(members))
			}
			for _, w := range st.Workers {
				if w.Connections < per[w.ID] {
					t.Errorf("status: worker %d has %d connections, want at least %d", w.ID, w.Connections, per[w.ID])
				}
			}

			// Unknown ids (the largest id, one of another node) and a
			// closed connection's id.
			for _, id := range []string{"1", "9007199254740991", strconv.FormatUint(1<<48|5, 10)} {
				resp, body := s.post("/push?conn="+id, "x")
				if resp.StatusCode != 404 || strings.TrimSpace(body) != "no such connection" {
					t.Errorf("POST /push?conn=%s: got %d %q, want 404 no such connection", id, resp.StatusCode, body)
				}
			}
			// Malformed: not a number, or not below 2^53 (no id ever is).
			for _, id := range []string{"abc", "9007199254740992", "18446744073709551615"} {
				if resp, _ := s.post("/push?conn="+id, "x"); resp.StatusCode != 400 {
					t.Errorf("POST /push?conn=%s: got %d, want 400", id, resp.StatusCode)
				}
			}
			closed := []*busMember{memberOn(members, 0), memberOn(members, 1)}
			for _, m := range closed {
				m.c.Close()
			}
			for _, m := range closed {
				waitFor(t, 5*time.Second, "conn "+m.id+" to be gone", func() bool {
					resp, body := s.post("/push?conn="+m.id, "late")
					if resp.StatusCode == 200 {
						return false
					}
					if resp.StatusCode != 404 || strings.TrimSpace(body) != "no such connection" {
						t.Fatalf("POST /push to closed conn %s: got %d %q, want 404 no such connection", m.id, resp.StatusCode, body)
					}
					return true
				})
			}
		})
	}
}

// TestBusUpgrade: WebSocket by upgrade on the HTTP port works by default
// and is refused (not 101) with --no-http-upgrade; the WebSocket port works
// either way.
func TestBusUpgrade(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, mode, 2, "--no-http-upgrade")
			c, err := s.dialErr(s.httpAddr, "/echo")
			if err == nil {
				c.Close()
				t.Fatalf("upgrade on the HTTP port with --no-http-upgrade: got 101, want a refusal")
			}
			if !strings.Contains(err.Error(), "HTTP 4") {
				t.Errorf("upgrade on the HTTP port with --no-http-upgrade: got %v, want a 4xx answer", err)
			}
			m := joinChat(t, s, s.wsAddr, "u", "ws-port")
			if resp, body := s.post("/push?conn="+m.id, "still works"); resp.StatusCode != 200 {
				t.Fatalf("push: got %d %q", resp.StatusCode, body)
			}
			m.waitUntil(t, 10*time.Second, "the push", func(seen []string) bool { return contains(seen, "still works") })
			// The default (upgrade allowed) is covered by TestBusPush's
			// "upgraded" member; check the echo path here too.
			s2 := startServer(t, mode, 1)
			e := s2.dial(s2.httpAddr, "/echo")
			e.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := e.WriteMessage(websocket.TextMessage, []byte("up")); err != nil {
				t.Fatal(err)
			}
			e.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, b, err := e.ReadMessage(); err != nil || string(b) != "up" {
				t.Fatalf("echo over the HTTP port's upgrade: got %q, %v", b, err)
			}
		})
	}
}

// TestBusChatRoster: a newcomer is told who was already in the room
// ({"type":"member"}), members held by either worker.
func TestBusChatRoster(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, mode, 2)
			const room = "roster"
			members := chatRoom(t, s, s.wsAddr, room, 4)
			late := joinChat(t, s, s.wsAddr, room, "late")
			want := map[string]bool{}
			for _, m := range members {
				want[m.name] = true
			}
			late.waitUntil(t, 10*time.Second, "a member event for everyone already there", func(seen []string) bool {
				got := map[string]bool{}
				for _, e := range events(seen, "member") {
					if e.Room != room || e.Name == "late" {
						t.Fatalf("member event %+v: want room %q and never the newcomer itself", e, room)
					}
					got[e.Name] = true
				}
				for name := range want {
					if !got[name] {
						return false
					}
				}
				return true
			})
		})
	}
}
