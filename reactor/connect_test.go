package reactor

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/forkd/forkd/ipc"
)

// quietEcho is echoHandler with nobody listening for closes.
type quietEcho struct{ echoHandler }

func (h *quietEcho) Close(*Conn, int, string) {}

// startEcho serves WebSockets on a loopback port with h; the returned
// function stops the reactor.
func startEcho(tb testing.TB, h Handler) (string, *Reactor, func()) {
	tb.Helper()
	r := New(Options{Log: zerolog.Nop(), AllowedOrigins: []string{"*"}}, h)
	addr, stop := serveWS(tb, r)
	return addr, r, stop
}

// serveWS serves WebSockets with r on a loopback port; the returned
// function closes r and waits until Serve has returned.
func serveWS(tb testing.TB, r *Reactor) (string, func()) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(ln, &Listener{Name: "ws", Protocol: WebSocket}) }()
	return ln.Addr().String(), func() {
		r.Close()
		<-served
	}
}

// dialUpgraded serves WebSockets with r (serveWS), dials it and upgrades
// (upgradeRaw), with a deadline of d on the client's connection. The
// returned function closes the connection, then r.
func dialUpgraded(t *testing.T, r *Reactor, d time.Duration) (net.Conn, *bufio.Reader, func()) {
	t.Helper()
	addr, stop := serveWS(t, r)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	end := func() { nc.Close(); stop() }
	_ = nc.SetDeadline(time.Now().Add(d))
	br, err := upgradeRaw(nc)
	if err != nil {
		end()
		t.Fatal(err)
	}
	return nc, br, end
}

// bye is a client's close 1000 (zero masking key).
var bye = []byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8}

// upgradeRaw sends the upgrade request and reads the answer's head.
func upgradeRaw(nc net.Conn) (*bufio.Reader, error) {
	if _, err := nc.Write([]byte(testUpgrade)); err != nil {
		return nil, err
	}
	br := bufio.NewReader(nc)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		if len(line) == 2 {
			return br, nil
		}
	}
}

// connectOnce does what bench's connect scenario does: dial, upgrade, one
// echoed message, a close of ours, the server's close reply, then (end)
// either our close right away or a read of the server's FIN first.
func connectOnce(addr string, msg []byte, waitEOF bool) error {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	br, err := upgradeRaw(nc)
	if err != nil {
		return err
	}
	if _, err := nc.Write(append([]byte{0x82, 0x80 | byte(len(msg)), 0, 0, 0, 0}, msg...)); err != nil {
		return err
	}
	echo := make([]byte, 2+len(msg))
	if _, err := io.ReadFull(br, echo); err != nil {
		return err
	}
	if !bytes.Equal(echo[2:], msg) {
		return errors.New("echo mismatch")
	}
	if _, err := nc.Write(bye); err != nil {
		return err
	}
	reply := make([]byte, 4)
	if _, err := io.ReadFull(br, reply); err != nil {
		return err
	}
	if reply[0] != 0x88 || reply[2] != 0x03 || reply[3] != 0xe8 {
		return errors.New("no close 1000 reply")
	}
	if waitEOF {
		var one [1]byte
		if n, err := br.Read(one[:]); n != 0 || err != io.EOF {
			return errors.New("want EOF after the close reply")
		}
	}
	return nil
}

// waitClosed waits (bounded) for the reactor to report a close.
func waitClosed(t *testing.T, closed <-chan *Conn) {
	t.Helper()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the reactor never reported the close")
	}
}

