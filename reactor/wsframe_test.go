package reactor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

// clientFrame encodes a masked client frame (rsv in place, 0x70).
func clientFrame(fin bool, rsv, op byte, payload []byte, key uint32) []byte {
	b0 := rsv | op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n <= 125:
		out = append(out, 0x80|byte(n))
	case n <= 0xffff:
		out = binary.BigEndian.AppendUint16(append(out, 0x80|126), uint16(n))
	default:
		out = binary.BigEndian.AppendUint64(append(out, 0x80|127), uint64(n))
	}
	out = binary.LittleEndian.AppendUint32(out, key)
	start := len(out)
	out = append(out, payload...)
	mask(key, 0, out[start:])
	return out
}

type got struct {
	op   int
	data string
	err  error
}

// readAllFrames runs a frameReader over src until an error.
func readAllFrames(src io.Reader, max int) []got {
	fr := newFrameReader(src, max)
	defer fr.release()
	var out []got
	for {
		op, p, err := fr.next()
		if err != nil {
			out = append(out, got{err: err})
			return out
		}
		out = append(out, got{op: op, data: string(p)})
	}
}

// splitReaders hands the same bytes whole, split in two at every few
// places, and a byte at a time: the reader must see the same frames.
func splitReaders(b []byte) map[string]func() io.Reader {
	m := map[string]func() io.Reader{
		"whole":    func() io.Reader { return bytes.NewReader(b) },
		"bytewise": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) },
		"halves":   func() io.Reader { return io.MultiReader(bytes.NewReader(b[:len(b)/2]), bytes.NewReader(b[len(b)/2:])) },
	}
	return m
}

func TestFrameReader(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), 10000) // 100000 bytes: 64-bit length
	mid := bytes.Repeat([]byte("x"), 300)            // 16-bit length
	tests := []struct {
		name string
		in   []byte
		want []got
	}{
		{name: "text", in: clientFrame(true, 0, opText, []byte("hello"), 0x01020304),
			want: []got{{op: opText, data: "hello"}, {err: io.EOF}}},
		{name: "empty binary", in: clientFrame(true, 0, opBinary, nil, 7),
			want: []got{{op: opBinary, data: ""}, {err: io.EOF}}},
		{name: "16-bit and 64-bit lengths", in: append(clientFrame(true, 0, opBinary, mid, 9), clientFrame(true, 0, opText, big, 0xdeadbeef)...),
			want: []got{{op: opBinary, data: string(mid)}, {op: opText, data: string(big)}, {err: io.EOF}}},
		{name: "fragments with a ping between", in: bytes.Join([][]byte{
			clientFrame(false, 0, opText, []byte("frag"), 1),
			clientFrame(true, 0, opPing, []byte("p"), 2),
			clientFrame(false, 0, opContinuation, []byte("me"), 3),
			clientFrame(true, 0, opContinuation, []byte("nt"), 4)}, nil),
			want: []got{{op: opPing, data: "p"}, {op: opText, data: "fragment"}, {err: io.EOF}}},
		{name: "utf8 split across fragments", in: bytes.Join([][]byte{
			clientFrame(false, 0, opText, []byte("\xf0\x9f"), 1),
			clientFrame(true, 0, opContinuation, []byte("\x98\x80"), 2)}, nil),
			want: []got{{op: opText, data: "\U0001F600"}, {err: io.EOF}}},
		{name: "rsv", in: clientFrame(true, 0x40, opText, []byte("x"), 1), want: []got{{err: errRSV}}},
		{name: "reserved opcode", in: clientFrame(true, 0, 3, []byte("x"), 1), want: []got{{err: errOpcode}}},
		{name: "unmasked", in: []byte{0x81, 0x01, 'x'}, want: []got{{err: errUnmasked}}},
		{name: "fragmented ping", in: clientFrame(false, 0, opPing, nil, 1), want: []got{{err: errCtlFragment}}},
		{name: "long ping", in: clientFrame(true, 0, opPing, make([]byte, 126), 1), want: []got{{err: errCtlTooLong}}},
		{name: "orphan continuation", in: clientFrame(true, 0, opContinuation, []byte("x"), 1), want: []got{{err: errContinuation}}},
		{name: "interleaved", in: append(clientFrame(false, 0, opText, []byte("a"), 1), clientFrame(true, 0, opBinary, []byte("b"), 1)...),
			want: []got{{err: errInterleaved}}},
		{name: "invalid utf8", in: clientFrame(true, 0, opText, []byte("a\xffb"), 1), want: []got{{err: errTextUTF8}}},
		{name: "unfinished utf8", in: clientFrame(true, 0, opText, []byte("a\xe2\x82"), 1), want: []got{{err: errTextUTF8}}},
		{name: "too big", in: clientFrame(true, 0, opBinary, make([]byte, 1001), 1), want: []got{{err: errTooBig}}},
		{name: "too big fragmented", in: append(clientFrame(false, 0, opBinary, make([]byte, 600), 1), clientFrame(true, 0, opContinuation, make([]byte, 401), 1)...),
			want: []got{{err: errTooBig}}},
		{name: "nothing after a failure", in: append(clientFrame(true, 0x10, opText, nil, 1), clientFrame(true, 0, opPing, nil, 1)...),
			want: []got{{err: errRSV}}},
		{name: "truncated", in: clientFrame(true, 0, opText, []byte("hello"), 1)[:8], want: []got{{err: io.ErrUnexpectedEOF}}},
	}
	for _, tt := range tests {
		max := 1000
		if len(tt.in) > 2000 {
			max = 1 << 20
		}
		for how, src := range splitReaders(tt.in) {
			t.Run(tt.name+"/"+how, func(t *testing.T) {
				out := readAllFrames(src(), max)
				if len(out) != len(tt.want) {
					t.Fatalf("got %d results %v, want %d", len(out), out, len(tt.want))
				}
				for i := range out {
					if out[i].op != tt.want[i].op || out[i].data != tt.want[i].data || !errors.Is(out[i].err, tt.want[i].err) {
						t.Fatalf("result %d: got op %d %d bytes err %v, want op %d %d bytes err %v", i,
							out[i].op, len(out[i].data), out[i].err, tt.want[i].op, len(tt.want[i].data), tt.want[i].err)
					}
				}
			})
		}
	}
}

