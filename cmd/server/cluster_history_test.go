package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/cluster"
)

// Users and room history across the nodes of a cluster (issue 19, item 5),
// with a PROCESS and a BASE node on a real NATS server.

// roomOwnedBy returns a room name (prefix-N) whose history owner, among
// nodes named names, is names[want].
func roomOwnedBy(t *testing.T, prefix string, names []string, want int) string {
	t.Helper()
	for i := 0; i < 1000; i++ {
		room := fmt.Sprintf("%s-%d", prefix, i)
		if cluster.RoomOwner(room, names) == want {
			return room
		}
	}
	t.Fatalf("no room of %s owned by %s", prefix, names[want])
	return ""
}

type roomPage struct {
	Count   int `json:"count"`
	Members []struct {
		Conn string `json:"conn"`
		UID  string `json:"uid"`
	} `json:"members"`
	Next    string `json:"next"`
	Missing []int  `json:"missing"`
}

func getRoom(t *testing.T, s *server, query string) roomPage {
	t.Helper()
	resp, body := getFresh(t, s, "/room?"+query)
	var p roomPage
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &p) != nil {
		t.Fatalf("GET /room?%s: %d %q", query, resp.StatusCode, body)
	}
	return p
}

// TestClusterUsersWide: a user with a connection on each node is online
// with both, and both ids, from either node; /room lists both nodes'
// members, paged by id across the nodes; a broadcast excluding the other
// node's connection skips it; a node that does not answer in time is
// named in "missing", not hidden.
func TestClusterUsersWide(t *testing.T) {
	ns := natsServer(t, 0, 0)
	nurl := natsURL(ns)
	n1 := startServer(t, "process", 2, "--cluster", nurl, "--node", "w1", "--cluster-timeout", "500ms")
	n2 := startServer(t, "base", 2, "--cluster", nurl, "--node", "w2", "--cluster-timeout", "500ms")
	waitNodes(t, n1, 15*time.Second, "w1", "w2")
	st := waitNodes(t, n2, 15*time.Second, "w1", "w2")
	a1 := joinChat(t, n1, n1.wsAddr, "lobby", "a1&uid=alice")
	a2 := joinChat(t, n2, n2.wsAddr, "lobby", "a2&uid=alice")
	b2 := joinChat(t, n2, n2.wsAddr, "lobby", "b2&uid=bob")
	ids := []string{a1.id, a2.id, b2.id}
	slices.SortFunc(ids, func(x, y string) int {
		a, _ := strconv.ParseUint(x, 10, 64)
		b, _ := strconv.ParseUint(y, 10, 64)
		return cmp.Compare(a, b)
	})
	for _, s := range []*server{n1, n2} {
		waitFor(t, 10*time.Second, "alice's two connections and ids as seen from "+s.mode, func() bool {
			resp, body := getFresh(t, s, "/online?uid=alice")
			return resp.StatusCode == 200 && strings.Contains(body, `"conns":2`) &&
				strings.Contains(body, `"`+a1.id+`"`) && strings.Contains(body, `"`+a2.id+`"`)
		})
		waitFor(t, 10*time.Second, "the lobby's three members as seen from "+s.mode, func() bool {
			return len(getRoom(t, s, "room=lobby").Members) == 3
		})
		// Pages of one, by id across the nodes: each member once, in order.
		// The other node answers within the 500 ms --cluster-timeout or is
		// named in "missing" (checked below with a stopped node): on a
		// loaded machine a page may come back so, correctly. Such a pass
		// is tried again; a complete one must be right.
		var got []string
		waitFor(t, 20*time.Second, "pages of /room from "+s.mode+" with no node missing", func() bool {
			got = got[:0]
			after := ""
			for page := 0; page < 5; page++ {
				p := getRoom(t, s, "room=lobby&limit=1&after="+after)
				if len(p.Missing) != 0 {
					return false
				}
				for _, m := range p.Members {
					got = append(got, m.Conn)
				}
				if p.Next == "" {
					break
				}
				after = p.Next
			}
			return true
		})
		if strings.Join(got, ",") != strings.Join(ids, ",") {
			t.Fatalf("paged /room from %s: got %v, want %v", s.mode, got, ids)
		}
		var p roomPage
		waitFor(t, 20*time.Second, "/room from "+s.mode+" with no node missing", func() bool {
			p = getRoom(t, s, "room=lobby")
			return len(p.Missing) == 0
		})
		if p.Count != 3 {
			t.Fatalf("/room from %s: %+v, want count 3", s.mode, p)
		}
	}

	// Exclude a connection of the other node: it is skipped there.
	for i, c := range []struct {
		via     *server
		skipped *busMember
		others  []*busMember
	}{{n1, a2, []*busMember{a1, b2}}, {n2, a1, []*busMember{a2, b2}}} {
		text := fmt.Sprintf("excluding-%d", i)
		resp, body := c.via.post("/broadcast?room=lobby&exclude="+c.skipped.id, text)
		if resp.StatusCode != 200 {
			t.Fatalf("broadcast with exclude: %d %q", resp.StatusCode, body)
		}
		mark := fmt.Sprintf("mark-%d", i)
		if resp, body := c.via.post("/broadcast?room=lobby", mark); resp.StatusCode != 200 {
			t.Fatalf("broadcast: %d %q", resp.StatusCode, body)
		}
		for _, m := range c.others {
			m.waitUntil(t, 10*time.Second, m.name+" gets "+text, seenText(text))
		}
		c.skipped.waitUntil(t, 10*time.Second, c.skipped.name+" gets "+mark, seenText(mark))
		if contains(c.skipped.seen, text) {
			t.Fatalf("%s, excluded on another node, got %q", c.skipped.name, text)
		}
	}

	// A node that does not answer (its master stopped) is named.
	var n2num int
	for _, p := range st.Nodes {
		if p.Name == "w2" {
			n2num = p.Node
		}
	}
	// sigstop waits until every thread has stopped: kill returns before,
	// and on a loaded machine a thread of w2's master still answered
	// (all three members, no node missing: 2 runs in 20 at load 10-15).
	cont := sigstop(t, n2.Cmd.Process.Pid)
	p := getRoom(t, n1, "room=lobby")
	resp, body := getFresh(t, n1, "/online?uid=alice")
	cont()
	if len(p.Missing) != 1 || p.Missing[0] != n2num || len(p.Members) != 1 || p.Members[0].Conn != a1.id {
		t.Fatalf("/room with node %d stopped: %+v, want a1 only and node %d missing", n2num, p, n2num)
	}
	if resp.StatusCode != 200 || !strings.Contains(body, fmt.Sprintf(`"missing":[%d]`, n2num)) || !strings.Contains(body, `"conns":1`) {
		t.Fatalf("/online with node %d stopped: %d %q, want conns 1 and it missing", n2num, resp.StatusCode, body)
	}
	waitFor(t, 10*time.Second, "w2 answering again", func() bool {
		p := getRoom(t, n1, "room=lobby")
		return len(p.Missing) == 0 && len(p.Members) == 3
	})
}

