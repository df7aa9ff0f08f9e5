package ipc

import (
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"sync"
)

// Writer batches frames from many goroutines into few write calls. Producers
// append encoded frames to a pending buffer under a mutex; one flusher
// goroutine (Run) swaps it out and writes it whole, so under load one
// syscall carries many frames. Nothing is allocated per frame once the two
// buffers have grown to the working size. Pending bytes are bounded.
type Writer struct {
	w     io.Writer
	limit int

	mu      sync.Mutex
	pending []byte
	last    int // offset in pending of the last frame queued; -1: none (Fold)
	spare   []byte
	closed  bool
	space   *sync.Cond // signalled when pending shrinks or the writer closes
	notify  chan struct{}
	done    chan struct{}
	dropped uint64 // frames refused because the queue was full (Send)
	lead    func(dst []byte) []byte
}

// NewWriter returns a Writer over w holding at most limit pending bytes
// (a single frame larger than limit is still accepted into an empty queue).
func NewWriter(w io.Writer, limit int) *Writer {
	if limit <= 0 {
		limit = 4 << 20
	}
	bw := &Writer{
		w:       w,
		limit:   limit,
		pending: make([]byte, 0, 64<<10),
		last:    -1,
		spare:   make([]byte, 0, 64<<10),
		notify:  make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	bw.space = sync.NewCond(&bw.mu)
	return bw
}

// Send queues a frame without blocking. It fails with ErrFull when the
// pending queue is over its limit, and ErrClosed after Close or a write error.
func (w *Writer) Send(h *Header, a, b []byte) error {
	return w.send(h, a, b, false)
}

// SendWait queues a frame, waiting while the queue is full (back-pressure).
func (w *Writer) SendWait(h *Header, a, b []byte) error {
	return w.send(h, a, b, true)
}

func (w *Writer) send(h *Header, a, b []byte, wait bool) error {
	if len(a)+len(b) > MaxPayload {
		return ErrTooLarge
	}
	w.mu.Lock()
	for {
		if w.closed {
			w.mu.Unlock()
			return ErrClosed
		}
		if len(w.pending) == 0 || len(w.pending)+HeaderSize+len(a)+len(b) <= w.limit {
			break
		}
		if !wait {
			w.dropped++
			w.mu.Unlock()
			return ErrFull
		}
		w.space.Wait()
	}
	wake := len(w.pending) == 0
	if wake && w.lead != nil {
		w.pending = w.lead(w.pending)
	}
	w.last = len(w.pending)
	w.pending = AppendFrame(w.pending, h, a, b)
	w.mu.Unlock()
	if wake {
		select {
		case w.notify <- struct{}{}:
		default:
		}
	}
	return nil
}

// SetLead sets a function that may append frames ahead of the first frame
// of every batch (a frame queued while nothing is pending): something
// owed to the other side that is worth no write of its own, and rides on
// the next one instead (the master's SendAck). It runs under the Writer's
// lock and must not call the Writer. Set it before the first Send.
func (w *Writer) SetLead(f func(dst []byte) []byte) { w.lead = f }

// Fold merges a payload-less frame into the last frame queued, when that
// one is still pending (not yet handed to the stream, so nothing can come
// between them): if it is of type from or to and about conn, it becomes
// of type to, arg is added to its arg, and Fold reports true. Otherwise
// nothing changes and Fold reports false: send the frame itself. The
// stream then carries one frame where it would have carried two
// adjacent ones (TypeSendCredit: a Send and the Credit after it).
func (w *Writer) Fold(conn uint64, from, to Type, arg uint32) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.last < 0 {
		return false
	}
	hb := w.pending[w.last : w.last+HeaderSize]
	if t := Type(hb[4]); (t != from && t != to) || binary.LittleEndian.Uint64(hb[8:]) != conn {
		return false
	}
	hb[4] = byte(to)
	binary.LittleEndian.PutUint32(hb[20:], binary.LittleEndian.Uint32(hb[20:])+arg)
	return true
}

