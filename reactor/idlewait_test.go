package reactor

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// numbered answers each request with its n query argument, after sleeping
// the sleep argument (microseconds), and records whether the connection
// waits for its next request on the poller (idle set).
type numbered struct {
	closeRecorder
	waits, yields atomic.Int64
}

func (h *numbered) HTTP(_ *Listener, ctx *fasthttp.RequestCtx) {
	if ctx.ConnRequestNum() > 1 { // the connection waited for this one
		if c, ok := ctx.Conn().(*Conn); ok && c.idle != nil && c.idle != noIdleWait {
			h.waits.Add(1)
		} else {
			h.yields.Add(1)
		}
	}
	if us, _ := strconv.Atoi(string(ctx.QueryArgs().Peek("sleep"))); us > 0 {
		time.Sleep(time.Duration(us) * time.Microsecond)
	}
	if big, _ := strconv.Atoi(string(ctx.QueryArgs().Peek("big"))); big > 0 {
		ctx.SetBody(bigBody(big))
		return
	}
	ctx.SetBodyString(string(ctx.QueryArgs().Peek("n")))
}

func bigBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

func serveNumbered(t *testing.T, opts Options) (*Reactor, *numbered, string) {
	t.Helper()
	h := &numbered{}
	opts.Log = zerolog.Nop()
	r := New(opts, h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(ln, &Listener{Name: "http", Protocol: HTTP}) }()
	t.Cleanup(func() {
		r.Close()
		<-served
	})
	return r, h, ln.Addr().String()
}

func readAnswer(t *testing.T, br *bufio.Reader, want int) {
	t.Helper()
	var resp fasthttp.Response
	if err := resp.Read(br); err != nil {
		t.Fatalf("request %d: reading the answer: %v", want, err)
	}
	if resp.StatusCode() != 200 || string(resp.Body()) != strconv.Itoa(want) {
		t.Fatalf("request %d: got %d %q", want, resp.StatusCode(), resp.Body())
	}
}

// TestIdleWaitKeepAlive: on a plain TCP keep-alive connection every
// request is answered, in order, however its bytes arrive against the
// server's wait for them: sent after the previous answer was read (the
// server parked on the poller), during the previous request's handler
// (the readiness was seen while nobody waited), pipelined in one write,
// or split in two writes around a pause. The waits are the poller's, not
// the yield's: the runtime layout was recognised.
func TestIdleWaitKeepAlive(t *testing.T) {
	if pollCtxOff == 0 {
		t.Fatal("the runtime's poll state was not found: keep-alive connections would fall back to the yield")
	}
	_, h, addr := serveNumbered(t, Options{})
	nc, br := dialKeepAlive(t, addr)
	req := func(n, sleepUS int) string {
		return fmt.Sprintf("GET /?n=%d&sleep=%d HTTP/1.1\r\nHost: x\r\n\r\n", n, sleepUS)
	}
	n := 0
	for round := 0; round < 100; round++ {
		// After the answer was read.
		n++
		io.WriteString(nc, req(n, 0))
		readAnswer(t, br, n)
		// While the handler sleeps: the next request is there before the
		// connection waits again.
		n++
		io.WriteString(nc, req(n, 2000))
		time.Sleep(500 * time.Microsecond)
		io.WriteString(nc, req(n+1, 0))
		readAnswer(t, br, n)
		n++
		readAnswer(t, br, n)
		// Pipelined in one write.
		io.WriteString(nc, req(n+1, 0)+req(n+2, 0)+req(n+3, 0))
		for i := 1; i <= 3; i++ {
			readAnswer(t, br, n+i)
		}
		n += 3
		// Split around a pause: the connection waits again mid-request.
		n++
		s := req(n, 0)
		io.WriteString(nc, s[:10])
		time.Sleep(time.Duration(round%3) * 200 * time.Microsecond)
		io.WriteString(nc, s[10:])
		readAnswer(t, br, n)
	}
	if h.waits.Load() != int64(n-1) || h.yields.Load() != 0 {
		t.Fatalf("%d requests after the first: %d on connections waiting on the poller, %d yielding", n-1, h.waits.Load(), h.yields.Load())
	}
}

