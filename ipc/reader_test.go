package ipc

// The Reader, the handshake and the wire helpers (stream_test.go: the
// Writer and round trips).

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"testing"
)

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
