package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/master"
)

// Tests of issue 19: users, sessions, groups, history and recovery, in
// both modes, against the real binary.

// dialMember dials /chat?QUERY on the WebSocket port and reads the welcome.
func dialMember(t *testing.T, s *server, name, query string) *busMember {
	t.Helper()
	c := s.dial(s.wsAddr, "/chat?"+query)
	w := readJSON(t, c, 5*time.Second)
	if w.Type != "welcome" || w.Conn == "" {
		t.Fatalf("%s: first message: got %+v, want a welcome", name, w)
	}
	return newBusMember(c, name, w.Conn, w.Worker)
}

// usersOnBoth connects members of uid to room until both workers hold
// one (at most 40 tries), and returns them with each one's own join seen.
func usersOnBoth(t *testing.T, s *server, room, uid string, n int) []*busMember {
	t.Helper()
	var out []*busMember
	per := map[int]int{}
	for try := 0; len(out) < n || per[0] == 0 || per[1] == 0; try++ {
		if try > 40 {
			t.Fatalf("could not spread %s over both workers in 40 connections: %v", uid, per)
		}
		name := fmt.Sprintf("%s%d", uid, try)
		m := dialMember(t, s, name, "room="+room+"&name="+name+"&uid="+uid)
		if len(out) >= n-1 && len(per) == 1 && per[m.worker] > 0 {
			m.c.Close() // the last place goes to the other worker
			continue
		}
		m.waitUntil(t, 10*time.Second, "its own join", func(seen []string) bool { return hasJoin(seen, name) })
		per[m.worker]++
		out = append(out, m)
	}
	return out
}

