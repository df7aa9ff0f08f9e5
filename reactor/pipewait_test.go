package reactor

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

func newTestPipe(t *testing.T) (*PipeReader, *os.File, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	pr, ok := NewPipeReader(r).(*PipeReader)
	if !ok {
		t.Fatalf("NewPipeReader returned %T, want *PipeReader (runtime layout not recognised: fileCtxOff=%d)", NewPipeReader(r), fileCtxOff)
	}
	return pr, r, w
}

// readWithin reads once into p, failing the test when the read takes
// longer than d (a wait that missed its edge would hang).
func readWithin(t *testing.T, r io.Reader, p []byte, d time.Duration) (int, error) {
	t.Helper()
	type res struct {
		n   int
		err error
	}
	ch := make(chan res, 1)
	go func() {
		n, err := r.Read(p)
		ch <- res{n, err}
	}()
	select {
	case x := <-ch:
		return x.n, x.err
	case <-time.After(d):
		t.Fatalf("read did not return within %v", d)
		return 0, nil
	}
}

// TestPipeReaderWaits: after a read that emptied the pipe, the next read
// waits on the poller and gets what is written later, in order, whole.
func TestPipeReaderWaits(t *testing.T) {
	for i := 0; i < 50; i++ {
		pr, _, w := newTestPipe(t)
		buf := make([]byte, 4096)
		var got []byte
		for j := 0; j < 20; j++ {
			msg := bytes.Repeat([]byte{byte('a' + j%26)}, 10+j)
			go func() {
				if j%2 == 0 {
					time.Sleep(100 * time.Microsecond) // the reader is parked first
				}
				w.Write(msg)
			}()
			n, err := readWithin(t, pr, buf, 5*time.Second)
			if err != nil {
				t.Fatalf("read %d: %v", j, err)
			}
			got = append(got, buf[:n]...)
			for len(got) < sumLen(j) {
				n, err := readWithin(t, pr, buf, 5*time.Second)
				if err != nil {
					t.Fatalf("read %d: %v", j, err)
				}
				got = append(got, buf[:n]...)
			}
		}
		var want []byte
		for j := 0; j < 20; j++ {
			want = append(want, bytes.Repeat([]byte{byte('a' + j%26)}, 10+j)...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("got %q, want %q", got, want)
		}
		if pr.waits == 0 {
			t.Fatalf("no read waited on the poller first")
		}
	}
}

func sumLen(j int) int {
	n := 0
	for k := 0; k <= j; k++ {
		n += 10 + k
	}
	return n
}

// TestPipeReaderFullBuffer: a read that fills its buffer may leave bytes
// in the pipe, which raise no new edge: the next read must get them at
// once, not wait for a write that never comes.
func TestPipeReaderFullBuffer(t *testing.T) {
	pr, _, w := newTestPipe(t)
	data := bytes.Repeat([]byte("0123456789"), 100) // 1,000 bytes, read 64 at a time
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 64)
	for len(got) < len(data) {
		n, err := readWithin(t, pr, buf, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, want the %d written, in order", len(got), len(data))
	}
}

// TestPipeReaderEOF: the writing end's close is io.EOF, whether the reader
// was parked in the wait or not.
func TestPipeReaderEOF(t *testing.T) {
	for _, parked := range []bool{false, true} {
		pr, _, w := newTestPipe(t)
		w.Write([]byte("x"))
		buf := make([]byte, 16)
		if n, err := readWithin(t, pr, buf, 5*time.Second); n != 1 || err != nil {
			t.Fatalf("got %d, %v; want 1, nil", n, err)
		}
		if parked {
			go func() { time.Sleep(50 * time.Millisecond); w.Close() }()
		} else {
			w.Close()
		}
		if n, err := readWithin(t, pr, buf, 5*time.Second); n != 0 || err != io.EOF {
			t.Fatalf("parked=%v: got %d, %v; want 0, io.EOF", parked, n, err)
		}
	}
}

// TestPipeReaderClose: closing the read end while the reader waits ends the
// read with the file's closed error (the master's reaper closes it so).
func TestPipeReaderClose(t *testing.T) {
	pr, r, w := newTestPipe(t)
	w.Write([]byte("x"))
	buf := make([]byte, 16)
	if _, err := readWithin(t, pr, buf, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(50 * time.Millisecond); r.Close() }()
	if _, err := readWithin(t, pr, buf, 5*time.Second); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("got %v, want os.ErrClosed", err)
	}
}

// TestPipeReaderWriterGone: the writer writes its last bytes and closes
// before the reader reads them. The write's edge and the close's merge into
// the one the reader's wait takes, its read gets the bytes (less than it
// asked: the pipe is empty), and no edge is left for the EOF: the next
// wait would park for ever (the master's reaper then closed a drained
// worker's stream after 2 s of silence, logging an error, on about one
// reload step in five under load). Once told the writer is gone
// (WriterGone, from the reaper that saw the process exit), the reader
// reads the rest and the EOF whether it is parked in the wait or not.
func TestPipeReaderWriterGone(t *testing.T) {
	for _, parked := range []bool{false, true} {
		for i := 0; i < 20; i++ {
			pr, _, w := newTestPipe(t)
			buf := make([]byte, 16)
			w.Write([]byte("a"))
			if n, err := readWithin(t, pr, buf, 5*time.Second); n != 1 || err != nil {
				t.Fatalf("got %d, %v; want 1, nil", n, err)
			}
			w.Write([]byte("last"))
			w.Close()
			if n, err := readWithin(t, pr, buf, 5*time.Second); string(buf[:n]) != "last" || err != nil {
				t.Fatalf("got %q, %v; want \"last\", nil", buf[:n], err)
			}
			if parked {
				go func() { time.Sleep(20 * time.Millisecond); pr.WriterGone() }()
			} else {
				pr.WriterGone()
			}
			if n, err := readWithin(t, pr, buf, 5*time.Second); n != 0 || err != io.EOF {
				t.Fatalf("parked=%v: got %d, %v; want 0, io.EOF", parked, n, err)
			}
		}
	}
}

// TestPipeReaderWriterGoneKeepsData: WriterGone while bytes are still in
// the pipe (a drained worker's last responses) loses none of them, and a
// pipe whose write end another process still holds is still waited on
// (no error, no spin) until bytes come.
func TestPipeReaderWriterGoneKeepsData(t *testing.T) {
	pr, _, w := newTestPipe(t)
	data := bytes.Repeat([]byte("0123456789"), 1000)
	buf := make([]byte, 100)
	w.Write([]byte("a"))
	if _, err := readWithin(t, pr, buf, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	pr.WriterGone()
	go func() { time.Sleep(50 * time.Millisecond); w.Write(data); w.Close() }()
	var got []byte
	for {
		n, err := readWithin(t, pr, buf, 5*time.Second)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, want the %d written, in order", len(got), len(data))
	}
}
