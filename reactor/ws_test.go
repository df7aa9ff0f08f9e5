package reactor

import (
	"net"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd/ipc"
)

// closeRecorder hands on each WebSocket the reactor reports closed.
type closeRecorder struct{ closed chan *Conn }

func (h *closeRecorder) HTTP(_ *Listener, ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(404) }
func (h *closeRecorder) Open(*Conn)                                 {}
func (h *closeRecorder) Message(*Conn, int, []byte)                 {}
func (h *closeRecorder) Close(c *Conn, _ int, _ string)             { h.closed <- c }
func (h *closeRecorder) BufferFull(*Conn)                           {}
func (h *closeRecorder) BufferDrain(*Conn)                          {}
func (h *closeRecorder) RoomChanged(string, int)                    {}

// TestWSLateWrite: a connection's writer may still be flushing when its
// read loop ends (serveWS returns and closes the socket a moment later). A
// write through the WebSocket after that must fail cleanly. By default
// fasthttp recycles a hijacked connection's wrapper as soon as the upgrade
// handler returns: the late write then found a nil connection (a panic in
// the writer goroutine that took the master down under a connection storm)
// or, once the wrapper served the next upgrade, another client's socket.
func TestWSLateWrite(t *testing.T) {
	h := &closeRecorder{closed: make(chan *Conn, 1)}
	r := New(Options{Log: zerolog.Nop()}, h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(ln, &Listener{Name: "ws", Protocol: WebSocket}) }()
	defer func() {
		r.Close()
		<-served
	}()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Cut without a close frame: had the server written a close of its
	// own, the WebSocket would refuse later writes before touching the
	// socket.
	ws.NetConn().Close()
	var c *Conn
	select {
	case c = <-h.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the reactor never reported the close")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !c.closed.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // whatever follows the handler's return has run
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("a write after the read loop ended panicked: %v", p)
			}
		}()
		if out := c.Send(Text, []byte("late")); out == ipc.OK {
			t.Error("a send on a closed connection was accepted")
		}
		if err := c.writeBatch([]outMsg{{op: Text, data: []byte("late")}}); err == nil {
			t.Error("a write on a closed connection succeeded")
		}
	}()
}
