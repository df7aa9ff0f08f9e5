package reactor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// rawPair returns a frame reader set up as attach sets one up after an
// upgrade (reading a plain TCP socket raw, waiting on the poller), over
// the server side of a loopback connection, and the client side.
func rawPair(t *testing.T, max int) (*frameReader, net.Conn) {
	t.Helper()
	sc, cl := tcpPair(t)
	r := New(Options{Log: zerolog.Nop()}, &closeRecorder{})
	c := &Conn{Conn: sc, r: r}
	c.ws.Store(true)
	fr := newFrameReader(nil, max)
	fr.c, fr.src = c, c
	fr.useRaw(sc.(*net.TCPConn))
	t.Cleanup(func() {
		cl.Close()
		sc.Close()
		r.Close()
	})
	if fr.waitFn == nil {
		t.Fatal("the runtime's poll state was not found: WebSocket reads would not wait on the poller")
	}
	return fr, cl
}

type readMsg struct {
	op     int
	p      []byte
	waited bool
	err    error
}

// readAll runs fr's read loop, handing on each message (copied) and
// whether the read that brought it waited on the poller; it ends at the
// first error.
func readAll(fr *frameReader) <-chan readMsg {
	out := make(chan readMsg)
	go func() {
		defer fr.release()
		for {
			op, p, err := fr.next()
			out <- readMsg{op, bytes.Clone(p), fr.waited, err}
			if err != nil {
				return
			}
		}
	}()
	return out
}

func nextMsg(t *testing.T, in <-chan readMsg, what string) readMsg {
	t.Helper()
	select {
	case m := <-in:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no message within 10 s (a wait that missed its bytes?)", what)
		return readMsg{}
	}
}

// frame is a masked client frame of op with payload p (a random key).
func frame(fin bool, op byte, p []byte) []byte {
	return clientFrame(fin, 0, op, p, rand.Uint32())
}

// TestWSWaitReads: the frame reader's wait on the poller loses nothing and
// keeps order, however the peer's bytes meet it: a message sent while the
// reader waits (the wait's own read brings it), one sent while the
// previous is being handled (before the wait), bursts whose reads fill the
// 4 KiB buffer exactly (so the socket still holds more that raises no new
// edge: the next read must read first), frames split across reads and
// pauses, large and fragmented messages read straight into the message,
// and the peer's EOF. Random sizes, several rounds.
func TestWSWaitReads(t *testing.T) {
	for round := range 5 {
		fr, cl := rawPair(t, 1<<20)
		in := readAll(fr)
		rng := rand.New(rand.NewSource(int64(round)))
		n := 0
		expect := func(op int, p []byte, what string) readMsg {
			t.Helper()
			n++
			m := nextMsg(t, in, what)
			if m.err != nil || m.op != op || !bytes.Equal(m.p, p) {
				t.Fatalf("round %d, %s, message %d: got op %d, %d bytes, %v; want op %d, %d bytes", round, what, n, m.op, len(m.p), m.err, op, len(p))
			}
			return m
		}
		write := func(b []byte) {
			t.Helper()
			if _, err := cl.Write(b); err != nil {
				t.Fatal(err)
			}
		}

		// Sent while the reader waits: the wait brings it.
		waited := 0
		for i := range 20 {
			time.Sleep(2 * time.Millisecond)
			p := fmt.Appendf(nil, "idle %d", i)
			write(frame(true, opText, p))
			if expect(opText, p, "sent while waiting").waited {
				waited++
			}
		}
		if waited == 0 {
			t.Fatalf("round %d: none of 20 messages sent to a waiting reader came from the wait", round)
		}

		// Sent before the reader is back from the previous one: in is
		// unbuffered, so the reader holds the previous message until it
		// is taken.
		for i := range 20 {
			a, b := fmt.Appendf(nil, "a%d", i), fmt.Appendf(nil, "b%d", i)
			write(frame(true, opBinary, a))
			time.Sleep(time.Duration(i%3) * 100 * time.Microsecond)
			write(frame(true, opBinary, b))
			time.Sleep(time.Duration(i%2) * time.Millisecond)
			expect(opBinary, a, "first of two")
			expect(opBinary, b, "second of two")
		}

		// Bursts whose reads fill the buffer exactly: 128-byte frames, 32
		// to 4 KiB, the whole burst in one write.
		for _, count := range []int{32, 64, 33, 96} {
			var burst []byte
			var want [][]byte
			for i := range count {
				p := bytes.Repeat([]byte{byte('a' + i%26)}, 128-6)
				p[0] = byte(i)
				burst = append(burst, frame(true, opBinary, p)...)
				want = append(want, p)
			}
			write(burst)
			for _, p := range want {
				expect(opBinary, p, fmt.Sprintf("burst of %d filling the buffer", count))
			}
		}

		// Random traffic: sizes from 0 to 200 KiB (large ones read straight
		// into the message), some fragmented, written in random pieces with
		// pauses, a ping now and then.
		var stream []byte
		type want struct {
			op int
			p  []byte
		}
		var wants []want
		for range 200 {
			size := rng.Intn(200)
			switch rng.Intn(10) {
			case 0:
				size = rng.Intn(200 << 10)
			case 1:
				size = 4096 - 6 + rng.Intn(12)
			}
			p := make([]byte, size)
			rng.Read(p)
			switch rng.Intn(8) {
			case 0:
				cut := size / 2
				stream = append(stream, frame(false, opBinary, p[:cut])...)
				stream = append(stream, frame(true, opContinuation, p[cut:])...)
			case 1:
				ping := p[:min(len(p), 125)]
				stream = append(stream, frame(true, opPing, ping)...)
				wants = append(wants, want{opPing, ping})
				continue
			default:
				stream = append(stream, frame(true, opBinary, p)...)
			}
			wants = append(wants, want{opBinary, p})
		}
		done := make(chan error, 1)
		go func() {
			for len(stream) > 0 {
				k := min(len(stream), 1+rng.Intn(16<<10))
				if _, err := cl.Write(stream[:k]); err != nil {
					done <- err
					return
				}
				stream = stream[k:]
				if rng.Intn(4) == 0 {
					time.Sleep(time.Duration(rng.Intn(500)) * time.Microsecond)
				}
			}
			done <- nil
		}()
		for i, w := range wants {
			expect(w.op, w.p, fmt.Sprintf("random traffic, message %d", i))
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}

		// The peer's FIN, met by a waiting reader.
		time.Sleep(time.Millisecond)
		cl.Close()
		if m := nextMsg(t, in, "EOF"); m.err != io.EOF {
			t.Fatalf("round %d: after the peer's close: %v, want EOF", round, m.err)
		}
	}
}

