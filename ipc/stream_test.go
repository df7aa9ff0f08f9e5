package ipc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
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

// headerOnly returns the header bytes once and fails the test on any later
// read: the Reader must reject an oversized length without reading on.
type headerOnly struct {
	t    *testing.T
	b    []byte
	done bool
}

func (r *headerOnly) Read(p []byte) (int, error) {
	if r.done {
		r.t.Errorf("Read after the header: want no read of an oversized payload")
		return 0, io.EOF
	}
	r.done = true
	return copy(p, r.b), nil
}

func TestReaderTooLarge(t *testing.T) {
	tests := []struct {
		name string
		max  int
		len  uint32
	}{
		{name: "one_over", max: 1000, len: 1001},
		{name: "max_uint32", max: 1 << 20, len: 0xffffffff},
		{name: "over_MaxPayload", max: 0, len: MaxPayload + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := make([]byte, HeaderSize)
			PutHeader(b, &Header{Type: TypeMessage})
			b[0], b[1], b[2], b[3] = byte(tt.len), byte(tt.len>>8), byte(tt.len>>16), byte(tt.len>>24)
			r := NewReader(&headerOnly{t: t, b: b}, tt.max)
			bufLen := len(r.buf)
			f, err := r.Next()
			if !errors.Is(err, ErrTooLarge) {
				t.Errorf("Next: got %+v, %v, want %v", f.Header, err, ErrTooLarge)
			}
			if len(r.buf) != bufLen {
				t.Errorf("buffer after rejected header: got %v bytes, want %v (nothing allocated)", len(r.buf), bufLen)
			}
		})
	}
}

func TestReaderMaxAccepted(t *testing.T) {
	h := Header{Type: TypeMessage}
	in := AppendFrame(nil, &h, make([]byte, 1000), nil)
	r := NewReader(bytes.NewReader(in), 1000)
	f, err := r.Next()
	if err != nil || len(f.Payload) != 1000 {
		t.Fatalf("Next: got %d bytes, %v, want %d bytes, nil", len(f.Payload), err, 1000)
	}
}

func TestReaderEOF(t *testing.T) {
	one := AppendFrame(nil, &Header{Type: TypePush, Seq: 1}, []byte("hello"), nil)
	empty := AppendFrame(nil, &Header{Type: TypeReady}, nil, nil)
	tests := []struct {
		name       string
		in         []byte
		wantFrames int
		wantErr    error
	}{
		{name: "empty_stream", in: nil, wantFrames: 0, wantErr: io.EOF},
		{name: "after_one_frame", in: one, wantFrames: 1, wantErr: io.EOF},
		{name: "after_empty_payload", in: empty, wantFrames: 1, wantErr: io.EOF},
		{name: "after_two_frames", in: append(append([]byte{}, one...), empty...), wantFrames: 2, wantErr: io.EOF},
		{name: "mid_header", in: one[:HeaderSize-1], wantFrames: 0, wantErr: io.ErrUnexpectedEOF},
		{name: "one_header_byte", in: one[:1], wantFrames: 0, wantErr: io.ErrUnexpectedEOF},
		{name: "header_no_payload", in: one[:HeaderSize], wantFrames: 0, wantErr: io.ErrUnexpectedEOF},
		{name: "mid_payload", in: one[:len(one)-1], wantFrames: 0, wantErr: io.ErrUnexpectedEOF},
		{name: "second_frame_cut", in: append(append([]byte{}, one...), one[:10]...), wantFrames: 1, wantErr: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, way := range []struct {
				name string
				r    func([]byte) io.Reader
			}{
				{"whole", func(b []byte) io.Reader { return bytes.NewReader(b) }},
				{"one_byte", func(b []byte) io.Reader { return oneByteEOF(b) }},
			} {
				r := NewReader(way.r(tt.in), 0)
				frames := 0
				var err error
				for {
					if _, err = r.Next(); err != nil {
						break
					}
					frames++
				}
				if frames != tt.wantFrames {
					t.Errorf("%s: frames: got %v, want %v", way.name, frames, tt.wantFrames)
				}
				if err != tt.wantErr {
					t.Errorf("%s: error: got %v, want %v", way.name, err, tt.wantErr)
				}
			}
		})
	}
}

// oneByteEOF reads one byte at a time and returns the last byte together
// with io.EOF, the other legal way for a reader to end.
func oneByteEOF(b []byte) io.Reader { return &oneByteEOFReader{b: b} }

type oneByteEOFReader struct{ b []byte }

func (r *oneByteEOFReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.b[0]
	r.b = r.b[1:]
	if len(r.b) == 0 {
		return 1, io.EOF
	}
	return 1, nil
}

