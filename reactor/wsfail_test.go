package reactor

import (
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd/ipc"
)

// holdingRooms is a Handler whose report of room "hold" waits until
// release is closed, as a BASE worker's report waits for the master's
// answer (which its ipc read loop brings) while holding the report lock.
type holdingRooms struct {
	entered, release chan struct{}
}

func (h *holdingRooms) HTTP(*Listener, *fasthttp.RequestCtx) {}
func (h *holdingRooms) Open(*Conn)                           {}
func (h *holdingRooms) Message(*Conn, int, []byte)           {}
func (h *holdingRooms) Close(*Conn, int, string)             {}
func (h *holdingRooms) BufferFull(*Conn)                     {}
func (h *holdingRooms) BufferDrain(*Conn)                    {}
func (h *holdingRooms) RoomChanged(room string, n int) {
	if room == "hold" && n > 0 {
		close(h.entered)
		<-h.release
	}
}

// resetWS adds to r a WebSocket connection over real TCP, written
// directly (rawc) as an upgraded one is, whose client has reset it.
func resetWS(t *testing.T, r *Reactor) *Conn {
	t.Helper()
	sc, cl := tcpPair(t)
	cl.(*net.TCPConn).SetLinger(0)
	cl.Close() // RST
	// The reset has arrived once a read sees it.
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := sc.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after the client's reset: no error")
	}
	sc.SetReadDeadline(time.Time{})
	raw, err := sc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	id, err := r.newID()
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{Conn: sc, id: id, r: r, rawc: raw}
	c.ws.Store(true)
	r.nconns.Add(1)
	r.mu.Lock()
	r.conns[c.id] = c
	r.mu.Unlock()
	return c
}

// TestWSDirectWriteFailureOffSender: a direct write (Send, or a close
// frame written by the goroutine that queued it) that fails because the
// client is gone does not close the connection on the sender's goroutine:
// closing leaves the connection's rooms, which takes the room report lock,
// and a BASE worker's sender is its ipc read loop, which a report holding
// that lock waits on (the uid-push deadlock). The flusher closes it, and
// it leaves its rooms once the report lock is free. In a loop: both paths,
// many times.
func TestWSDirectWriteFailureOffSender(t *testing.T) {
	for i := range 40 {
		h := &holdingRooms{entered: make(chan struct{}), release: make(chan struct{})}
		r := New(Options{Owner: 1, FirstLease: IDLease}, h)
		c := resetWS(t, r)
		if r.Join(c.id, "room") != ipc.OK {
			t.Fatal("join failed")
		}
		other := fakeWS(t, r)
		joined := make(chan struct{})
		go func() { r.Join(other.id, "hold"); close(joined) }()
		<-h.entered // the report lock is held until release

		sent := make(chan struct{})
		go func() {
			if i%2 == 0 {
				c.Send(Text, []byte("to a client that is gone"))
			} else {
				c.CloseWith(CloseNormal, "bye") // enqueue -> tryFlushDirect
			}
			close(sent)
		}()
		select {
		case <-sent:
		case <-time.After(5 * time.Second):
			close(h.release)
			t.Fatalf("round %d: the sender blocked behind the room report lock: a failed direct write closed the connection on its goroutine", i)
		}
		close(h.release)
		<-joined
		deadline := time.Now().Add(5 * time.Second)
		for r.Conn(c.id) != nil || r.Count("room") != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the connection whose write failed was not closed (held %v, room count %d)", i, r.Conn(c.id) != nil, r.Count("room"))
			}
			time.Sleep(time.Millisecond)
		}
		if out := c.Send(Text, []byte("after")); out == ipc.OK {
			t.Fatalf("round %d: Send after the failure: OK, want refused", i)
		}
		r.Close()
	}
}

// tcpPair returns both ends of a loopback TCP connection: the server's
// (accepted) and the client's.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		client.Close()
		t.Fatal(err)
	}
	return server, client
}
