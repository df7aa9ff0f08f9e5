package reactor

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// deferringEcho answers as PROCESS mode's master does: Message only
// records; Close defers the close owed (DeferCloseReply) and, once
// released, sends the echoes of what was recorded, then the close with the
// code it was told (as the worker's ClosedReply answer does).
type deferringEcho struct {
	mu      sync.Mutex
	msgs    map[*Conn][][]byte
	closes  chan int
	release chan struct{}
}

func (h *deferringEcho) HTTP(_ *Listener, ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(404) }
func (h *deferringEcho) Open(*Conn)                                 {}
func (h *deferringEcho) BufferFull(*Conn)                           {}
func (h *deferringEcho) BufferDrain(*Conn)                          {}
func (h *deferringEcho) RoomChanged(string, int)                    {}
func (h *deferringEcho) Message(c *Conn, _ int, p []byte) {
	h.mu.Lock()
	h.msgs[c] = append(h.msgs[c], append([]byte(nil), p...))
	h.mu.Unlock()
}

func (h *deferringEcho) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.msgs {
		n += len(m)
	}
	return n
}

func (h *deferringEcho) Close(c *Conn, code int, _ string) {
	deferred := c.DeferCloseReply()
	h.closes <- code
	if !deferred {
		return
	}
	go func() {
		<-h.release
		h.mu.Lock()
		msgs := h.msgs[c]
		h.mu.Unlock()
		for _, p := range msgs {
			c.Send(Text, p)
		}
		c.CloseWith(EchoCode(code), "")
	}()
}

// TestHalfCloseDeferredEnd: a client half-closes (FIN, no close frame)
// after three messages whose answers the handler defers, as PROCESS mode
// does. The handler is told 1006 (abnormal) and may defer the end; a
// drain, or the heartbeat (the client is silent meanwhile), does not cut
// the connection with a 1001 or a 1000; once the handler answers, the
// client reads the three echoes, then EOF: no close frame (1006 may not
// be sent), no reset. Repeated: the FIN is read by the loop's wait or,
// when it came with the messages, by the sweeper.
func TestHalfCloseDeferredEnd(t *testing.T) {
	for i := range 12 {
		t.Run(fmt.Sprint(i), func(t *testing.T) { halfCloseDeferred(t, i%3) })
		if t.Failed() {
			return
		}
	}
}

// What else happens while the handler holds the end back.
const (
	meanwhileNothing = iota
	meanwhileDrain
	meanwhileHeartbeat
)

func halfCloseDeferred(t *testing.T, meanwhile int) {
	h := &deferringEcho{msgs: map[*Conn][][]byte{}, closes: make(chan int, 1), release: make(chan struct{})}
	opts := Options{Log: zerolog.Nop(), AllowedOrigins: []string{"*"}}
	hold := 50 * time.Millisecond // nothing goes out before the handler answers
	if meanwhile == meanwhileHeartbeat {
		// Several heartbeat ticks past the idle limit, the client silent
		// (its FIN is read first: below). The limit is also the window
		// between the last message read and the FIN read, which must come
		// first: a second, not 300 ms, so that a stalled process (-race, a
		// loaded CI box) does not see the heartbeat win that race (a close
		// 1000 before the 1006 the test is about). The hold, 2.5 s, still
		// spans about five sweeps past the limit, where a heartbeat that
		// cut a deferred end would.
		opts.HeartbeatIdle, hold = time.Second, 2500*time.Millisecond
	}
	r := New(opts, h)
	nc, br, end := dialUpgraded(t, r, 15*time.Second)
	defer end()
	var out []byte
	for k := range 3 {
		out = append(out, maskedFrame(fmt.Sprintf("m%d", k))...)
	}
	if _, err := nc.Write(out); err != nil {
		t.Fatal(err)
	}
	if meanwhile == meanwhileHeartbeat {
		// The FIN on its own once the messages are handled, read at once
		// (not by the sweeper's look, which may come after the
		// heartbeat's limit).
		deadline := time.Now().Add(10 * time.Second)
		for h.count() < 3 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	if err := nc.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-h.closes:
		if code != CloseAbnormal {
			t.Fatalf("the handler was told close %d, want %d", code, CloseAbnormal)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the FIN was never reported to the handler")
	}
	if meanwhile == meanwhileDrain {
		r.Drain()
	}
	time.Sleep(hold)
	close(h.release)
	for k := range 3 {
		hdr := make([]byte, 4)
		if _, err := io.ReadFull(br, hdr); err != nil {
			t.Fatalf("echo %d: %v", k, err)
		}
		if hdr[0] != 0x81 || hdr[1] != 2 || string(hdr[2:]) != fmt.Sprintf("m%d", k) {
			t.Fatalf("echo %d: got %x, want a text frame \"m%d\"", k, hdr, k)
		}
	}
	rest, err := io.ReadAll(br)
	if errors.Is(err, syscall.ECONNRESET) {
		t.Fatal("the server reset the connection")
	}
	if err != nil || len(rest) != 0 {
		t.Fatalf("after the echoes: %x %v, want EOF and nothing else", rest, err)
	}
}