// failFastReader serves chunks and then blocks (fails the test) if asked
// for more: the reader must have failed by then.
type failFastReader struct {
	t      *testing.T
	chunks [][]byte
}

func (r *failFastReader) Read(b []byte) (int, error) {
	if len(r.chunks) == 0 {
		r.t.Fatal("the reader asked for more input after invalid UTF-8: not fail-fast")
	}
	n := copy(b, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

// TestFrameReaderFailFast: invalid UTF-8 fails as soon as it is read,
// whether the rest would come in a later fragment or later in the frame.
func TestFrameReaderFailFast(t *testing.T) {
	one := clientFrame(true, 0, opText, []byte("valid \xf4\x90\x80\x80 and a long tail that never comes"), 5)
	cut := 2 + 4 + len("valid \xf4\x90")
	frag := append(clientFrame(false, 0, opText, []byte("ok"), 1), clientFrame(false, 0, opContinuation, []byte("\xed\xa0"), 2)...)
	for name, chunks := range map[string][][]byte{
		"within a frame":            {one[:cut]},
		"second of three fragments": {frag},
	} {
		t.Run(name, func(t *testing.T) {
			fr := newFrameReader(&failFastReader{t: t, chunks: chunks}, 1<<20)
			defer fr.release()
			if _, _, err := fr.next(); !errors.Is(err, errTextUTF8) {
				t.Fatalf("got %v, want %v", err, errTextUTF8)
			}
		})
	}
}

// TestUTF8State: the incremental validator agrees with utf8.Valid on
// every input, however it is split, and fails on the first byte that no
// continuation could make valid.
func TestUTF8State(t *testing.T) {
	samples := []string{"", "a", "héllo", "\u07ff\u0800\uffff", "\U00010000\U0010ffff", "\xc0\x80", "\xe0\x9f\xbf",
		"\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf5", "\xff", "\x80", "a\xe2\x82", "€€€€€€€€€€€€", "abcdefghijklmnop\xc3"}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		b := make([]byte, rng.IntN(24))
		for j := range b {
			switch rng.IntN(4) {
			case 0:
				b[j] = byte(rng.IntN(0x80))
			case 1:
				b[j] = 0x80 | byte(rng.IntN(0x40))
			default:
				b[j] = byte(rng.IntN(256))
			}
		}
		samples = append(samples, string(b))
	}
	for _, s := range samples {
		want := utf8.ValidString(s)
		for cut := 0; cut <= len(s); cut++ {
			var u utf8State
			ok := u.valid([]byte(s[:cut])) && u.valid([]byte(s[cut:])) && u.complete()
			if ok != want {
				t.Fatalf("%q split at %d: got %v, want %v", s, cut, ok, want)
			}
		}
		// Fail-fast: a prefix fails only when no suffix can save it.
		for cut := 1; cut <= len(s); cut++ {
			var u utf8State
			if !u.valid([]byte(s[:cut])) && canComplete(s[:cut]) {
				t.Fatalf("prefix %q rejected although it can be completed", s[:cut])
			}
		}
	}
}

// canComplete reports whether some continuation makes p valid UTF-8.
func canComplete(p string) bool {
	for _, tail := range []string{"", "\x80", "\x80\x80", "\x80\x80\x80", "\x90\x80\x80", "\xa0\x80", "\xbf", "\xbf\xbf", "\x8f\x80\x80", "\x9f\x80"} {
		if utf8.ValidString(p + tail) {
			return true
		}
	}
	return false
}

func TestMask(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for n := 0; n < 40; n++ {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.IntN(256))
		}
		key := rng.Uint32()
		want := append([]byte(nil), p...)
		for i := range want {
			want[i] ^= byte(key >> (8 * uint(i%4)))
		}
		for cut := 0; cut <= n; cut++ {
			got := append([]byte(nil), p...)
			mask(key, 0, got[:cut])
			mask(key, cut, got[cut:])
			if !bytes.Equal(got, want) {
				t.Fatalf("n=%d cut=%d: got %x, want %x", n, cut, got, want)
			}
		}
	}
}

