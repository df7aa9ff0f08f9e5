package ipc

import (
	"os"

	"golang.org/x/sys/unix"
)

// PipeSize is the capacity asked for each ipc pipe (the kernel's default
// is 64 KiB; an unprivileged process may ask up to fs.pipe-max-size).
const PipeSize = 256 << 10

// Pipe returns one direction of an ipc stream: a pipe whose ends are
// non-blocking and in the runtime's poller.
//
// A stream is two pipes rather than a unix socket pair. When a unix
// socket's reader takes data, the kernel wakes whatever polls the writer's
// socket for write space, on every read, and Go's poller watches every
// socket for writing as well as reading: over a socket pair each batch one
// process read woke the other for nothing (four server wake-ups in ten in a
// `perf record -e sched:sched_wakeup` of a PROCESS-mode HTTP run, through
// unix_write_space). A pipe wakes its writer only when it was full, and a
// pipe write is cheaper than a socket's. Measured side by side with `server
// bench` in two alternating rounds (see docs/ipc.md): PROCESS-mode HTTP
// served 20-50 % more requests per server CPU-second over pipes than over
// one socket pair, and 3-25 % more than over two socket pairs whose writing
// ends were kept out of the poller.
func Pipe() (r, w *os.File, err error) {
	r, w, err = os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	if rc, err := w.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			// Best effort: a smaller pipe only means more, smaller writes.
			unix.FcntlInt(fd, unix.F_SETPIPE_SZ, PipeSize)
		})
	}
	return r, w, nil
}

// PipeFile makes an inherited pipe end (a worker's fd 3 or 4) non-blocking
// and returns it as a File in the runtime's poller, so that a read or write
// waiting on it parks only its goroutine and Close ends it. It also marks it
// close-on-exec: a process the worker's own code starts must not inherit
// it (it would keep the stream open after the worker died, and the master
// would not see the worker go).
func PipeFile(fd uintptr, name string) (*os.File, error) {
	if err := unix.SetNonblock(int(fd), true); err != nil {
		return nil, err
	}
	unix.CloseOnExec(int(fd))
	return os.NewFile(fd, name), nil
}