func TestReaderReadError(t *testing.T) {
	boom := errors.New("boom")
	in := AppendFrame(nil, &Header{Type: TypePush}, []byte("payload"), nil)
	r := NewReader(io.MultiReader(bytes.NewReader(in[:HeaderSize+2]), &errReader{boom}), 0)
	if _, err := r.Next(); err != boom {
		t.Errorf("Next: got %v, want %v", err, boom)
	}
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

func TestReaderShrink(t *testing.T) {
	const big = 1 << 20
	payload := pattern[:big/2]
	in := AppendFrame(nil, &Header{Type: TypeMessage, Seq: 1}, payload, payload)
	in = AppendFrame(in, &Header{Type: TypeReady, Seq: 2}, nil, nil)
	in = AppendFrame(in, &Header{Type: TypeReady, Seq: 3}, nil, nil)

	r := NewReader(bytes.NewReader(in), 2*big)
	initial := len(r.buf)
	r.Shrink()
	if len(r.buf) != initial {
		t.Errorf("Shrink of the initial buffer: got %v bytes, want %v", len(r.buf), initial)
	}

	f, err := r.Next()
	if err != nil || f.Seq != 1 || len(f.Payload) != big {
		t.Fatalf("big frame: got seq %v, %d bytes, %v, want seq 1, %d bytes, nil", f.Seq, len(f.Payload), err, big)
	}
	if len(r.buf) <= big {
		t.Fatalf("buffer after big frame: got %v bytes, want > %v", len(r.buf), big)
	}
	// The next header was read along with the big frame: Shrink must keep
	// the buffer while unread bytes remain.
	grown := len(r.buf)
	r.Shrink()
	if len(r.buf) != grown {
		t.Errorf("Shrink with unread bytes: got %v bytes, want %v", len(r.buf), grown)
	}
	if !bytes.Equal(f.Payload[:big/2], payload) || !bytes.Equal(f.Payload[big/2:], payload) {
		t.Error("big frame payload: changed by Shrink, want intact")
	}

	if f, err = r.Next(); err != nil || f.Seq != 2 {
		t.Fatalf("second frame: got seq %v, %v, want seq 2, nil", f.Seq, err)
	}
	r.Shrink()
	if len(r.buf) != initial {
		t.Errorf("Shrink when drained: got %v bytes, want %v", len(r.buf), initial)
	}
	if f, err = r.Next(); err != nil || f.Seq != 3 {
		t.Fatalf("third frame after Shrink: got seq %v, %v, want seq 3, nil", f.Seq, err)
	}
	if _, err = r.Next(); err != io.EOF {
		t.Errorf("end: got %v, want %v", err, io.EOF)
	}
}

func TestHandshakeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		hs   Handshake
	}{
		{name: "empty", hs: Handshake{}},
		{name: "typical", hs: Handshake{
			Remote: []byte("203.0.113.7:51234"),
			URI:    []byte("/chat?room=lobby"),
			Header: []byte("Host: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"),
			Since:  1767225600000,
		}},
		{name: "binary_and_negative_since", hs: Handshake{
			Remote: []byte{0, 1, 2, 0xff},
			URI:    []byte{},
			Header: []byte("\x00\r\n"),
			Since:  -1,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := AppendHandshake([]byte("pre"), &tt.hs)
			if string(enc[:3]) != "pre" {
				t.Fatalf("AppendHandshake: got prefix %q, want %q", enc[:3], "pre")
			}
			enc = enc[3:]
			wantLen := 8 + 12 + len(tt.hs.Remote) + len(tt.hs.URI) + len(tt.hs.Header)
			if len(enc) != wantLen {
				t.Errorf("encoded length: got %v, want %v", len(enc), wantLen)
			}
			got, err := ParseHandshake(enc)
			if err != nil {
				t.Fatalf("ParseHandshake: got %v, want nil", err)
			}
			if !bytes.Equal(got.Remote, tt.hs.Remote) || !bytes.Equal(got.URI, tt.hs.URI) ||
				!bytes.Equal(got.Header, tt.hs.Header) || got.Since != tt.hs.Since {
				t.Errorf("got %+v, want %+v", got, tt.hs)
			}
		})
	}
}

