package reactor

import (
	"errors"
	"io"
	"os"
	"reflect"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Reading an ipc pipe without the read that fails.
//
// A PROCESS-mode worker sleeps between the master's batches, and the
// master's ipc reader between a worker's: each batch was a read that got
// it, then, the frames handled, a read that found the pipe empty (EAGAIN)
// and parked the reader in the poller. PipeReader waits on the poller
// first, as waitNextRequest does for a keep-alive connection (see
// idlewait_linux.go for why the wait is exact: the poller remembers an
// edge seen while nobody waited), with the same runtime call, then reads
// once: one read system call per batch instead of two.
//
// The wait is exact only when the pipe was empty after the last read: a
// pipe read returns less than asked only when it emptied the pipe, and
// bytes already there raise no new edge. So after a read that filled its
// buffer the next one reads first. A stale edge (bytes an earlier read
// already took) makes the raw read fail with EAGAIN, and anything else the
// wait cannot tell (the file closed meanwhile) goes to the file's own
// Read, which parks or reports as it always did.

// fileCtxOff is where an *os.File's poll state pointer is, as two hops:
// the *os.file at offset 0 of os.File, and the runtime context's offset in
// the os.file (0: unknown runtime layout, read as usual).
var fileCtxOff = fileOffsets()

func fileOffsets() uintptr {
	tf := reflect.TypeFor[os.File]()
	if tf.NumField() != 1 {
		return 0
	}
	f := tf.Field(0)
	if f.Offset != 0 || f.Type.Kind() != reflect.Pointer || f.Type.Elem().Kind() != reflect.Struct {
		return 0
	}
	pfd, ok := f.Type.Elem().FieldByName("pfd")
	if !ok || pfd.Type.Kind() != reflect.Struct || pfd.Type.String() != "poll.FD" {
		return 0
	}
	pd, ok := pfd.Type.FieldByName("pd")
	if !ok || pd.Type.Kind() != reflect.Struct || pd.Type.String() != "poll.pollDesc" {
		return 0
	}
	rc, ok := pd.Type.FieldByName("runtimeCtx")
	if !ok || rc.Type.Kind() != reflect.Uintptr || pd.Type.NumField() != 1 {
		return 0
	}
	return pfd.Offset + pd.Offset + rc.Offset
}

// PipeReader reads one non-blocking pipe end in the runtime's poller (an
// ipc stream's, see ipc.PipeFile) with one read system call per wake-up.
// One goroutine at a time reads it (the runtime throws on two waiting to
// read one descriptor, which the file's read lock, not taken by the
// wait, would otherwise prevent).
type PipeReader struct {
	f     *os.File
	raw   syscall.RawConn
	file  unsafe.Pointer // the *os.file
	wait  func(uintptr)  // made once: Control's callback
	buf   []byte         // wait's read buffer
	n     int            // what it read: -1 nothing (read as usual)
	eof   bool           // it read 0: the writing end is closed
	full  bool           // the last read filled its buffer: read first
	waits uint64         // reads that waited on the poller first (tests)
	gone  atomic.Bool    // WriterGone: read first, never wait first
}

// NewPipeReader returns a reader of f: a PipeReader, or f itself when it
// is not in the poller or the runtime's layout is not the expected one.
func NewPipeReader(f *os.File) io.Reader {
	if fileCtxOff == 0 || f == nil {
		return f
	}
	raw, err := f.SyscallConn()
	if err != nil {
		return f
	}
	r := &PipeReader{f: f, raw: raw, file: *(*unsafe.Pointer)(unsafe.Pointer(f))}
	if r.file == nil || *(*uintptr)(unsafe.Add(r.file, fileCtxOff)) == 0 {
		return f // a blocking file: no poll state to wait on
	}
	r.wait = func(fd uintptr) {
		r.n, r.eof = -1, false
		// Under Control's reference the poll state stays this file's.
		ctx := *(*uintptr)(unsafe.Add(r.file, fileCtxOff))
		if ctx == 0 || runtime_pollWait(ctx, 'r') != 0 {
			return
		}
		for {
			n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)))
			if e == syscall.EINTR {
				continue
			}
			if e == 0 {
				r.n, r.eof = int(n), n == 0
			}
			return
		}
	}
	return r
}

// The end of the stream is not exact: when the writer writes its last
// bytes and closes before the poller is asked, the write's edge and the
// close's are one, the wait takes it, the read gets the bytes (and empties
// the pipe), and no edge is left for the EOF that follows. Whoever knows
// the writer is gone (the master's reaper, once the worker exited) says so
// with WriterGone, and the reader then reads the pipe as the file does.

// WriterGone tells the reader that the pipe's writer has exited: a Read
// waiting on the poller wakes, and every Read from now on reads first (the
// rest of the bytes, then io.EOF; or, when another process still holds
// the write end, the file's own wait). Safe to call from any goroutine.
func (r *PipeReader) WriterGone() {
	r.gone.Store(true)
	r.f.SetReadDeadline(time.Now()) // wakes a wait parked in the poller
}

// Read reads into p: after a read that left the pipe empty it waits for
// the poller's word that more came, then reads once.
func (r *PipeReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if !r.full && !r.gone.Load() {
		r.buf = p
		err := r.raw.Control(r.wait)
		r.buf = nil
		if err == nil && r.n > 0 {
			r.waits++
			r.full = r.n == len(p)
			return r.n, nil
		}
		if err == nil && r.eof {
			return 0, io.EOF
		}
	}
	n, err := r.f.Read(p)
	for errors.Is(err, os.ErrDeadlineExceeded) && r.gone.Load() {
		// WriterGone's wake-up, not a deadline anyone set: clear it (it
		// was set after gone, so no later one is lost) and read.
		r.f.SetReadDeadline(time.Time{})
		n, err = r.f.Read(p)
	}
	r.full = err == nil && n == len(p)
	return n, err
}