// checkReplay waits until m has the last of want, then checks that the
// messages it got with prefix are want, in order, with no gap reported:
// a recovery that lost, repeated or reordered nothing.
func checkReplay(t *testing.T, m *busMember, what, prefix string, want []string) {
	t.Helper()
	m.waitUntil(t, 15*time.Second, "every broadcast", func(seen []string) bool { return contains(seen, want[len(want)-1]) })
	var got []string
	for _, l := range m.seen {
		if strings.HasPrefix(l, prefix) {
			got = append(got, l)
		}
		if strings.Contains(l, `"gap"`) {
			t.Errorf("%s: unexpected gap: %q", what, m.seen)
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s: got %q, want %q", what, got, want)
	}
}

func hasJoin(seen []string, name string) bool {
	for _, e := range events(seen, "join") {
		if e.Name == name {
			return true
		}
	}
	return false
}

func count(seen []string, s string) int {
	n := 0
	for _, x := range seen {
		if x == s {
			n++
		}
	}
	return n
}

// getFresh does a GET on a new connection (a keep-alive connection
// stays with one worker).
func getFresh(t *testing.T, s *server, path string) (*http.Response, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + s.httpAddr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// online returns GET /online?uid=uid's conns, checking online agrees.
func online(t *testing.T, s *server, uid string) int {
	t.Helper()
	resp, body := s.get("/online?uid=" + uid)
	var o struct {
		Online *bool `json:"online"`
		Conns  int   `json:"conns"`
	}
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &o) != nil || o.Online == nil || *o.Online != (o.Conns > 0) {
		t.Fatalf("GET /online?uid=%s: got %d %q, want 200 {\"online\":BOOL,\"conns\":N}", uid, resp.StatusCode, body)
	}
	return o.Conns
}

// TestUsers, in both modes: a user with connections on both workers gets
// one push on each; /push?uid= counts them and /online agrees; the last
// close unbinds (404); /room lists members and uids, paged; a broadcast
// with exclude skips the listed connections on both workers; a session
// written by one worker is read by the other.
func TestUsers(t *testing.T) {
	for _, mode := range []string{"base", "process"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2)
			alice := usersOnBoth(t, s, "u", "alice", 3)
			bob := dialMember(t, s, "bob", "room=u&name=bob&uid=bob")
			bob.waitUntil(t, 10*time.Second, "its own join", func(seen []string) bool { return hasJoin(seen, "bob") })

			// One SendToUID: every connection of alice, once each.
			resp, body := s.post("/push?uid=alice", "to-alice")
			if resp.StatusCode != 200 || body != strconv.Itoa(len(alice)) {
				t.Fatalf("POST /push?uid=alice: got %d %q, want 200 %q", resp.StatusCode, body, strconv.Itoa(len(alice)))
			}
			if got := online(t, s, "alice"); got != len(alice) {
				t.Errorf("/online?uid=alice conns: got %d, want %d", got, len(alice))
			}
			if resp, body := s.post("/broadcast?room=u", "mark1"); resp.StatusCode != 200 {
				t.Fatalf("broadcast: %d %q", resp.StatusCode, body)
			}
			for _, m := range append(alice, bob) {
				m.waitUntil(t, 10*time.Second, "mark1", func(seen []string) bool { return contains(seen, "mark1") })
			}
			for _, m := range alice {
				if n := count(m.seen, "to-alice"); n != 1 {
					t.Errorf("%s (worker %d): got the push %d times, want once", m.name, m.worker, n)
				}
			}
			if contains(bob.seen, "to-alice") {
				t.Errorf("bob got alice's push")
			}

			// Members, with uids, and paging.
			resp, body = s.get("/room?room=u")
			var room struct {
				Count   int `json:"count"`
				Members []struct {
					Conn string `json:"conn"`
					UID  string `json:"uid"`
				} `json:"members"`
				UIDs []string `json:"uids"`
				Next string   `json:"next"`
			}
			if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &room) != nil {
				t.Fatalf("GET /room: %d %q", resp.StatusCode, body)
			}
			want := map[string]string{bob.id: "bob"}
			for _, m := range alice {
				want[m.id] = "alice"
			}
			got := map[string]string{}
			for _, m := range room.Members {
				got[m.Conn] = m.UID
			}
			sort.Strings(room.UIDs)
			if room.Count != len(want) || fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(room.UIDs) != "[alice bob]" {
				t.Errorf("GET /room: got count %d members %v uids %v, want %d %v [alice bob]", room.Count, got, room.UIDs, len(want), want)
			}
			paged := map[string]string{}
			after := ""
			for page := 0; ; page++ {
				if page > len(want) {
					t.Fatalf("paging did not end after %d pages", page)
				}
				_, body := s.get("/room?room=u&limit=1&after=" + after)
				room.Next, room.Members = "", nil
				if err := json.Unmarshal([]byte(body), &room); err != nil || len(room.Members) > 1 {
					t.Fatalf("GET /room page: %q", body)
				}
				for _, m := range room.Members {
					paged[m.Conn] = m.UID
				}
				if room.Next == "" {
					break
				}
				after = room.Next
			}
			if fmt.Sprint(paged) != fmt.Sprint(want) {
				t.Errorf("members page by page: got %v, want %v", paged, want)
			}

			// Broadcast with exclude: one excluded member on each worker.
			ex0, ex1 := memberOn(alice, 0), memberOn(alice, 1)
			resp, body = s.post("/broadcast?room=u&exclude="+ex0.id+","+ex1.id, "not-for-ex")
			if resp.StatusCode != 200 || body != strconv.Itoa(len(want)-2) {
				t.Errorf("broadcast with exclude: got %d %q, want 200 %q", resp.StatusCode, body, strconv.Itoa(len(want)-2))
			}
			s.post("/broadcast?room=u", "mark2")
			for _, m := range append(alice, bob) {
				m.waitUntil(t, 10*time.Second, "mark2", func(seen []string) bool { return contains(seen, "mark2") })
				excluded := m == ex0 || m == ex1
				if n := count(m.seen, "not-for-ex"); (excluded && n != 0) || (!excluded && n != 1) {
					t.Errorf("%s (excluded %v): got the broadcast %d times", m.name, excluded, n)
				}
			}

			// A session, written by the connection's worker (the chat
			// keeps room and name), updated and read through both workers.
			resp, body = s.post("/session?conn="+ex0.id, `{"tier":"gold"}`)
			if resp.StatusCode != 200 {
				t.Fatalf("POST /session: %d %q", resp.StatusCode, body)
			}
			wantSession := `{"name":"` + ex0.name + `","room":"u","tier":"gold"}`
			readers := map[string]bool{}
			waitFor(t, 10*time.Second, "GET /session answered by both workers", func() bool {
				resp, body := getFresh(t, s, "/session?conn="+ex0.id)
				if body != wantSession {
					t.Fatalf("GET /session from worker %s: got %d %q, want %s", resp.Header.Get("X-Worker-Id"), resp.StatusCode, body, wantSession)
				}
				readers[resp.Header.Get("X-Worker-Id")] = true
				return readers["0"] && readers["1"]
			})
			big := `{"k":"` + strings.Repeat("x", 70<<10) + `"}`
			if resp, body := s.post("/session?conn="+ex0.id, big); resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("a session over the limit: got %d %q, want 413", resp.StatusCode, body)
			}
			if _, body := s.get("/session?conn=" + ex0.id); body != wantSession {
				t.Errorf("session after a refused update: got %s, want %s", body, wantSession)
			}

			// The last close unbinds.
			for i, m := range alice {
				m.c.Close()
				left := len(alice) - i - 1
				waitFor(t, 10*time.Second, fmt.Sprintf("alice down to %d connections", left), func() bool { return online(t, s, "alice") == left })
			}
			if resp, body := s.post("/push?uid=alice", "gone"); resp.StatusCode != 404 {
				t.Errorf("push to an offline user: got %d %q, want 404", resp.StatusCode, body)
			}
			if resp, body := s.post("/push?uid=bob", "still"); resp.StatusCode != 200 || body != "1" {
				t.Errorf("push to bob: got %d %q, want 200 \"1\"", resp.StatusCode, body)
			}
		})
	}
}