// waitRecorder echoes, and hands on each connection opened and each close
// code reported.
type waitRecorder struct {
	quietEcho
	opened chan *Conn
	codes  chan int
}

func (h *waitRecorder) Open(c *Conn)                      { h.opened <- c }
func (h *waitRecorder) Close(_ *Conn, code int, _ string) { h.codes <- code }

// TestWSWaitRaces: whatever ends a WebSocket whose read loop waits for its
// next message on the poller (or is about to: the event is started at
// several points around the wait), it ends the way it always did, with no
// throw from the runtime (a second wait on the socket) and no connection
// left: our close (the client answers it), the peer's close frame, its
// FIN, its reset, the heartbeat timeout, the reactor's drain and its
// close, and a read of the connection from another goroutine, which the
// wait must let through without two waits on one socket. Run with -race.
func TestWSWaitRaces(t *testing.T) {
	cases := []struct {
		name string
		code int // the close reported to the handler (the peer's, when it sent one)
	}{
		{"server close", CloseNormal},
		{"peer close", CloseNormal},
		{"peer FIN", CloseAbnormal},
		{"peer reset", CloseAbnormal},
		{"heartbeat", CloseNormal},
		{"drain", CloseNormal}, // the code of the client's reply
		{"reactor close", CloseAbnormal},
		{"foreign read", CloseAbnormal},
	}
	for i := range 24 {
		for _, tc := range cases {
			if tc.name == "heartbeat" && i%2 == 1 {
				continue // a second's wait each (see waitRace): half the rounds
			}
			t.Run("", func(t *testing.T) { waitRace(t, tc.name, tc.code, i) })
			if t.Failed() {
				return
			}
		}
	}
}