// TestClusterHistory: a room whose history node h1 (PROCESS) owns gets
// broadcasts through both nodes; a member that left reconnects with since
// on h2 (BASE; on h1 in odd rounds) while more are sent, and receives
// exactly the missed ones, in order, then the live ones, once each, four
// rounds. A replay bigger than --max-send-buffer arrives whole, paced, on
// either node, for a room of either node. The owner killed: a gap.
func TestClusterHistory(t *testing.T) {
	ns := natsServer(t, 0, 0)
	nurl := natsURL(ns)
	args := []string{"--cluster", nurl, "--room-history", "50", "--room-history-ttl", "1h", "--max-send-buffer", "64KiB"}
	n1 := startServer(t, "process", 2, append(args, "--node", "h1")...)
	n2 := startServer(t, "base", 2, append(args, "--node", "h2")...)
	waitNodes(t, n1, 15*time.Second, "h1", "h2")
	waitNodes(t, n2, 15*time.Second, "h1", "h2")
	names := []string{"h1", "h2"}
	room := roomOwnedBy(t, "hist", names, 0)
	nodes := []*server{n1, n2}

	watch := dialMember(t, n2, "watch", "room="+room+"&name=watch")
	watch.waitUntil(t, 10*time.Second, "its own join", func(seen []string) bool { return hasJoin(seen, "watch") })
	for round := 0; round < 4; round++ {
		back := n2
		if round%2 == 1 {
			back = n1
		}
		name := fmt.Sprintf("b%d", round)
		b := dialMember(t, n2, name, "room="+room+"&name="+name)
		b.waitUntil(t, 10*time.Second, "its own join", func(seen []string) bool { return hasJoin(seen, name) })
		b.c.Close()
		since, epoch := leaveSeq(t, watch, name)

		prefix := fmt.Sprintf("r%d-", round)
		var want []string
		for i := 1; i <= 5; i++ {
			msg := fmt.Sprintf("%sm%d", prefix, i)
			want = append(want, msg)
			if resp, body := nodes[i%2].post("/broadcast?room="+room, msg); resp.StatusCode != 200 {
				t.Fatalf("broadcast through %s: %d %q", nodes[i%2].mode, resp.StatusCode, body)
			}
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				nodes[i%2].post("/broadcast?room="+room, fmt.Sprintf("%sc%d", prefix, i))
			}
		}()
		for i := 0; i < 20; i++ {
			want = append(want, fmt.Sprintf("%sc%d", prefix, i))
		}
		r := dialMember(t, back, name, fmt.Sprintf("room=%s&name=%s&since=%d&epoch=%d", room, name, since, epoch))
		wg.Wait()
		checkReplay(t, r, fmt.Sprintf("round %d (reconnected on %s)", round, back.mode), prefix, want)
		for i, s := range nodes {
			live := fmt.Sprintf("%slive%d", prefix, i)
			s.post("/broadcast?room="+room, live)
			r.waitUntil(t, 10*time.Second, "a live broadcast", func(seen []string) bool { return contains(seen, live) })
		}
		r.c.Close()
	}

	// Replays bigger than the 64 KiB send buffer (40 x 4 KB) arrive whole,
	// paced, in order, then live ones: for a room of each node, recovered
	// on each node (from the local history or the owner's, into the
	// master's reactor or a BASE worker).
	for ri, owner := range []int{0, 1} {
		broom := roomOwnedBy(t, fmt.Sprintf("big%d", ri), names, owner)
		for bi, on := range nodes {
			bigReplay(t, on, nodes[(bi+1)%2], broom, fmt.Sprintf("b%d%d", ri, bi), fmt.Sprintf("room of %s recovered on %s", names[owner], on.mode))
		}
	}

	// The owner killed: a reconnecting client on h2 gets a gap, then the
	// room works on with its new owner.
	k := dialMember(t, n2, "k", "room="+room+"&name=k")
	k.waitUntil(t, 10*time.Second, "its own join", func(seen []string) bool { return hasJoin(seen, "k") })
	k.c.Close()
	since, epoch := leaveSeq(t, watch, "k")
	syscall.Kill(n1.Cmd.Process.Pid, syscall.SIGKILL)
	<-n1.Exited
	// Until presence drops it, a broadcast goes to the dead owner: 503,
	// saying whose answer is missing.
	if resp, body := n2.post("/broadcast?room="+room, "owner-dead"); resp.StatusCode != 503 || !strings.Contains(body, "room's owner node") {
		t.Fatalf("broadcast while the owner is dead: %d %q, want 503 naming the room's owner", resp.StatusCode, body)
	}
	kb := dialMember(t, n2, "k", fmt.Sprintf("room=%s&name=k&since=%d&epoch=%d", room, since, epoch))
	kb.waitUntil(t, 10*time.Second, "a first message", func(seen []string) bool { return len(seen) > 0 })
	if kb.seen[0] != fmt.Sprintf(`{"type":"gap","room":%q}`, room) {
		t.Fatalf("owner killed: first message %q, want the gap", kb.seen[0])
	}
	waitNodes(t, n2, 10*time.Second, "h2")
	waitFor(t, 10*time.Second, "a broadcast with the new owner", func() bool {
		resp, _ := n2.post("/broadcast?room="+room, "after-owner")
		return resp.StatusCode == 200
	})
	kb.waitUntil(t, 10*time.Second, "a live broadcast after the owner died", seenText("after-owner"))
}