// seqOf returns a stamped chat line's seq and epoch.
func seqOf(line string) (seq uint64, epoch uint32, ok bool) {
	var v struct {
		Seq   *uint64 `json:"seq"`
		Epoch uint32  `json:"epoch"`
	}
	if json.Unmarshal([]byte(line), &v) != nil || v.Seq == nil {
		return 0, 0, false
	}
	return *v.Seq, v.Epoch, true
}

// leaveSeq waits until w sees name's leave and returns its seq and epoch.
func leaveSeq(t *testing.T, w *busMember, name string) (uint64, uint32) {
	t.Helper()
	var seq uint64
	var epoch uint32
	w.waitUntil(t, 10*time.Second, name+"'s leave", func(seen []string) bool {
		for _, l := range seen {
			var m chatMsg
			if json.Unmarshal([]byte(l), &m) == nil && m.Type == "leave" && m.Name == name {
				seq, epoch, _ = seqOf(l)
				return true
			}
		}
		return false
	})
	if seq == 0 || epoch == 0 {
		t.Fatalf("%s's leave carries no seq/epoch: %q", name, w.seen)
	}
	return seq, epoch
}

// TestUsersHistory, in both modes, three times each: a member leaves; the
// room gets five broadcasts, then more while the member reconnects with
// since=SEQ&epoch=E; it receives exactly the five, then every later one,
// in order, once each (the history keeps 40: all 25 are still kept however
// late the reconnect's recovery runs; with 20, a recovery that ran after
// the 16th lost since+1 and rightly got a gap, 1 run in 30 under load). Then the gap: a since older than the history, and
// one from another epoch, get {"type":"gap"} first.
func TestUsersHistory(t *testing.T) {
	for _, mode := range []string{"base", "process"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2, "--room-history", "40", "--room-history-ttl", "1h")
			watch := dialMember(t, s, "watch", "room=h&name=watch")
			// In the room once its own join is back (the welcome comes before the join).
			watch.waitUntil(t, 10*time.Second, "its own join", func(seen []string) bool { return hasJoin(seen, "watch") })
			for round := 0; round < 3; round++ {
				name := fmt.Sprintf("b%d", round)
				b := dialMember(t, s, name, "room=h&name="+name)
				b.waitUntil(t, 10*time.Second, "its own join", func(seen []string) bool { return hasJoin(seen, name) })
				b.c.Close()
				since, epoch := leaveSeq(t, watch, name)

				var want []string
				for i := 1; i <= 5; i++ {
					msg := fmt.Sprintf("r%d-m%d", round, i)
					want = append(want, msg)
					if resp, body := s.post("/broadcast?room=h", msg); resp.StatusCode != 200 {
						t.Fatalf("broadcast: %d %q", resp.StatusCode, body)
					}
				}
				// More, while the member reconnects: each must arrive once,
				// replayed or live, in order.
				var wg sync.WaitGroup
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 20; i++ {
						s.post("/broadcast?room=h", fmt.Sprintf("r%d-c%d", round, i))
					}
				}()
				for i := 0; i < 20; i++ {
					want = append(want, fmt.Sprintf("r%d-c%d", round, i))
				}
				back := dialMember(t, s, name, fmt.Sprintf("room=h&name=%s&since=%d&epoch=%d", name, since, epoch))
				wg.Wait()
				prefix := fmt.Sprintf("r%d-", round)
				checkReplay(t, back, fmt.Sprintf("round %d", round), prefix, want)
				if !strings.HasPrefix(back.seen[0], prefix+"m1") {
					t.Errorf("round %d: first message after the welcome: got %q, want %q", round, back.seen[0], prefix+"m1")
				}
				s.post("/broadcast?room=h", prefix+"live")
				back.waitUntil(t, 10*time.Second, "a live broadcast", func(seen []string) bool { return contains(seen, prefix+"live") })
				back.c.Close()
			}

			// Too old: 45 broadcasts after since, 40 kept.
			b := dialMember(t, s, "old", "room=h&name=old")
			b.waitUntil(t, 10*time.Second, "its own join", func(seen []string) bool { return hasJoin(seen, "old") })
			b.c.Close()
			since, epoch := leaveSeq(t, watch, "old")
			for i := 0; i < 45; i++ {
				s.post("/broadcast?room=h", fmt.Sprintf("old-%d", i))
			}
			for _, q := range []string{
				fmt.Sprintf("since=%d&epoch=%d", since, epoch),   // older than the history
				fmt.Sprintf("since=%d&epoch=%d", since, epoch+1), // another epoch
			} {
				g := dialMember(t, s, "g", "room=h&name=g&"+q)
				g.waitUntil(t, 10*time.Second, "old-44", func(seen []string) bool { return contains(seen, "old-44") })
				if g.seen[0] != `{"type":"gap","room":"h"}` {
					t.Errorf("%s: first message after the welcome: got %q, want the gap", q, g.seen[0])
				}
				if contains(g.seen, "old-0") || count(g.seen, "old-44") != 1 {
					t.Errorf("%s: after the gap, want the 40 kept messages once: %q", q, g.seen)
				}
				g.c.Close()
			}
		})
	}
}

