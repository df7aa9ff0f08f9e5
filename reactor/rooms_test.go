package reactor

import (
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd/ipc"
)

// roomRecorder is a Handler that remembers the last member count reported
// for each room, as the master does in BASE mode.
type roomRecorder struct {
	mu   sync.Mutex
	last map[string]int
}

func (h *roomRecorder) HTTP(*Listener, *fasthttp.RequestCtx) {}
func (h *roomRecorder) Open(*Conn)                           {}
func (h *roomRecorder) Message(*Conn, int, []byte)           {}
func (h *roomRecorder) Close(*Conn, int, string)             {}
func (h *roomRecorder) BufferFull(*Conn)                     {}
func (h *roomRecorder) BufferDrain(*Conn)                    {}
func (h *roomRecorder) RoomChanged(room string, n int) {
	if rand.IntN(2) == 0 { // widen the window between counting and reporting
		time.Sleep(time.Duration(rand.IntN(50)) * time.Microsecond)
	}
	h.mu.Lock()
	h.last[room] = n
	h.mu.Unlock()
}

// fakeWS adds a WebSocket-looking connection to r (rooms need only its
// id), with an id from the reactor's leases as Accept gives one.
func fakeWS(t testing.TB, r *Reactor) *Conn {
	a, b := net.Pipe()
	b.Close()
	id, err := r.newID()
	if err != nil {
		t.Fatalf("newID: %v", err)
	}
	c := &Conn{Conn: a, id: id, r: r}
	c.ws.Store(true)
	r.nconns.Add(1)
	r.mu.Lock()
	r.conns[c.id] = c
	r.mu.Unlock()
	return c
}

// TestBusRoomCounts: whatever the interleaving of joins and leaves, the last
// count a reactor reports for a room is the room's real member count (the
// master routes broadcasts by it: a stale 0 would starve a member).
func TestBusRoomCounts(t *testing.T) {
	h := &roomRecorder{last: map[string]int{}}
	r := New(Options{Owner: 1, FirstLease: IDLease}, h)
	defer r.Close()
	const n, rounds = 8, 150
	conns := make([]*Conn, n)
	for i := range conns {
		conns[i] = fakeWS(t, r)
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < rounds; j++ {
				if r.Join(c.id, "room") != ipc.OK {
					t.Error("join failed")
					return
				}
				// Odd connections end up in the room, even ones out of it.
				if j < rounds-1 || i%2 == 0 {
					r.Leave(c.id, "room")
				}
			}
		}()
	}
	wg.Wait()
	if got := r.Count("room"); got != n/2 {
		t.Fatalf("Count: got %d, want %d", got, n/2)
	}
	h.mu.Lock()
	last := h.last["room"]
	h.mu.Unlock()
	if last != n/2 {
		t.Errorf("last reported member count: got %d, want %d (reports overtook each other)", last, n/2)
	}
	// A closing member leaves its rooms, and that is reported too.
	conns[1].Close()
	h.mu.Lock()
	last = h.last["room"]
	h.mu.Unlock()
	if last != n/2-1 || r.Count("room") != n/2-1 {
		t.Errorf("after a member closed: reported %d, counted %d, want %d", last, r.Count("room"), n/2-1)
	}
}

// TestBusStaleID: a connection's id stops resolving once it is closed, and
// a restarted owner (the next lease from the master) issues other ids and
// resolves none of the old ones.
func TestBusStaleID(t *testing.T) {
	r := New(Options{Owner: 0, FirstLease: IDLease}, &roomRecorder{last: map[string]int{}})
	defer r.Close()
	c := fakeWS(t, r)
	if r.Conn(c.id) != c {
		t.Fatalf("Conn(%d): not found while open", c.id)
	}
	if out := r.Join(c.id, "x"); out != ipc.OK {
		t.Fatalf("Join: got outcome %d, want OK", out)
	}
	r.forget(c)
	if r.Conn(c.id) != nil || r.Count("x") != 0 {
		t.Fatalf("after close: Conn %v, room count %d; want gone", r.Conn(c.id), r.Count("x"))
	}
	for _, op := range []struct {
		name string
		out  ipc.Outcome
	}{
		{"Push", r.Push(c.id, Text, []byte("x"))},
		{"CloseConn", r.CloseConn(c.id, 1000, "")},
		{"Join", r.Join(c.id, "x")},
		{"Leave", r.Leave(c.id, "x")},
	} {
		if op.out != ipc.NoConnection {
			t.Errorf("%s on a stale id: got outcome %d, want NoConnection", op.name, op.out)
		}
	}
	r2 := New(Options{Owner: 0, FirstLease: 2 * IDLease}, &roomRecorder{last: map[string]int{}})
	defer r2.Close()
	c2 := fakeWS(t, r2)
	if c2.id == c.id || r2.Conn(c.id) != nil {
		t.Errorf("the same owner's next incarnation: id %d, old id %d resolves to %v; want distinct", c2.id, c.id, r2.Conn(c.id))
	}
}
