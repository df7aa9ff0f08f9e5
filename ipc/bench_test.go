package ipc

import (
	"io"
	"testing"
)

// loopReader serves an encoded block of frames forever, so a Reader can be
// driven without I/O or allocation.
type loopReader struct {
	block []byte
	off   int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p, r.block[r.off:])
	r.off = (r.off + n) % len(r.block)
	return n, nil
}

// frameBlock returns n encoded frames with 64-byte payloads.
func frameBlock(n int) []byte {
	payload := make([]byte, 64)
	var b []byte
	for i := 0; i < n; i++ {
		h := Header{Type: TypePush, Flags: 1, Conn: uint64(i), Seq: uint32(i)}
		b = AppendFrame(b, &h, payload, nil)
	}
	return b
}

func TestZeroAllocs(t *testing.T) {
	payload := make([]byte, 64)
	buf := make([]byte, 0, 256)
	h := Header{Type: TypePush, Flags: 1, Conn: 42, Seq: 7}
	r := NewReader(&loopReader{block: frameBlock(1000)}, 0)
	hb := buf[:HeaderSize]
	PutHeader(hb, &h)

	tests := []struct {
		name string
		fn   func()
	}{
		{name: "AppendFrame", fn: func() { buf = AppendFrame(buf[:0], &h, payload, nil) }},
		{name: "PutHeader", fn: func() { PutHeader(hb, &h) }},
		{name: "ParseHeader", fn: func() {
			if _, err := ParseHeader(hb, MaxPayload); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "Reader.Next", fn: func() {
			if _, err := r.Next(); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(1000, tt.fn); got != 0 {
				t.Errorf("allocs per run: got %v, want %v", got, 0)
			}
		})
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	payload := make([]byte, 64)
	buf := make([]byte, 0, 256)
	h := Header{Type: TypePush, Flags: 1, Conn: 42, Seq: 7}
	b.ReportAllocs()
	b.SetBytes(HeaderSize + 64)
	for b.Loop() {
		buf = AppendFrame(buf[:0], &h, payload, nil)
	}
}

func BenchmarkParseHeader(b *testing.B) {
	hb := make([]byte, HeaderSize)
	PutHeader(hb, &Header{Len: 64, Type: TypePush, Flags: 1, Conn: 42, Seq: 7})
	b.ReportAllocs()
	b.SetBytes(HeaderSize)
	for b.Loop() {
		if _, err := ParseHeader(hb, MaxPayload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReaderNext(b *testing.B) {
	r := NewReader(&loopReader{block: frameBlock(1000)}, 0)
	b.ReportAllocs()
	b.SetBytes(HeaderSize + 64)
	for b.Loop() {
		if _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriterUnix measures frames per second through Writer and Run
// over a unix socketpair, with a goroutine draining the other end with a
// Reader: the path every frame between master and worker takes.
func BenchmarkWriterUnix(b *testing.B) {
	pair := func(b *testing.B) (io.WriteCloser, io.ReadCloser) { return socketPair(b) }
	b.Run("producers=1", func(b *testing.B) { benchWriter(b, pair, false) })
	b.Run("producers=GOMAXPROCS", func(b *testing.B) { benchWriter(b, pair, true) })
}

// BenchmarkWriterPipe is BenchmarkWriterUnix over the transport the master
// and a worker use (two pipes, see Pipe; this is one of them).
func BenchmarkWriterPipe(b *testing.B) {
	pair := func(b *testing.B) (io.WriteCloser, io.ReadCloser) {
		r, w, err := Pipe()
		if err != nil {
			b.Fatal(err)
		}
		return w, r
	}
	b.Run("producers=1", func(b *testing.B) { benchWriter(b, pair, false) })
	b.Run("producers=GOMAXPROCS", func(b *testing.B) { benchWriter(b, pair, true) })
}

func benchWriter(b *testing.B, pair func(*testing.B) (io.WriteCloser, io.ReadCloser), parallel bool) {
	wc, rc := pair(b)
	defer rc.Close()
	defer wc.Close()

	w := NewWriter(wc, 0)
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run() }()

	n := b.N
	readDone := make(chan error, 1)
	go func() {
		r := NewReader(rc, 0)
		for i := 0; i < n; i++ {
			if _, err := r.Next(); err != nil {
				readDone <- err
				return
			}
		}
		readDone <- nil
	}()

	payload := make([]byte, 64)
	b.ReportAllocs()
	b.SetBytes(HeaderSize + 64)
	b.ResetTimer()
	if parallel {
		b.RunParallel(func(pb *testing.PB) {
			h := Header{Type: TypePush, Flags: 1, Conn: 42}
			for pb.Next() {
				h.Seq++
				if err := w.SendWait(&h, payload, nil); err != nil {
					rc.Close() // unblock the reader
					b.Error(err)
					return
				}
			}
		})
	} else {
		h := Header{Type: TypePush, Flags: 1, Conn: 42}
		for i := 0; i < n; i++ {
			h.Seq++
			if err := w.SendWait(&h, payload, nil); err != nil {
				rc.Close() // unblock the reader
				b.Fatal(err)
			}
		}
	}
	if err := <-readDone; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "frames/s")

	w.Close()
	if err := <-runErr; err != nil {
		b.Fatal(err)
	}
}
