package forkd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// TestUsersAPI drives the users API through testdata/usersapp, in both
// modes, from whichever worker serves each request: binding, rebinding
// and unbinding uids; SendToUID, UIDOnline, UIDConns; paged RoomMembers
// and UIDsInRoom; per-room history with JoinSince (replay and gap) and
// BroadcastJSON with exclude; a reserved room name.
func TestUsersAPI(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "usersapp")
	args := []string{"build", "-o", bin}
	if apiRace {
		args = append(args, "-race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", append(args, "./testdata/usersapp")...).CombinedOutput(); err != nil {
		t.Fatalf("go build ./testdata/usersapp: %v\n%s", err, out)
	}
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) { usersAPI(t, startAPIServer(t, bin, mode)) })
	}
}

type usersConn struct {
	id string
	c  *websocket.Conn
}

func (u usersConn) next(t *testing.T) string {
	t.Helper()
	u.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := u.c.ReadMessage()
	if err != nil {
		t.Fatalf("conn %s: read: %v", u.id, err)
	}
	return string(b)
}

func usersAPI(t *testing.T, s *apiServer) {
	var conns []usersConn
	for i := 0; i < 3; i++ {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+s.wsAddr+"/u", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		u := usersConn{c: c}
		var hello struct{ Conn string }
		json.Unmarshal([]byte(u.next(t)), &hello)
		u.id = hello.Conn
		conns = append(conns, u)
	}
	c1, c2, c3 := conns[0], conns[1], conns[2]
	type answer struct {
		Err      string   `json:"err"`
		Conns    []string `json:"conns"`
		Online   bool     `json:"online"`
		Reached  int      `json:"reached"`
		Members  []string `json:"members"`
		UIDs     []string `json:"uids"`
		Seq      uint64   `json:"seq"`
		Epoch    uint32   `json:"epoch"`
		Gap      bool     `json:"gap"`
		Replayed int      `json:"replayed"`
	}
	do := func(q string, wantErr string) answer {
		t.Helper()
		var a answer
		s.get("/do?"+q, true, &a)
		if a.Err != wantErr {
			t.Fatalf("%s: got err %q, want %q", q, a.Err, wantErr)
		}
		slices.Sort(a.Conns)
		return a
	}
	sorted := func(ids ...string) string { slices.Sort(ids); return strings.Join(ids, ",") }

	do("op=bind&conn="+c1.id+"&uid=ann", "ok")
	do("op=bind&conn="+c2.id+"&uid=ann", "ok")
	do("op=bind&conn="+c3.id+"&uid=ben", "ok")
	if a := do("op=uidconns&uid=ann", "ok"); strings.Join(a.Conns, ",") != sorted(c1.id, c2.id) {
		t.Errorf("ann's conns: got %v, want %s", a.Conns, sorted(c1.id, c2.id))
	}
	do("op=bind&conn="+c2.id+"&uid=ben", "ok") // a connection has one uid: rebinding moves it
	if a := do("op=uidconns&uid=ann", "ok"); strings.Join(a.Conns, ",") != c1.id {
		t.Errorf("ann's conns after c2 moved: got %v, want %s", a.Conns, c1.id)
	}
	if a := do("op=uidconns&uid=ben", "ok"); strings.Join(a.Conns, ",") != sorted(c2.id, c3.id) {
		t.Errorf("ben's conns: got %v, want %s", a.Conns, sorted(c2.id, c3.id))
	}
	do("op=unbind&conn="+c1.id, "ok")
	if a := do("op=online&uid=ann", "ok"); a.Online {
		b := do("op=uidconns&uid=ann", "ok")
		time.Sleep(200 * time.Millisecond)
		c := do("op=online&uid=ann", "ok")
		t.Errorf("ann online after her only connection was unbound (conns %v; 200ms later online=%v; c1=%s c2=%s c3=%s)", b.Conns, c.Online, c1.id, c2.id, c3.id)
	}
	do("op=sendtouid&uid=ann&body=x", "noconn")
	if a := do("op=sendtouid&uid=ben&body=to-ben", "ok"); a.Reached != 2 {
		t.Errorf("SendToUID(ben): reached %d, want 2", a.Reached)
	}
	for _, u := range []usersConn{c2, c3} {
		if got := u.next(t); got != "to-ben" {
			t.Errorf("conn %s: got %q, want to-ben", u.id, got)
		}
	}
	do("op=bind&conn="+c1.id+"&uid=", "invalid")

	// Members, paged, with their uids.
	for _, u := range conns {
		do("op=join&room=g&conn="+u.id, "ok")
	}
	want := map[string]string{c1.id: "", c2.id: "ben", c3.id: "ben"}
	var got []string
	after := "0"
	for page := 0; page < 4; page++ {
		a := do("op=members&room=g&limit=2&after="+after, "ok")
		got = append(got, a.Members...)
		if len(a.Members) < 2 {
			break
		}
		after, _, _ = strings.Cut(a.Members[len(a.Members)-1], "=")
	}
	var wantList []string
	for id, uid := range want {
		wantList = append(wantList, id+"="+uid)
	}
	slices.SortFunc(wantList, func(a, b string) int { return len(a) - len(b) })
	if !slices.IsSortedFunc(got, func(a, b string) int {
		var x, y uint64
		fmt.Sscan(strings.Split(a, "=")[0], &x)
		fmt.Sscan(strings.Split(b, "=")[0], &y)
		return map[bool]int{true: -1, false: 1}[x < y]
	}) || len(got) != 3 || sorted(got...) != sorted(wantList...) {
		t.Errorf("members page by page: got %v, want %v by id", got, wantList)
	}
	if a := do("op=uidsinroom&room=g", "ok"); strings.Join(a.UIDs, ",") != "ben" {
		t.Errorf("UIDsInRoom(g): got %v, want [ben]", a.UIDs)
	}

	// History: a room keeping 2 messages; numbered broadcasts; replay and gap.
	do("op=history&room=h&max=2", "ok")
	var epoch uint32
	for i := 1; i <= 3; i++ {
		a := do("op=bcastjson&room=h&body="+url.QueryEscape(fmt.Sprintf(`{"n":%d}`, i)), "ok")
		if i == 1 {
			epoch = a.Epoch
		}
		if a.Seq != uint64(i) || a.Epoch != epoch || epoch == 0 {
			t.Fatalf("broadcast %d: got seq %d epoch %d, want seq %d in one epoch", i, a.Seq, a.Epoch, i)
		}
	}
	a := do(fmt.Sprintf("op=joinsince&room=h&conn=%s&since=1&epoch=%d", c1.id, epoch), "ok")
	if a.Gap || a.Replayed != 2 || a.Seq != 3 {
		t.Errorf("JoinSince(1): got %+v, want 2 replayed, no gap, at seq 3", a)
	}
	for _, want := range []string{fmt.Sprintf(`{"seq":2,"epoch":%d,"n":2}`, epoch), fmt.Sprintf(`{"seq":3,"epoch":%d,"n":3}`, epoch)} {
		if got := c1.next(t); got != want {
			t.Errorf("c1 replay: got %s, want %s", got, want)
		}
	}
	a = do(fmt.Sprintf("op=joinsince&room=h&conn=%s&since=0&epoch=%d", c2.id, epoch), "ok")
	if !a.Gap || a.Replayed != 2 {
		t.Errorf("JoinSince(0) with seq 1 gone: got %+v, want a gap and the 2 kept", a)
	}
	if got := c2.next(t); got != `{"type":"gap","room":"h"}` {
		t.Errorf("c2 first: got %s, want the gap", got)
	}
	c2.next(t)
	c2.next(t)
	if a := do("op=bcastjson&room=h&exclude="+c1.id+"&body="+url.QueryEscape(`{"n":4}`), "ok"); a.Reached != 1 || a.Seq != 4 {
		t.Errorf("broadcast excluding c1: got %+v, want reached 1 at seq 4", a)
	}
	if got := c2.next(t); got != fmt.Sprintf(`{"seq":4,"epoch":%d,"n":4}`, epoch) {
		t.Errorf("c2 live: got %s", got)
	}
	do("op=join&room="+url.QueryEscape("\x00uid:ben")+"&conn="+c1.id, "invalid")
	// c1 was excluded: the next thing it hears is this push.
	do("op=bind&conn="+c1.id+"&uid=cat", "ok")
	do("op=sendtouid&uid=cat&body=after", "ok")
	if got := c1.next(t); got != "after" {
		t.Errorf("c1 after the excluded broadcast: got %q, want \"after\"", got)
	}
}