// bigReplay: a member of room on node on leaves; 40 broadcasts of 4 KB
// (through on and other in turn); it reconnects on on with since and
// receives all 40, in order, no gap, then a live one sent through other.
func bigReplay(t *testing.T, on, other *server, room, name, what string) {
	t.Helper()
	pad := strings.Repeat("x", 4000)
	c := dialMember(t, on, name, "room="+room+"&name="+name)
	var since uint64
	var epoch uint32
	c.waitUntil(t, 10*time.Second, "its own join", func(seen []string) bool {
		for _, l := range seen {
			if hasJoin([]string{l}, name) {
				since, epoch, _ = seqOf(l)
				return true
			}
		}
		return false
	})
	c.c.Close()
	prefix := name + "-"
	var want []string
	for i := 0; i < 40; i++ {
		via := []*server{on, other}[i%2]
		if resp, body := via.post("/broadcast?room="+room, fmt.Sprintf("%s%02d-%s", prefix, i, pad)); resp.StatusCode != 200 {
			t.Fatalf("%s: broadcast: %d %q", what, resp.StatusCode, body)
		}
		want = append(want, fmt.Sprintf("%s%02d", prefix, i))
	}
	g := dialMember(t, on, name, fmt.Sprintf("room=%s&name=%s&since=%d&epoch=%d", room, name, since, epoch))
	live := prefix + "live"
	other.post("/broadcast?room="+room, live)
	want = append(want, live)
	g.waitUntil(t, 20*time.Second, "the whole replay and a live one", func(seen []string) bool { return contains(seen, live) })
	var got []string
	for _, l := range g.seen {
		if strings.Contains(l, `"gap"`) {
			t.Fatalf("%s: a gap in a replay that should be paced", what)
		}
		switch {
		case l == live:
			got = append(got, l)
		case strings.HasPrefix(l, prefix):
			got = append(got, l[:min(len(l), len(prefix)+2)])
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
	g.c.Close()
}
