package reactor

import (
	"strings"
	"sync"
	"testing"

	"github.com/forkd/forkd/ipc"
)

// TestSession: set replaces, update merges, get reads; a session over
// ipc.MaxSession, or a value that is not a flat object of strings, is
// refused and leaves the session as it was.
func TestSession(t *testing.T) {
	var u userState
	step := func(op uint8, in string, wantOut ipc.Outcome, want string) {
		t.Helper()
		out, b := u.apply(op, []byte(in))
		if out != wantOut || (out == ipc.OK && string(b) != want) {
			t.Errorf("op %d %q: got %v %s, want %v %s", op, in, out, b, wantOut, want)
		}
	}
	step(ipc.SessionGet, "", ipc.OK, "null")
	step(ipc.SessionSet, `{"a":"1","b":"2"}`, ipc.OK, `{"a":"1","b":"2"}`)
	step(ipc.SessionUpdate, `{"b":"3","c":"4"}`, ipc.OK, `{"a":"1","b":"3","c":"4"}`)
	step(ipc.SessionSet, `{"z":"9"}`, ipc.OK, `{"z":"9"}`)
	step(ipc.SessionUpdate, `{"n":1}`, ipc.Failed, "")
	step(ipc.SessionUpdate, `{"big":"`+strings.Repeat("x", ipc.MaxSession)+`"}`, ipc.TooLarge, "")
	half := strings.Repeat("y", ipc.MaxSession/2+10)
	step(ipc.SessionUpdate, `{"h1":"`+half+`"}`, ipc.OK, `{"h1":"`+half+`","z":"9"}`)
	step(ipc.SessionUpdate, `{"h2":"`+half+`"}`, ipc.TooLarge, "") // the merge would be too large
	step(ipc.SessionGet, "", ipc.OK, `{"h1":"`+half+`","z":"9"}`)
	step(9, `{}`, ipc.Failed, "")
}

// TestBindUIDCloseRace: a uid bound to a user's connections while one of
// them closes, in every interleaving (many rounds): the uid's room holds
// exactly the open connections bound to it, the last count reported
// says so (the master routes pushes by it), and the closed connection is
// in no room. This rules out the users bookkeeping in the uid-push bug
// (whose cause was a failed direct write closing a connection on a BASE
// worker's ipc read loop: see TestWSDirectWriteFailureOffSender).
func TestBindUIDCloseRace(t *testing.T) {
	h := &roomRecorder{last: map[string]int{}}
	r := New(Options{Owner: 1, FirstLease: IDLease}, h)
	defer r.Close()
	for round := range 300 {
		uid := "u" + strings.Repeat("x", round%3)
		conns := []*Conn{fakeWS(t, r), fakeWS(t, r), fakeWS(t, r)}
		closing := conns[round%3]
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.BindUID(c.id, uid)
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			closing.Close()
		}()
		wg.Wait()
		room := UIDRoom(uid)
		if got := r.Count(room); got != 2 {
			t.Fatalf("round %d: the uid's room holds %d connections, want the 2 open ones", round, got)
		}
		h.mu.Lock()
		last := h.last[room]
		h.mu.Unlock()
		if last != 2 {
			t.Fatalf("round %d: last count reported %d, want 2", round, last)
		}
		closing.mu.Lock()
		rooms := len(closing.rooms)
		closing.mu.Unlock()
		if rooms != 0 {
			t.Fatalf("round %d: the closed connection is still in %d rooms", round, rooms)
		}
		for _, c := range conns {
			if c != closing {
				r.BindUID(c.id, "")
				c.Close()
			}
		}
		if got := r.Count(room); got != 0 {
			t.Fatalf("round %d: after every connection unbound and closed, the room holds %d", round, got)
		}
	}
}