func TestParseHandshakeMalformed(t *testing.T) {
	valid := AppendHandshake(nil, &Handshake{
		Remote: []byte("10.0.0.1:80"), URI: []byte("/ws"), Header: []byte("A: b\r\n"), Since: 42,
	})
	for n := 0; n < len(valid); n++ {
		t.Run(fmt.Sprintf("truncated_%d", n), func(t *testing.T) {
			if _, err := ParseHandshake(valid[:n]); err != ErrMalformed {
				t.Errorf("got %v, want %v", err, ErrMalformed)
			}
		})
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{name: "trailing_byte", in: append(append([]byte{}, valid...), 0)},
		{name: "field_length_huge", in: append(make([]byte, 8), 0xff, 0xff, 0xff, 0xff)},
		{name: "field_length_one_over", in: append(make([]byte, 8), 1, 0, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseHandshake(tt.in); err != ErrMalformed {
				t.Errorf("got %v, want %v", err, ErrMalformed)
			}
		})
	}
}

func TestFields(t *testing.T) {
	b := AppendField(nil, []byte("one"))
	b = AppendString(b, "")
	b = AppendString(b, "three")
	want := []string{"one", "", "three"}
	for i, w := range want {
		f, rest, err := NextField(b)
		if err != nil {
			t.Fatalf("field %d: got %v, want nil", i, err)
		}
		if string(f) != w {
			t.Errorf("field %d: got %q, want %q", i, f, w)
		}
		if cap(f) != len(f) {
			t.Errorf("field %d: got cap %v, want %v (appending must not clobber the next field)", i, cap(f), len(f))
		}
		b = rest
	}
	if len(b) != 0 {
		t.Errorf("rest: got %q, want empty", b)
	}
	if _, _, err := NextField([]byte{1, 0, 0}); err != ErrMalformed {
		t.Errorf("short prefix: got %v, want %v", err, ErrMalformed)
	}
}

// TestWriterBufferReuse checks which flushed buffer Run keeps as its spare:
// one a full queue grew to is kept (dropping it made every flush under load
// regrow the queue from 64 KiB), a single burst frame far over the limit
// is not.
func TestWriterBufferReuse(t *testing.T) {
	tests := []struct {
		name      string
		limit     int
		frame     int  // payload size of each queued frame
		fill      bool // queue frames until ErrFull, else queue one
		wantKept  bool
		wantSpare int // spare capacity when not kept
	}{
		{name: "full_queue_default_limit", limit: 0, frame: 64, fill: true, wantKept: true},
		{name: "full_queue_small_limit", limit: 100 << 10, frame: 1000, fill: true, wantKept: true},
		{name: "burst_over_limit", limit: 1000, frame: 1 << 20, fill: false, wantKept: false, wantSpare: 64 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := newGateWriter()
			w := NewWriter(gw, tt.limit)
			runErr := startRun(w)
			blockFlusher(t, w, gw)

			payload := make([]byte, tt.frame)
			for {
				h := Header{Type: TypeMessage}
				err := w.Send(&h, payload, nil)
				if err == ErrFull {
					break
				}
				if err != nil {
					t.Fatalf("Send: got %v, want nil", err)
				}
				if !tt.fill {
					break
				}
			}
			w.mu.Lock()
			grown := cap(w.pending)
			w.mu.Unlock()

			close(gw.release)
			w.Close()
			if err := <-runErr; err != nil {
				t.Fatalf("Run: got %v, want nil", err)
			}
			// Run has returned: its last flushed buffer is the spare.
			got := cap(w.spare)
			if tt.wantKept && got != grown {
				t.Errorf("spare capacity: got %v, want %v (the grown queue kept)", got, grown)
			}
			if !tt.wantKept && got != tt.wantSpare {
				t.Errorf("spare capacity: got %v, want %v (burst buffer dropped)", got, tt.wantSpare)
			}
		})
	}
}

func TestAddrRoundTrip(t *testing.T) {
	for _, s := range []string{"127.0.0.1:40123", "[::1]:8080", "[2001:db8::7]:1", "10.0.0.2:65535"} {
		ap := netip.MustParseAddrPort(s)
		b := AppendAddr([]byte{9}, ap)
		if len(b) != 1+AddrSize {
			t.Fatalf("%s: encoded in %d bytes, want %d", s, len(b)-1, AddrSize)
		}
		ip, port, ok := ParseAddr(b[1:])
		if !ok {
			t.Fatalf("%s: not decoded", s)
		}
		got, _ := netip.AddrFromSlice(ip)
		if got.Unmap() != ap.Addr() || port != int(ap.Port()) {
			t.Fatalf("%s: decoded %s port %d", s, got, port)
		}
	}
	for _, n := range []int{0, 4, 16, AddrSize + 1} {
		if _, _, ok := ParseAddr(make([]byte, n)); ok {
			t.Fatalf("%d bytes decoded as an address", n)
		}
	}
}