func waitRace(t *testing.T, how string, wantCode, i int) {
	h := &waitRecorder{opened: make(chan *Conn, 1), codes: make(chan int, 1)}
	opts := Options{Log: zerolog.Nop(), AllowedOrigins: []string{"*"}}
	if how == "heartbeat" {
		// The limit also bounds the time from the upgrade to the read of
		// the first message below (the heartbeat counts silence from the
		// upgrade): with 100 ms a stall of the test or the reactor there
		// (-race, a loaded machine) let the heartbeat's close 1000 come
		// before the echo. A second, then the client is silent.
		opts.HeartbeatIdle = time.Second
	}
	r := New(opts, h)
	nc, br, end := dialUpgraded(t, r, 10*time.Second)
	defer end()
	var c *Conn
	select {
	case c = <-h.opened:
	case <-time.After(10 * time.Second):
		t.Fatal("no open")
	}
	if c.rawc == nil || pollCtxOff == 0 {
		t.Fatal("the connection is not read raw with the poller's wait")
	}
	// One echo: the read loop then goes back to wait (the wait follows a
	// read that emptied the socket).
	if _, err := nc.Write(maskedFrame("hi")); err != nil {
		t.Fatal(err)
	}
	echo := make([]byte, 4)
	if _, err := io.ReadFull(br, echo); err != nil || string(echo[2:]) != "hi" {
		t.Fatalf("echo: %q %v", echo, err)
	}
	time.Sleep(time.Duration(i%6) * 200 * time.Microsecond) // waiting, or about to

	// closeReply reads our close frame with its code, answers it and reads
	// the server's EOF (not a reset).
	closeReply := func(code int) {
		t.Helper()
		hdr := make([]byte, 4)
		if _, err := io.ReadFull(br, hdr); err != nil {
			t.Fatalf("%s: reading the close: %v", how, err)
		}
		if hdr[0] != 0x88 || int(hdr[2])<<8|int(hdr[3]) != code {
			t.Fatalf("%s: got frame %x, want a close %d", how, hdr, code)
		}
		if _, err := io.CopyN(io.Discard, br, int64(hdr[1]-2)); err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write(bye); err != nil {
			t.Fatalf("%s: answering the close: %v", how, err)
		}
		readEOF(t, br, how)
	}
	switch how {
	case "server close":
		c.CloseWith(CloseNormal, "bye")
		closeReply(CloseNormal)
	case "peer close":
		if _, err := nc.Write(bye); err != nil {
			t.Fatal(err)
		}
		reply := make([]byte, 4)
		if _, err := io.ReadFull(br, reply); err != nil || reply[0] != 0x88 {
			t.Fatalf("%s: close reply %x %v", how, reply, err)
		}
		readEOF(t, br, how)
	case "peer FIN":
		nc.Close()
	case "peer reset":
		_ = nc.(*net.TCPConn).SetLinger(0)
		nc.Close()
	case "heartbeat":
		closeReply(CloseNormal)
	case "drain":
		r.Drain()
		closeReply(CloseGoingAway)
	case "reactor close":
		r.Close()
		readEOF(t, br, how)
	case "foreign read":
		// Only a read that finds the loop waiting ends its reading; one
		// that comes first is a plain concurrent read, which (no deadline,
		// the client silent) would wait for data like any other.
		//
		// A stale readiness edge (an event for bytes the last read already
		// took, which the runtime keeps when it reports another condition
		// of the socket) sends the loop the read-first way: it then parks
		// in an ordinary read until the next message. So when the loop
		// does not wait soon, one more echo gives it another go.
		for tries := 0; c.rstate.Load() != readWaiting; {
			deadline := time.Now().Add(100 * time.Millisecond)
			for c.rstate.Load() != readWaiting && time.Now().Before(deadline) {
				time.Sleep(50 * time.Microsecond)
			}
			if c.rstate.Load() == readWaiting {
				break
			}
			if tries++; tries == 20 {
				t.Fatalf("%s: the read loop never waited on the poller in %d echoes", how, tries)
			}
			t.Logf("%s: the loop reads first after echo %d (a stale edge): one more", how, tries)
			if _, err := nc.Write(maskedFrame("hi")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(br, echo); err != nil || string(echo[2:]) != "hi" {
				t.Fatalf("echo: %q %v", echo, err)
			}
		}
		done := make(chan error, 1)
		go func() {
			var b [16]byte
			_, err := c.Read(b[:])
			done <- err
		}()
		select {
		case err := <-done:
			// The loop's reading ended: the read timed out, or found
			// the socket the loop had closed meanwhile.
			var ne net.Error
			if err == nil || !errors.Is(err, net.ErrClosed) && (!errors.As(err, &ne) || !ne.Timeout()) {
				t.Fatalf("%s: got %v, want a timeout or a closed connection", how, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the read never returned", how)
		}
	}
	select {
	case code := <-h.codes:
		if code != wantCode {
			t.Fatalf("%s: the handler got close %d, want %d", how, code, wantCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the reactor never reported the close", how)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Wait(ctx); err != nil {
		t.Fatalf("%s: the reactor still holds %d connections", how, r.Len())
	}
}

// readEOF reads until the server's end of stream, which must be clean.
func readEOF(t *testing.T, br io.Reader, how string) {
	t.Helper()
	_, err := io.Copy(io.Discard, br)
	if errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("%s: the server reset the connection", how)
	}
	if err != nil {
		t.Fatalf("%s: reading to the end: %v", how, err)
	}
}