// TestUsersSessionAfterKill (PROCESS): a session written through the API
// outlives the SIGKILL of the worker serving the connection and arrives
// with OnResume: the chat rebuilds its name from it.
func TestUsersSessionAfterKill(t *testing.T) {
	s := startServer(t, "process", 2)
	watch := dialMember(t, s, "watch", "room=k&name=watch")
	watch.waitUntil(t, 10*time.Second, "its own join", func(seen []string) bool { return hasJoin(seen, "watch") })
	a := dialMember(t, s, "a", "room=k&name=a&uid=ua")
	a.waitUntil(t, 10*time.Second, "its own join", func(seen []string) bool { return hasJoin(seen, "a") })
	if resp, body := s.post("/session?conn="+a.id, `{"name":"renamed"}`); resp.StatusCode != 200 {
		t.Fatalf("POST /session: %d %q", resp.StatusCode, body)
	}
	victim := s.workerPids()[a.worker]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the worker replaced", func() bool {
		for _, w := range s.status().Workers {
			if w.ID == a.worker && w.Pid != victim && w.State == master.StateReady {
				return true
			}
		}
		return false
	})
	if _, body := s.get("/session?conn=" + a.id); body != `{"name":"renamed","room":"k"}` {
		t.Errorf("session after the kill: got %s", body)
	}
	if n := online(t, s, "ua"); n != 1 {
		t.Errorf("uid after the kill: got %d connections, want 1", n)
	}
	if err := a.send("after the kill"); err != nil {
		t.Fatal(err)
	}
	watch.waitUntil(t, 15*time.Second, "the message", func(seen []string) bool {
		for _, m := range events(seen, "message") {
			if m.Text == "after the kill" {
				if m.From != "renamed" {
					t.Fatalf("message after the kill: from %q, want \"renamed\" (OnResume reads the session)", m.From)
				}
				return true
			}
		}
		return false
	})
}