func TestParseClose(t *testing.T) {
	code := func(c int, reason string) []byte {
		return append(binary.BigEndian.AppendUint16(nil, uint16(c)), reason...)
	}
	valid := []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999}
	invalid := []int{0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535}
	for _, c := range valid {
		if got, _, err := parseClose(code(c, "ok")); err != nil || got != c {
			t.Errorf("close %d: got %d, %v", c, got, err)
		}
	}
	for _, c := range invalid {
		if _, _, err := parseClose(code(c, "")); !errors.Is(err, errCloseCode) {
			t.Errorf("close %d: got %v, want %v", c, err, errCloseCode)
		}
	}
	if got, _, err := parseClose(nil); err != nil || got != CloseNoStatus {
		t.Errorf("empty close: got %d, %v", got, err)
	}
	if _, _, err := parseClose([]byte{3}); !errors.Is(err, errCloseShort) {
		t.Errorf("1-byte close: got %v", err)
	}
	if _, _, err := parseClose(code(1000, "\xff")); !errors.Is(err, errCloseUTF8) {
		t.Errorf("bad reason: got %v", err)
	}
	if p := closePayload(1000, string(bytes.Repeat([]byte("é"), 100))); len(p) > 125 || !utf8.Valid(p[2:]) {
		t.Errorf("a long reason is cut to %d bytes, valid=%v", len(p), utf8.Valid(p[2:]))
	}
}

// FuzzFrameReader: any input, whole or a byte at a time, gives the same
// frames and the same error, never a panic, and never a message over the
// limit.
func FuzzFrameReader(f *testing.F) {
	f.Add(clientFrame(true, 0, opText, []byte("hello"), 1))
	f.Add(append(clientFrame(false, 0, opBinary, []byte("a"), 2), clientFrame(true, 0, opContinuation, []byte("b"), 3)...))
	f.Add(clientFrame(true, 0, opClose, []byte{3, 232, 'x'}, 4))
	f.Add([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, in []byte) {
		const max = 4096
		whole := readAllFrames(bytes.NewReader(in), max)
		bytewise := readAllFrames(iotest.OneByteReader(bytes.NewReader(in)), max)
		if len(whole) != len(bytewise) {
			t.Fatalf("whole: %d results, bytewise: %d", len(whole), len(bytewise))
		}
		for i := range whole {
			a, b := whole[i], bytewise[i]
			if a.op != b.op || a.data != b.data || (a.err == nil) != (b.err == nil) || (a.err != nil && a.err.Error() != b.err.Error()) {
				t.Fatalf("result %d differs: whole %v, bytewise %v", i, a, b)
			}
			if len(a.data) > max {
				t.Fatalf("message of %d bytes over the limit %d", len(a.data), max)
			}
		}
	})
}

// TestFrameReaderGrowsWithData: a header announcing a large frame costs
// no memory until the bytes come (a client cannot make the server
// allocate the limit per connection by announcing it).
func TestFrameReaderGrowsWithData(t *testing.T) {
	in := clientFrame(true, 0, opBinary, make([]byte, 60<<20), 1)[:14+20000]
	fr := newFrameReader(bytes.NewReader(in), 64<<20)
	defer fr.release()
	if _, _, err := fr.next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want %v", err, io.ErrUnexpectedEOF)
	}
	if c := cap(*fr.mp); c > 256<<10 {
		t.Fatalf("20000 bytes of a 60 MiB frame hold a %d-byte buffer", c)
	}
}

// BenchmarkFrameReader: small masked text messages, as an echo load
// sends them, several per read. No allocation per message.
func BenchmarkFrameReader(b *testing.B) {
	var in []byte
	for i := 0; i < 64; i++ {
		in = append(in, clientFrame(true, 0, opText, []byte("hello, this is a typical small chat message"), uint32(i))...)
	}
	src := bytes.NewReader(in)
	fr := newFrameReader(src, 1<<20)
	defer fr.release()
	b.ReportAllocs()
	b.SetBytes(int64(len(in) / 64))
	for i := 0; i < b.N; i++ {
		if _, _, err := fr.next(); err != nil {
			src.Reset(in)
			fr.r, fr.w = 0, 0
			if _, _, err := fr.next(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
