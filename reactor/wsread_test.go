package reactor

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

const testUpgrade = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://x\r\n\r\n"

// maskedFrame is a client text frame with an all-zero masking key.
func maskedFrame(p string) []byte {
	return append([]byte{0x81, 0x80 | byte(len(p)), 0, 0, 0, 0}, p...)
}

// TestHijackedReader pins how the read loop finds what fasthttp read past
// the upgrade request (wsread.go reads fasthttp's hijacked connection's
// field by reflection): with bytes past the request, their reader; with
// none, a reader that holds nothing.
func TestHijackedReader(t *testing.T) {
	for _, extra := range []string{"", "tail bytes"} {
		got := make(chan *bufio.Reader, 1)
		oks := make(chan bool, 1)
		s := &fasthttp.Server{KeepHijackedConns: true, Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.Hijack(func(nc net.Conn) {
				br, pool, ok := hijackedReader(nc)
				oks <- ok && pool != nil && readerPoolOK
				got <- br
				nc.Close()
			})
		}}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		rr := New(Options{Log: zerolog.Nop()}, &closeRecorder{})
		go s.Serve(&countingListener{ln, rr})
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write([]byte(testUpgrade + extra)); err != nil {
			t.Fatal(err)
		}
		select {
		case ok := <-oks:
			br := <-got
			if !ok {
				t.Fatal("fasthttp's hijacked reader or reader pool was not found: the read loop would hold a buffer per connection")
			}
			n := 0
			if br != nil {
				n = br.Buffered()
			}
			if n != len(extra) {
				t.Errorf("extra %q: %d bytes buffered, want %d", extra, n, len(extra))
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no hijack")
		}
		nc.Close()
		ln.Close()
		s.Shutdown()
		rr.Close()
	}
}

// countingListener hands fasthttp *Conn values, as the reactor does.
type countingListener struct {
	net.Listener
	r *Reactor
}

func (l *countingListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: nc, r: l.r}, nil
}

type echoHandler struct{ closeRecorder }

func (h *echoHandler) Message(c *Conn, op int, p []byte) { c.Send(op, p) }

// TestWSReadRaw: frames sent in the same packet as the upgrade request,
// then frames split at every byte, then a burst, come back whole and in
// order through the read loop that holds no buffer while idle.
func TestWSReadRaw(t *testing.T) {
	for range 3 {
		h := &echoHandler{closeRecorder{closed: make(chan *Conn, 1)}}
		r := New(Options{Log: zerolog.Nop(), AllowedOrigins: []string{"*"}}, h)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- r.Serve(ln, &Listener{Name: "ws", Protocol: WebSocket}) }()
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		want := []string{"a", "bb"}
		if _, err := nc.Write(append(append([]byte(testUpgrade), maskedFrame("a")...), maskedFrame("bb")...)); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(nc)
		status, err := br.ReadString('\n')
		if err != nil || !strings.Contains(status, "101") {
			t.Fatalf("upgrade: %q %v", status, err)
		}
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if l == "\r\n" {
				break
			}
		}
		slow := maskedFrame("slow")
		for _, b := range slow {
			time.Sleep(2 * time.Millisecond)
			if _, err := nc.Write([]byte{b}); err != nil {
				t.Fatal(err)
			}
		}
		want = append(want, "slow")
		var burst []byte
		for i := range 500 {
			p := strings.Repeat(string(rune('a'+i%26)), i%40+1)
			burst = append(burst, maskedFrame(p)...)
			want = append(want, p)
		}
		if _, err := nc.Write(burst); err != nil {
			t.Fatal(err)
		}
		for i, w := range want {
			var hdr [2]byte
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				t.Fatalf("echo %d: %v", i, err)
			}
			p := make([]byte, hdr[1]&0x7f)
			if _, err := io.ReadFull(br, p); err != nil {
				t.Fatal(err)
			}
			if hdr[0] != 0x81 || !bytes.Equal(p, []byte(w)) {
				t.Fatalf("echo %d: %x %q, want %q", i, hdr[0], p, w)
			}
		}
		nc.Close()
		select {
		case <-h.closed:
		case <-time.After(5 * time.Second):
			t.Fatal("no close")
		}
		r.Close()
		<-served
	}
}