// TestIdleWaitLargeAnswers: answers larger than the socket's buffer, to a
// client that reads them late, arrive whole and in order on a keep-alive
// connection (a write that the socket takes only in part goes on through
// the connection's own Write), followed by a small one.
func TestIdleWaitLargeAnswers(t *testing.T) {
	_, _, addr := serveNumbered(t, Options{})
	nc, br := dialKeepAlive(t, addr)
	for i, size := range []int{4 << 20, 1, 16 << 20, 65536, 3<<20 + 7} {
		fmt.Fprintf(nc, "GET /?big=%d HTTP/1.1\r\nHost: x\r\n\r\n", size)
		time.Sleep(20 * time.Millisecond) // the server fills the socket first
		var resp fasthttp.Response
		if err := resp.Read(br); err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if !bytes.Equal(resp.Body(), bigBody(size)) {
			t.Fatalf("answer %d: %d bytes, not the %d sent", i, len(resp.Body()), size)
		}
		fmt.Fprintf(nc, "GET /?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
		readAnswer(t, br, i)
	}
}

// TestIdleWaitWakes: a connection parked waiting for its next request is
// ended by each of what ends it: the idle timeout (the sweeper's past
// deadline), the client's close, the reactor's drain (shutIdle) and its
// close. In a loop: each is a race against the wait.
func TestIdleWaitWakes(t *testing.T) {
	for i := 0; i < 10; i++ {
		for _, how := range []string{"idle timeout", "client close", "drain", "close"} {
			r, _, addr := serveNumbered(t, Options{IdleTimeout: 200 * time.Millisecond})
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(nc)
			io.WriteString(nc, "GET /?n=1 HTTP/1.1\r\nHost: x\r\n\r\n")
			readAnswer(t, br, 1)
			time.Sleep(time.Duration(i) * time.Millisecond) // parked, or about to
			switch how {
			case "client close":
				nc.Close()
			case "drain":
				r.Drain()
			case "close":
				r.Close()
			}
			if how != "client close" {
				// The server ends the connection: the client reads EOF.
				if _, err := br.ReadByte(); err == nil {
					t.Fatalf("%s: the connection sent more after its answer", how)
				} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("%s: the connection was not ended within 10 s", how)
				}
				nc.Close()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = r.Wait(ctx)
			cancel()
			if err != nil {
				t.Fatalf("%s: the server still holds %d connections", how, r.Len())
			}
		}
	}
}

// dialKeepAlive dials addr for a keep-alive test: the connection (closed
// when t ends, a minute's deadline) and a reader of its answers.
func dialKeepAlive(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(60 * time.Second))
	return nc, bufio.NewReader(nc)
}

// TestIdleWaitFullBuffer: pipelined requests whose first part ends exactly
// at the end of fasthttp's read buffer (32 requests of 512 bytes in its
// 16 KiB) are all answered. The read that filled the buffer left the rest
// in the socket, which raises no new edge: a wait on the poller there
// would sleep until the idle timeout and close with them unread.
func TestIdleWaitFullBuffer(t *testing.T) {
	_, _, addr := serveNumbered(t, Options{IdleTimeout: 3 * time.Second})
	for round := 0; round < 10; round++ {
		nc, br := dialKeepAlive(t, addr)
		var b bytes.Buffer
		for i := 1; i <= 64; i++ {
			s := fmt.Sprintf("GET /?n=%d&pad= HTTP/1.1\r\nHost: x\r\n\r\n", i)
			fmt.Fprintf(&b, "GET /?n=%d&pad=%s HTTP/1.1\r\nHost: x\r\n\r\n", i, bytes.Repeat([]byte("p"), 512-len(s)))
		}
		if b.Len() != 64*512 {
			t.Fatalf("the requests are %d bytes, want %d", b.Len(), 64*512)
		}
		if _, err := nc.Write(b.Bytes()); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 64; i++ {
			readAnswer(t, br, i)
		}
		nc.Close()
	}
}

// TestIdleWaitHalfClose: a client that sends its last request and
// half-closes while the one before is being handled gets both answers,
// then the end of the connection within a second, not at the idle
// timeout. The FIN arrives before the read that takes the last request,
// raising its edge before that read and none after: the wait for a next
// request would sleep on it (wakeIfPeerClosed ends it).
func TestIdleWaitHalfClose(t *testing.T) {
	if pollCtxOff == 0 {
		t.Skip("runtime layout not recognised: connections yield instead of waiting")
	}
	r, _, addr := serveNumbered(t, Options{IdleTimeout: time.Minute})
	for i := 0; i < 10; i++ {
		nc, br := dialKeepAlive(t, addr)
		io.WriteString(nc, "GET /?n=1&sleep=20000 HTTP/1.1\r\nHost: x\r\n\r\n")
		time.Sleep(5 * time.Millisecond) // the handler sleeps
		io.WriteString(nc, "GET /?n=2 HTTP/1.1\r\nHost: x\r\n\r\n")
		nc.(*net.TCPConn).CloseWrite()
		readAnswer(t, br, 1)
		readAnswer(t, br, 2)
		start := time.Now()
		_ = nc.SetReadDeadline(start.Add(3 * time.Second))
		if b, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("round %d: after both answers: %q %v after %s, want EOF within a second", i, b, err, time.Since(start))
		}
		nc.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Wait(ctx); err != nil {
		t.Fatalf("the server still holds %d connections", r.Len())
	}
}
