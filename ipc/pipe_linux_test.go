package ipc

import (
	"bytes"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPipeStream: frames of every size up to many times the pipe's
// capacity cross whole and in order (a full pipe makes the writer wait in
// the poller), and the reader sees EOF after the writer closes.
func TestPipeStream(t *testing.T) {
	r, w, err := Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	bw := NewWriter(w, 8<<20)
	go bw.Run()
	sizes := []int{0, 1, 100, PipeSize - HeaderSize, PipeSize, 4 * PipeSize, 5 << 20, 3}
	go func() {
		for i, n := range sizes {
			bw.SendWait(&Header{Type: TypeMessage, Seq: uint32(i)}, bytes.Repeat([]byte{byte(i + 1)}, n), nil)
		}
		bw.Close()
		<-bw.Done()
		w.Close()
	}()
	rd := NewReader(r, MaxPayload)
	for i, n := range sizes {
		f, err := rd.Next()
		if err != nil {
			t.Fatalf("frame %d (%d bytes): %v", i, n, err)
		}
		if f.Seq != uint32(i) || !bytes.Equal(f.Payload, bytes.Repeat([]byte{byte(i + 1)}, n)) {
			t.Fatalf("frame %d: got seq %d, %d bytes; want %d bytes of %d", i, f.Seq, len(f.Payload), n, i+1)
		}
	}
	if _, err := rd.Next(); err == nil {
		t.Fatal("read past the writer's close: want EOF")
	}
}

// TestPipeReaderGone: when the other process is gone (the pipe has no
// reader), a writer waiting on a full pipe ends with EPIPE, so that the
// master's clean-up, which waits for it, never hangs.
func TestPipeReaderGone(t *testing.T) {
	r, w, err := Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	bw := NewWriter(w, 8<<20)
	done := make(chan error, 1)
	go func() { done <- bw.Run() }()
	if err := bw.Send(&Header{Type: TypeMessage}, make([]byte, 2*PipeSize), nil); err != nil { // more than the pipe holds
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("writer ended with the pipe full and its reader open: %v", err)
	default:
	}
	r.Close()
	select {
	case err := <-done:
		if !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("writer ended with %v, want EPIPE", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("writer still blocked 5s after its reader closed")
	}
}

// TestPipeFile: an inherited blocking pipe end becomes a File in the
// poller (a read waiting on it honours a deadline), closed on exec.
func TestPipeFile(t *testing.T) {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], 0); err != nil { // blocking and inheritable, as a worker gets it
		t.Fatal(err)
	}
	defer syscall.Close(fds[1])
	f, err := PipeFile(uintptr(fds[0]), "test-in")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatalf("not pollable: %v", err)
	}
	if _, err := f.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on an empty pipe: %v, want a deadline error", err)
	}
	flags, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("inherited end not close-on-exec (flags %#x, %v): a child of the worker would inherit it", flags, err)
	}
}
