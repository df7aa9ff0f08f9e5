package ipc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// connPair returns two connected stream ends. The caller closes both.
type connPair func(t testing.TB) (a, b net.Conn)

// testConnTypes are the transports the codec must work over (after
// hashicorp/yamux's testConnTypes): an in-memory synchronous pipe, a unix
// socketpair and a unix socket listener. (The master and a worker use two
// OS pipes, see Pipe and TestPipeStream.)
var testConnTypes = []struct {
	name string
	pair connPair
}{
	{name: "pipe", pair: pipePair},
	{name: "socketpair", pair: socketPair},
	{name: "unix_listener", pair: unixListenerPair},
}

func pipePair(t testing.TB) (net.Conn, net.Conn) {
	a, b := net.Pipe()
	return a, b
}

func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conn := func(fd int, name string) net.Conn {
		f := os.NewFile(uintptr(fd), name)
		defer f.Close() // FileConn dups the descriptor
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatalf("FileConn: %v", err)
		}
		return c
	}
	return conn(fds[0], "ipc-a"), conn(fds[1], "ipc-b")
}

func unixListenerPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	// Unix socket paths are limited to ~108 bytes; TempDir is short enough
	// and the file name adds little.
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	type result struct {
		c   net.Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		accepted <- result{c, err}
	}()
	a, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	r := <-accepted
	if r.err != nil {
		a.Close()
		t.Fatalf("accept: %v", r.err)
	}
	return a, r.c
}

// pattern is the source of every payload in the round-trip test; a frame
// carries pattern[off:off+n], so the reader can check it without a copy.
var pattern = func() []byte {
	p := make([]byte, 512<<10)
	x := uint32(2463534242)
	for i := range p {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		p[i] = byte(x)
	}
	return p
}()

// frameSize returns the payload size of frame i: mostly small, with every
// 100th frame bigger than the Reader's initial 64 KiB buffer (up to 200 KiB)
// and a few sizes around the buffer boundary.
func frameSize(g, i int) int {
	switch {
	case i%100 == 99:
		return 200 << 10
	case i%100 == 50:
		return 64<<10 - HeaderSize + g%3 - 1 // one frame just under, at, just over the buffer
	case i%10 == 0:
		return 0
	default:
		return (i*37 + g*101) % 3000
	}
}

func frameOffset(g, i int) int { return (g*7919 + i*104729) % (len(pattern) - 200<<10) }