// TestWSCloseAfterPeerClose: after a close the client starts, with nothing
// of its left unread, the server closes at once (see finish): the client
// reads its close reply and then a clean EOF, never a reset, whether it
// waits for the server's FIN or closes right away; with bytes after its
// close frame the server lingers, and the client still reads a clean EOF.
func TestWSCloseAfterPeerClose(t *testing.T) {
	h := &echoHandler{closeRecorder{closed: make(chan *Conn, 1)}}
	addr, r, stop := startEcho(t, h)
	defer stop()
	msg := bytes.Repeat([]byte{'m'}, 64)
	for i := range 200 {
		if err := connectOnce(addr, msg, i%2 == 0); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		waitClosed(t, h.closed)
	}
	// A client that sends more after its close frame, in the same write,
	// more than one read takes, then shuts its write side: the server must
	// not close with it unread (a reset) but drain it, and the client reads
	// the close reply and a clean EOF. The close frame comes right after
	// the upgrade (fasthttp reads the start), first in a read, or last in a
	// read that fills the read buffer (nothing after it in the buffer, but
	// more in the socket).
	junk := clientFrame(true, 0, opBinary, bytes.Repeat([]byte{'j'}, 64<<10), 7)
	filler := clientFrame(true, 0, opBinary, bytes.Repeat([]byte{'f'}, frameReadBufferBytes-8-len(bye)), 9)
	for i := range 60 {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		frames := append(append([]byte(nil), bye...), junk...)
		var br *bufio.Reader
		switch i % 3 {
		case 0:
			br, err = upgradeRaw(nc)
		case 1:
			frames = append([]byte(testUpgrade), frames...)
			br = bufio.NewReader(nc)
		case 2:
			br, err = upgradeRaw(nc)
			frames = append(append([]byte(nil), filler...), frames...)
		}
		if err == nil {
			_, err = nc.Write(frames)
		}
		if err == nil {
			err = nc.(*net.TCPConn).CloseWrite()
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(br)
		nc.Close()
		if err != nil {
			t.Fatalf("round %d: after the close reply: %v, want a clean EOF", i, err)
		}
		if !bytes.HasSuffix(got, []byte{0x88, 0x02, 0x03, 0xe8}) {
			t.Fatalf("round %d: got %q, want a close 1000 reply last", i, got)
		}
		waitClosed(t, h.closed)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.Len() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := r.Len(); n != 0 {
		t.Fatalf("%d connections still open after every client closed", n)
	}
}

// BenchmarkWSConnect is bench's connect scenario against a reactor in this
// process (the client's CPU and allocations are counted too): connections
// per second and allocations per connection of the upgrade and the close.
func BenchmarkWSConnect(b *testing.B) {
	addr, _, stop := startEcho(b, &quietEcho{})
	defer stop()
	msg := bytes.Repeat([]byte{'c'}, 64)
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan struct{})
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				if err := connectOnce(addr, msg, false); err != nil {
					mu.Lock()
					first = errors.Join(first, err)
					mu.Unlock()
				}
			}
		}()
	}
	for range b.N {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}

// TestHandshakeCopies pins what the allocation-free handshake helpers
// write: the accept key of RFC 6455's example, and remote addresses as
// net.Addr's String writes them.
func TestHandshakeCopies(t *testing.T) {
	if got, want := string(appendAcceptKey(nil, []byte("dGhlIHNhbXBsZSBub25jZQ=="))), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; got != want {
		t.Errorf("accept key: got %q, want %q", got, want)
	}
	for _, a := range []net.Addr{
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80},
		&net.TCPAddr{IP: net.ParseIP("10.1.2.3").To4(), Port: 65535},
		&net.TCPAddr{IP: net.ParseIP("::1"), Port: 443},
		&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 8080, Zone: "eth0"},
		&net.UnixAddr{Name: "/tmp/x.sock", Net: "unix"},
	} {
		if got, want := string(appendRemote([]byte("x"), a)), "x"+a.String(); got != want {
			t.Errorf("remote: got %q, want %q", got, want)
		}
	}
}

// hsRecorder hands on each upgraded connection's handshake copies.
type hsRecorder struct {
	quietEcho
	hs chan ipc.Handshake
}

func (h *hsRecorder) Open(c *Conn) { h.hs <- *c.Handshake() }

// TestHandshakeKept: the copies of the upgrade request a connection keeps
// (one allocation, three slices) are the remote address, the URI and the
// header block, each whole and none running into the next.
func TestHandshakeKept(t *testing.T) {
	h := &hsRecorder{hs: make(chan ipc.Handshake, 1)}
	addr, _, stop := startEcho(t, h)
	defer stop()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := strings.Replace(testUpgrade, "GET / ", "GET /room?x=1 ", 1)
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	var hs ipc.Handshake
	select {
	case hs = <-h.hs:
	case <-time.After(10 * time.Second):
		t.Fatal("no Open")
	}
	if got, want := string(hs.Remote), nc.LocalAddr().String(); got != want {
		t.Errorf("remote: got %q, want %q", got, want)
	}
	if got, want := string(hs.URI), "/room?x=1"; got != want {
		t.Errorf("uri: got %q, want %q", got, want)
	}
	if got := string(hs.Header); !strings.HasPrefix(got, "Host: x\r\n") || !strings.HasSuffix(got, "Origin: http://x\r\n\r\n") {
		t.Errorf("header block: got %q", got)
	}
	if cap(hs.Remote) != len(hs.Remote) || cap(hs.URI) != len(hs.URI) {
		t.Errorf("remote and uri may be appended to over the next copy: caps %d, %d", cap(hs.Remote), cap(hs.URI))
	}
}
