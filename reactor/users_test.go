package reactor

import (
	"strings"
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