func TestStreamRoundTrip(t *testing.T) {
	const (
		producers = 8
		perSender = 1000
	)
	for _, ct := range testConnTypes {
		t.Run(ct.name, func(t *testing.T) {
			t.Parallel()
			wc, rc := ct.pair(t)
			defer rc.Close()
			defer wc.Close()

			w := NewWriter(wc, 256<<10)
			runErr := make(chan error, 1)
			go func() { runErr <- w.Run() }()

			// Reader: checks every frame and the per-producer order.
			readErr := make(chan error, 1)
			go func() {
				err := func() error {
					r := NewReader(rc, 1<<20)
					next := make([]int, producers)
					for n := 0; n < producers*perSender; n++ {
						f, err := r.Next()
						if err != nil {
							return fmt.Errorf("frame %d: got error %v, want nil", n, err)
						}
						g, i := int(f.Flags), int(f.Seq)
						if g >= producers {
							return fmt.Errorf("frame %d: got producer %v, want < %v", n, g, producers)
						}
						if i != next[g] {
							return fmt.Errorf("producer %d: got seq %v, want %v", g, i, next[g])
						}
						next[g]++
						size, off := frameSize(g, i), frameOffset(g, i)
						want := Header{Len: uint32(size), Type: TypeMessage, Flags: uint8(g),
							Code: uint16(i), Conn: uint64(g)<<32 | uint64(i), Seq: uint32(i), Arg: uint32(off)}
						if f.Header != want {
							return fmt.Errorf("producer %d frame %d: got header %+v, want %+v", g, i, f.Header, want)
						}
						if !bytes.Equal(f.Payload, pattern[off:off+size]) {
							return fmt.Errorf("producer %d frame %d: payload of %d bytes differs", g, i, size)
						}
						r.Shrink()
					}
					f, err := r.Next()
					if err != io.EOF {
						return fmt.Errorf("after last frame: got %+v, %v, want io.EOF", f.Header, err)
					}
					return nil
				}()
				if err != nil {
					rc.Close() // fail the writer instead of leaving producers blocked
				}
				readErr <- err
			}()

			var wg sync.WaitGroup
			sendErrs := make(chan error, producers)
			for g := 0; g < producers; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var h Header
					for i := 0; i < perSender; i++ {
						size, off := frameSize(g, i), frameOffset(g, i)
						h = Header{Type: TypeMessage, Flags: uint8(g), Code: uint16(i),
							Conn: uint64(g)<<32 | uint64(i), Seq: uint32(i), Arg: uint32(off)}
						// Split the payload in two parts to exercise both.
						k := size / 3
						if err := w.SendWait(&h, pattern[off:off+k], pattern[off+k:off+size]); err != nil {
							sendErrs <- fmt.Errorf("producer %d frame %d: got %v, want nil", g, i, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(sendErrs)
			for err := range sendErrs {
				t.Error(err)
			}

			w.Close()
			if err := <-runErr; err != nil {
				t.Errorf("Run: got %v, want nil", err)
			}
			wc.Close() // the reader sees EOF at a frame boundary
			if err := <-readErr; err != nil {
				t.Error(err)
			}
		})
	}
}

// gateWriter blocks every Write until released, so a test can hold the
// flusher in a write while it fills the pending queue.
type gateWriter struct {
	entered chan struct{} // receives once per Write call, when it starts
	release chan struct{} // closed to let writes proceed
	err     error         // returned by every write once released

	mu  sync.Mutex
	buf bytes.Buffer
}

func newGateWriter() *gateWriter {
	return &gateWriter{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (g *gateWriter) Write(p []byte) (int, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.release
	if g.err != nil {
		return 0, g.err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.Write(p)
}

func (g *gateWriter) frames(t *testing.T) []Header {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	r := NewReader(bytes.NewReader(g.buf.Bytes()), 0)
	var hs []Header
	for {
		f, err := r.Next()
		if err == io.EOF {
			return hs
		}
		if err != nil {
			t.Fatalf("decoding written bytes: got %v, want nil", err)
		}
		hs = append(hs, f.Header)
	}
}

// startRun starts w.Run and returns a channel with its result.
func startRun(w *Writer) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- w.Run() }()
	return ch
}

// blockFlusher sends one frame and waits until Run is inside Write with it,
// so the pending queue is empty and nothing drains until gw is released.
func blockFlusher(t *testing.T, w *Writer, gw *gateWriter) {
	t.Helper()
	h := Header{Type: TypeMessage, Seq: 1}
	if err := w.Send(&h, nil, nil); err != nil {
		t.Fatalf("first Send: got %v, want nil", err)
	}
	<-gw.entered
	if got := w.Pending(); got != 0 {
		t.Fatalf("Pending while flushing: got %v, want %v", got, 0)
	}
}

func TestWriterFull(t *testing.T) {
	const limit = 1000
	gw := newGateWriter()
	w := NewWriter(gw, limit)
	runErr := startRun(w)
	blockFlusher(t, w, gw)

	payload := make([]byte, 400) // 424-byte frames: two fit in 1000, three do not
	tests := []struct {
		name        string
		seq         uint32
		want        error
		wantPending int
	}{
		{name: "empty_queue", seq: 2, want: nil, wantPending: 424},
		{name: "fits", seq: 3, want: nil, wantPending: 848},
		{name: "over_limit", seq: 4, want: ErrFull, wantPending: 848},
		{name: "still_over_limit", seq: 5, want: ErrFull, wantPending: 848},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Header{Type: TypeMessage, Seq: tt.seq}
			if err := w.Send(&h, payload, nil); err != tt.want {
				t.Errorf("Send: got %v, want %v", err, tt.want)
			}
			if got := w.Pending(); got != tt.wantPending {
				t.Errorf("Pending: got %v, want %v", got, tt.wantPending)
			}
		})
	}

	// SendWait blocks while the queue is full and proceeds once Run has
	// swapped the queue out.
	waitErr := make(chan error, 1)
	go func() {
		h := Header{Type: TypeMessage, Seq: 6}
		waitErr <- w.SendWait(&h, payload, nil)
	}()
	// Run is held in Write, so nothing can free space: SendWait must not
	// return. (A negative check; it cannot fail spuriously.)
	select {
	case err := <-waitErr:
		t.Fatalf("SendWait on a full queue: returned %v, want it to block", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(gw.release)
	if err := <-waitErr; err != nil {
		t.Errorf("SendWait after space freed: got %v, want nil", err)
	}

	w.Close()
	if err := <-runErr; err != nil {
		t.Errorf("Run: got %v, want nil", err)
	}
	var seqs []uint32
	for _, h := range gw.frames(t) {
		seqs = append(seqs, h.Seq)
	}
	if want := []uint32{1, 2, 3, 6}; fmt.Sprint(seqs) != fmt.Sprint(want) {
		t.Errorf("frames written: got seqs %v, want %v", seqs, want)
	}
}

func TestWriterCloseFlushes(t *testing.T) {
	gw := newGateWriter()
	w := NewWriter(gw, 0)
	runErr := startRun(w)
	blockFlusher(t, w, gw)

	for seq := uint32(2); seq <= 10; seq++ {
		h := Header{Type: TypePush, Seq: seq}
		if err := w.Send(&h, []byte("queued"), nil); err != nil {
			t.Fatalf("Send %d: got %v, want nil", seq, err)
		}
	}
	w.Close()
	h := Header{Type: TypePush}
	if err := w.Send(&h, nil, nil); err != ErrClosed {
		t.Errorf("Send after Close: got %v, want %v", err, ErrClosed)
	}
	if err := w.SendWait(&h, nil, nil); err != ErrClosed {
		t.Errorf("SendWait after Close: got %v, want %v", err, ErrClosed)
	}
	select {
	case <-w.Done():
		t.Fatal("Done closed while frames are pending, want Run still flushing")
	default:
	}

	close(gw.release)
	if err := <-runErr; err != nil {
		t.Errorf("Run: got %v, want nil", err)
	}
	<-w.Done()
	if got := len(gw.frames(t)); got != 10 {
		t.Errorf("frames written: got %v, want %v", got, 10)
	}
	if got := w.Pending(); got != 0 {
		t.Errorf("Pending after Run: got %v, want %v", got, 0)
	}
}

func TestWriterCloseIdle(t *testing.T) {
	w := NewWriter(io.Discard, 0)
	runErr := startRun(w)
	w.Close()
	if err := <-runErr; err != nil {
		t.Errorf("Run: got %v, want nil", err)
	}
}

func TestWriterWriteError(t *testing.T) {
	boom := errors.New("boom")
	gw := newGateWriter()
	gw.err = boom
	w := NewWriter(gw, 100)
	runErr := startRun(w)
	blockFlusher(t, w, gw)

	// Fill the queue, then park a SendWait on it: the write error must
	// wake it with ErrClosed rather than leave it blocked.
	h := Header{Type: TypeMessage}
	if err := w.Send(&h, make([]byte, 60), nil); err != nil {
		t.Fatalf("Send: got %v, want nil", err)
	}
	waitErr := make(chan error, 1)
	go func() {
		h := Header{Type: TypeMessage}
		waitErr <- w.SendWait(&h, make([]byte, 60), nil)
	}()

	close(gw.release)
	if err := <-runErr; !errors.Is(err, boom) {
		t.Errorf("Run: got %v, want %v", err, boom)
	}
	if err := <-waitErr; err != ErrClosed {
		t.Errorf("blocked SendWait: got %v, want %v", err, ErrClosed)
	}
	if err := w.Send(&h, nil, nil); err != ErrClosed {
		t.Errorf("Send after write error: got %v, want %v", err, ErrClosed)
	}
	if got := w.Pending(); got != 0 {
		t.Errorf("Pending after write error: got %v, want %v", got, 0)
	}
	w.Close() // harmless after Run returned
}

func TestWriterTooLarge(t *testing.T) {
	w := NewWriter(io.Discard, 0)
	half := make([]byte, MaxPayload/2+1) // a and b together exceed MaxPayload
	h := Header{Type: TypeMessage}
	if err := w.Send(&h, half, half); err != ErrTooLarge {
		t.Errorf("Send: got %v, want %v", err, ErrTooLarge)
	}
	if got := w.Pending(); got != 0 {
		t.Errorf("Pending: got %v, want %v", got, 0)
	}
}