// Dropped reports how many frames Send refused because the queue was full.
func (w *Writer) Dropped() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dropped
}

// Pending reports the bytes queued and not yet written.
func (w *Writer) Pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending)
}

// Run flushes queued frames until Close or a write error, which it returns
// (nil after Close). Exactly one goroutine runs it.
func (w *Writer) Run() error {
	defer close(w.done)
	for {
		w.mu.Lock()
		for len(w.pending) == 0 && !w.closed {
			w.mu.Unlock()
			<-w.notify
			// Let the producers that are runnable now add their frames
			// first: one write then carries them all.
			runtime.Gosched()
			w.mu.Lock()
		}
		if len(w.pending) == 0 && w.closed {
			w.mu.Unlock()
			return nil
		}
		buf := w.pending
		w.pending = w.spare[:0]
		w.last = -1
		w.space.Broadcast()
		w.mu.Unlock()

		_, err := w.w.Write(buf)

		w.mu.Lock()
		w.spare = buf[:0]
		// Do not keep a burst's buffer forever, but keep what a full queue
		// grows to (up to ~2*limit): dropping that reallocated it every flush.
		if cap(w.spare) > 2*w.limit+64<<10 {
			w.spare = make([]byte, 0, 64<<10)
		}
		if err != nil {
			w.closed = true
			w.pending = w.pending[:0]
			w.last = -1
			w.space.Broadcast()
			w.mu.Unlock()
			return err
		}
		w.mu.Unlock()
	}
}

// Close stops accepting frames; Run writes what is queued, then returns.
func (w *Writer) Close() {
	w.mu.Lock()
	w.closed = true
	w.space.Broadcast()
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// Done is closed when Run has returned.
func (w *Writer) Done() <-chan struct{} { return w.done }

// Reader decodes frames from a stream. Frames alias its buffer.
type Reader struct {
	r     io.Reader
	max   int
	buf   []byte
	start int
	end   int
}

// NewReader returns a Reader over r accepting payloads of at most max bytes.
func NewReader(r io.Reader, max int) *Reader {
	if max <= 0 || max > MaxPayload {
		max = MaxPayload
	}
	return &Reader{r: r, max: max, buf: make([]byte, 64<<10)}
}

// Next returns the next frame. Its payload is valid until the next call.
// A malformed header is an error; the caller closes the stream.
func (r *Reader) Next() (Frame, error) {
	if err := r.fill(HeaderSize); err != nil {
		return Frame{}, err
	}
	h, err := ParseHeader(r.buf[r.start:], r.max)
	if err != nil {
		return Frame{}, err
	}
	total := HeaderSize + int(h.Len)
	if err := r.fill(total); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	f := Frame{Header: h, Payload: r.buf[r.start+HeaderSize : r.start+total : r.start+total]}
	r.start += total
	return f, nil
}

// Buffered reports the bytes read from the stream and not yet returned by
// Next: 0 means the next Next reads (and may wait).
func (r *Reader) Buffered() int { return r.end - r.start }

// fill makes at least n unread bytes available in r.buf[r.start:].
func (r *Reader) fill(n int) error {
	if r.end-r.start >= n {
		return nil
	}
	if n > len(r.buf) {
		nb := make([]byte, n+HeaderSize)
		r.end = copy(nb, r.buf[r.start:r.end])
		r.start = 0
		r.buf = nb
	} else if len(r.buf)-r.start < n {
		r.end = copy(r.buf, r.buf[r.start:r.end])
		r.start = 0
	}
	for r.end-r.start < n {
		m, err := r.r.Read(r.buf[r.end:])
		r.end += m
		if err != nil {
			if r.end-r.start >= n {
				return nil
			}
			if errors.Is(err, io.EOF) && r.end-r.start > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// Shrink drops a buffer grown for one large frame once it is no longer
// needed, so a single 10 MiB message does not pin 10 MiB per stream.
func (r *Reader) Shrink() {
	if len(r.buf) > 256<<10 && r.end == r.start {
		r.buf = make([]byte, 64<<10)
		r.start, r.end = 0, 0
	}
}
