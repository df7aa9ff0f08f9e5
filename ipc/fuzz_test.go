package ipc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"
)

// fuzzMax is the Reader's payload limit in FuzzReader: small enough that a
// random length is often over it, big enough to exercise buffer growth.
const fuzzMax = 1 << 20

// decoded is what a Reader made of an input: the frames (payload copied,
// since a Frame aliases the reader's buffer) and the error that ended it.
type decoded struct {
	frames []Frame
	err    error
}

func decodeAll(t *testing.T, in io.Reader, limit int) decoded {
	t.Helper()
	r := NewReader(in, limit)
	var d decoded
	for {
		f, err := r.Next()
		if bound := max(64<<10, limit+2*HeaderSize); len(r.buf) > bound {
			t.Fatalf("reader buffer: got %v bytes, want <= %v", len(r.buf), bound)
		}
		if err != nil {
			d.err = err
			return d
		}
		f.Payload = bytes.Clone(f.Payload)
		d.frames = append(d.frames, f)
	}
}

// errClass names the kind of error a decode ended with.
func errClass(err error) string {
	switch {
	case err == io.EOF:
		return "EOF"
	case err == io.ErrUnexpectedEOF:
		return "ErrUnexpectedEOF"
	case errors.Is(err, ErrTooLarge):
		return "ErrTooLarge"
	default:
		return fmt.Sprintf("unexpected error %v", err)
	}
}

// chunkReader returns its chunks one Read at a time, then io.EOF.
type chunkReader struct{ chunks [][]byte }

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.chunks) > 0 && len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	return n, nil
}

// fuzzFrame encodes one frame for seeds.
func fuzzFrame(h Header, payload string) []byte {
	return AppendFrame(nil, &h, []byte(payload), nil)
}

func FuzzReader(f *testing.F) {
	one := fuzzFrame(Header{Type: TypePush, Flags: 1, Code: 2, Conn: 3, Seq: 4, Arg: 5}, "hello")
	two := append(fuzzFrame(Header{Type: TypeReady}, ""), one...)
	over := fuzzFrame(Header{Type: TypeMessage}, "")
	binary.LittleEndian.PutUint32(over, fuzzMax+1)
	// A length past the Reader's initial 64 KiB buffer makes it grow; the
	// input stays small (truncated) so the fuzzer's minimizer stays fast.
	big := fuzzFrame(Header{Type: TypeMessage}, "abc")
	binary.LittleEndian.PutUint32(big, 70<<10)
	f.Add([]byte{}, uint(0))
	f.Add(one, uint(3))
	f.Add(two, uint(HeaderSize))
	f.Add(one[:len(one)-1], uint(HeaderSize+1))
	f.Add(one[:HeaderSize-1], uint(10))
	f.Add(over, uint(4))
	f.Add(append(one, over...), uint(len(one)))
	f.Add(big, uint(HeaderSize))

	f.Fuzz(func(t *testing.T, data []byte, split uint) {
		k := int(split % uint(len(data)+1))
		ways := []struct {
			name string
			r    io.Reader
		}{
			{name: "whole", r: bytes.NewReader(data)},
			{name: fmt.Sprintf("split_at_%d", k), r: &chunkReader{chunks: [][]byte{data[:k], data[k:]}}},
			{name: "byte_by_byte", r: iotest.OneByteReader(bytes.NewReader(data))},
		}
		var ref decoded
		for i, way := range ways {
			d := decodeAll(t, way.r, fuzzMax)
			if i == 0 {
				ref = d
				continue
			}
			if got, want := errClass(d.err), errClass(ref.err); got != want {
				t.Fatalf("%s: error: got %v, want %v (as whole)", way.name, got, want)
			}
			if got, want := len(d.frames), len(ref.frames); got != want {
				t.Fatalf("%s: frames: got %v, want %v (as whole)", way.name, got, want)
			}
			for j := range d.frames {
				if d.frames[j].Header != ref.frames[j].Header || !bytes.Equal(d.frames[j].Payload, ref.frames[j].Payload) {
					t.Fatalf("%s: frame %d: got %+v, want %+v (as whole)", way.name, j, d.frames[j].Header, ref.frames[j].Header)
				}
			}
		}

		// Every frame re-encodes to exactly the bytes it was read from.
		off := 0
		for j, fr := range ref.frames {
			h := fr.Header
			enc := AppendFrame(nil, &h, fr.Payload, nil)
			if h != fr.Header {
				t.Fatalf("frame %d: re-encoded header got %+v, want %+v", j, h, fr.Header)
			}
			if off+len(enc) > len(data) || !bytes.Equal(enc, data[off:off+len(enc)]) {
				t.Fatalf("frame %d at offset %d: re-encoding differs from the input", j, off)
			}
			off += len(enc)
		}

		// What follows the last frame decides the error.
		rest := data[off:]
		var want string
		switch {
		case len(rest) == 0:
			want = "EOF"
		case len(rest) < HeaderSize:
			want = "ErrUnexpectedEOF"
		case binary.LittleEndian.Uint32(rest) > fuzzMax:
			want = "ErrTooLarge" // over max: an error whatever follows
		case HeaderSize+int(binary.LittleEndian.Uint32(rest)) > len(rest):
			want = "ErrUnexpectedEOF"
		default:
			t.Fatalf("stopped at offset %d with %v before a complete frame", off, ref.err)
		}
		if got := errClass(ref.err); got != want {
			t.Fatalf("error at offset %d: got %v, want %v", off, got, want)
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add(uint8(TypeHello), uint8(0), uint16(0), uint64(0), uint32(0), uint32(0), []byte{}, uint(0))
	f.Add(uint8(TypePush), uint8(2), uint16(1000), uint64(1<<40), uint32(7), uint32(3), []byte("payload"), uint(3))
	f.Add(uint8(255), uint8(255), uint16(65535), ^uint64(0), ^uint32(0), ^uint32(0), []byte("\x00\xff"), uint(1))

	f.Fuzz(func(t *testing.T, typ, flags uint8, code uint16, conn uint64, seq, arg uint32, payload []byte, split uint) {
		want := Header{Len: uint32(len(payload)), Type: Type(typ), Flags: flags, Code: code, Conn: conn, Seq: seq, Arg: arg}

		var hb [HeaderSize]byte
		PutHeader(hb[:], &want)
		if got, err := ParseHeader(hb[:], len(payload)); err != nil || got != want {
			t.Fatalf("ParseHeader(PutHeader): got %+v, %v, want %+v, nil", got, err, want)
		}

		k := int(split % uint(len(payload)+1))
		h := want
		h.Len = 12345 // AppendFrame must set it from the parts
		in := AppendFrame(nil, &h, payload[:k], payload[k:])
		if h.Len != want.Len {
			t.Fatalf("AppendFrame h.Len: got %v, want %v", h.Len, want.Len)
		}
		in = AppendFrame(in, &Header{Type: TypeReady}, nil, nil) // a frame after it

		r := NewReader(bytes.NewReader(in), len(payload))
		fr, err := r.Next()
		if err != nil {
			t.Fatalf("Next: got %v, want nil", err)
		}
		if fr.Header != want {
			t.Errorf("header: got %+v, want %+v", fr.Header, want)
		}
		if !bytes.Equal(fr.Payload, payload) {
			t.Errorf("payload: got %q, want %q", fr.Payload, payload)
		}
		if fr, err = r.Next(); err != nil || fr.Type != TypeReady || len(fr.Payload) != 0 {
			t.Errorf("second frame: got %+v, %v, want type %v, nil", fr.Header, err, TypeReady)
		}
		if _, err = r.Next(); err != io.EOF {
			t.Errorf("end: got %v, want %v", err, io.EOF)
		}
	})
}

func FuzzHandshake(f *testing.F) {
	f.Add([]byte{})
	f.Add(AppendHandshake(nil, &Handshake{}))
	f.Add(AppendHandshake(nil, &Handshake{
		Remote: []byte("127.0.0.1:9000"), URI: []byte("/ws?x=1"), Header: []byte("Host: a\r\n"), Since: 1,
	}))
	f.Add(append(make([]byte, 8), 0xff, 0xff, 0xff, 0xff))

	f.Fuzz(func(t *testing.T, data []byte) {
		hs, err := ParseHandshake(data)
		if err != nil {
			if err != ErrMalformed {
				t.Fatalf("ParseHandshake: got %v, want nil or %v", err, ErrMalformed)
			}
			return
		}
		if got := AppendHandshake(nil, &hs); !bytes.Equal(got, data) {
			t.Fatalf("AppendHandshake(ParseHandshake(x)): got %q, want %q", got, data)
		}
	})
}
