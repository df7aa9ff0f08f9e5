package reactor

import (
	"bufio"
	"encoding/binary"
	"io"
	"slices"
	"syscall"
)

// frameReader reads a client's frames (RFC 6455 5.2) and hands back whole
// data messages and single control frames. It validates as bytes arrive:
// UTF-8 of a text message is checked incrementally, across frames and
// across the reads of one frame, so a message fails as soon as its bytes
// so far cannot begin valid UTF-8; and after the first failure it reads
// nothing more. It allocates nothing per message: an unfragmented frame
// that is already in the read buffer is unmasked in place and returned as
// a slice of it; others are assembled in a pooled buffer.
type frameReader struct {
	src  io.Reader
	bp   *[]byte // pooled read buffer; nil while released (see wsread.go)
	buf  []byte
	r, w int
	max  int // largest message

	// A plain TCP WebSocket is read through its raw connection, so that
	// no buffer is held while it waits (see wsread.go): what fasthttp had
	// buffered past the upgrade request (br) first, then raw.
	br      *bufio.Reader
	raw     syscall.RawConn
	c       *Conn // counts the bytes read raw
	readFn  func(fd uintptr) bool
	rn      int
	rerr    error
	needBuf bool
	// emptied: the last read from the socket left room in the buffer, so
	// the socket held nothing more then (see peerDone), and whatever came
	// since raised an edge: the next read may wait first (see wsread.go).
	emptied bool
	// waitFn waits for the socket, then reads it (nil: a read always
	// reads first); wres is what it did; waited: the last read came from
	// it (tests).
	wres   int8
	waited bool
	waitFn func(fd uintptr)
	// eof: the read loop ended at the peer's end of stream (its FIN).
	eof bool

	// The message being assembled (fragmented, or larger than what one
	// read brought): its opcode (0: none), bytes and UTF-8 state.
	msgOp int
	mp    *[]byte
	utf   utf8State
}

func newFrameReader(src io.Reader, max int) *frameReader {
	return &frameReader{src: src, max: max}
}

// take gets a read buffer from the pool.
func (fr *frameReader) take() {
	if bp, _ := rawBufPool.Get().(*[]byte); bp != nil {
		fr.bp = bp
	} else {
		b := make([]byte, frameReadBufferBytes)
		fr.bp = &b
	}
	fr.buf = (*fr.bp)[:cap(*fr.bp)]
}

// putBuf returns the read buffer to the pool.
func (fr *frameReader) putBuf() {
	if fr.bp != nil {
		rawBufPool.Put(fr.bp)
		fr.bp, fr.buf = nil, nil
	}
}

// release returns the pooled buffers; the reader is not used after it.
func (fr *frameReader) release() {
	fr.putBuf()
	fr.dropMsg()
}

func (fr *frameReader) dropMsg() {
	if fr.mp != nil {
		if cap(*fr.mp) <= 64<<10 {
			*fr.mp = (*fr.mp)[:0]
			msgPool.Put(fr.mp)
		}
		fr.mp = nil
	}
}

// fill makes at least n bytes readable in buf[r:w] (n <= len(buf)).
func (fr *frameReader) fill(n int) error {
	if fr.w-fr.r >= n {
		return nil
	}
	if fr.r == fr.w {
		fr.r, fr.w = 0, 0
		// Everything read is handled (and, for an echo, answered): the
		// peer can hardly have sent more yet. A plain TCP socket waits
		// for it on the poller (readRaw); otherwise, as for a keep-alive
		// HTTP connection on TLS, the other ready goroutines run first, so
		// the read more often finds the next message instead of EAGAIN.
		if !fr.waitsFirst() {
			yieldBeforeNextRequest()
		}
	} else if fr.r+n > len(fr.buf) {
		fr.w = copy(fr.buf, fr.buf[fr.r:fr.w])
		fr.r = 0
	}
	for fr.w-fr.r < n {
		var m int
		var err error
		if fr.rawReady() {
			m, err = fr.readRaw() // takes the buffer once readable
			fr.emptied = err == nil && fr.w+m < len(fr.buf)
		} else {
			if fr.buf == nil {
				fr.take()
			}
			m, err = fr.read(fr.buf[fr.w:])
			fr.emptied = false
		}
		fr.w += m
		if err != nil {
			if fr.w-fr.r >= n {
				return nil
			}
			if err == io.EOF && fr.w > fr.r {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// next returns the next whole data message (opText or opBinary) or
// control frame (opClose, opPing, opPong) with its payload, valid until
// the following call. A protocol violation is a *wsFail; anything else
// is the connection's read error.
func (fr *frameReader) next() (int, []byte, error) {
	if fr.msgOp == 0 {
		fr.dropMsg() // the message returned last time
	}
	for {
		if err := fr.fill(2); err != nil {
			return 0, nil, err
		}
		b0, b1 := fr.buf[fr.r], fr.buf[fr.r+1]
		fin, op := b0&0x80 != 0, int(b0&0x0f)
		if b0&0x70 != 0 {
			return 0, nil, errRSV
		}
		control := op&8 != 0
		switch op {
		case opContinuation, opText, opBinary, opClose, opPing, opPong:
		default:
			return 0, nil, errOpcode
		}
		if b1&0x80 == 0 {
			return 0, nil, errUnmasked
		}
		n := int64(b1 & 0x7f)
		hlen := 2 + 4
		switch n {
		case 126:
			hlen += 2
		case 127:
			hlen += 8
		}
		if control {
			if !fin {
				return 0, nil, errCtlFragment
			}
			if n > maxControlPayload {
				return 0, nil, errCtlTooLong
			}
		} else if op == opContinuation && fr.msgOp == 0 {
			return 0, nil, errContinuation
		} else if op != opContinuation && fr.msgOp != 0 {
			return 0, nil, errInterleaved
		}
		if err := fr.fill(hlen); err != nil {
			return 0, nil, midFrame(err)
		}
		h := fr.buf[fr.r : fr.r+hlen]
		switch n {
		case 126:
			n = int64(binary.BigEndian.Uint16(h[2:]))
		case 127:
			u := binary.BigEndian.Uint64(h[2:])
			if u>>63 != 0 {
				return 0, nil, errLength
			}
			if u > uint64(fr.max) {
				return 0, nil, errTooBig
			}
			n = int64(u)
		}
		key := binary.LittleEndian.Uint32(h[hlen-4:])
		fr.r += hlen

		if control {
			if err := fr.fill(int(n)); err != nil {
				return 0, nil, midFrame(err)
			}
			p := fr.buf[fr.r : fr.r+int(n)]
			fr.r += int(n)
			mask(key, 0, p)
			return op, p, nil
		}

		size := int64(0)
		if fr.mp != nil {
			size = int64(len(*fr.mp))
		}
		if size+n > int64(fr.max) {
			return 0, nil, errTooBig
		}
		text := op == opText || (op == opContinuation && fr.msgOp == opText)
		if op != opContinuation {
			fr.msgOp = op
			fr.utf = utf8State{}
		}
		// Fast path: a whole unfragmented message already read.
		if fin && op != opContinuation && int64(fr.w-fr.r) >= n {
			p := fr.buf[fr.r : fr.r+int(n)]
			fr.r += int(n)
			fr.msgOp = 0
			mask(key, 0, p)
			if text && (!fr.utf.valid(p) || !fr.utf.complete()) {
				return 0, nil, errTextUTF8
			}
			return op, p, nil
		}
		if err := fr.readPayload(key, int(n), text); err != nil {
			return 0, nil, err
		}
		if !fin {
			continue
		}
		if text && !fr.utf.complete() {
			return 0, nil, errTextUTF8
		}
		op, fr.msgOp = fr.msgOp, 0
		return op, *fr.mp, nil
	}
}

// readPayload appends n masked payload bytes to the message being
// assembled, unmasking and validating each piece as it arrives.
func (fr *frameReader) readPayload(key uint32, n int, text bool) error {
	if fr.mp == nil {
		fr.mp = msgPool.Get().(*[]byte)
		*fr.mp = (*fr.mp)[:0]
	}
	msg := *fr.mp
	pos := 0
	for pos < n {
		start := len(msg)
		if fr.r < fr.w {
			k := min(fr.w-fr.r, n-pos)
			msg = append(msg, fr.buf[fr.r:fr.r+k]...)
			fr.r += k
		} else if n-pos >= frameReadBufferBytes {
			// A large rest: read it straight into the message. The message
			// grows as bytes arrive (as append does), never by what a
			// header merely announces.
			if cap(msg)-start < frameReadBufferBytes {
				msg = slices.Grow(msg, min(n-pos, max(start, 64<<10)))
			}
			p := msg[start:min(cap(msg), start+n-pos)]
			m, err := fr.read(p)
			fr.emptied = err == nil && m < len(p) && fr.br == nil // from the socket, which it emptied
			msg = msg[:start+m]
			if m == 0 && err != nil {
				*fr.mp = msg
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
		} else {
			fr.r, fr.w = 0, 0
			if err := fr.fill(1); err != nil {
				*fr.mp = msg
				return midFrame(err)
			}
			continue
		}
		p := msg[start:]
		mask(key, pos, p)
		pos += len(p)
		if text && !fr.utf.valid(p) {
			*fr.mp = msg
			return errTextUTF8
		}
	}
	*fr.mp = msg
	return nil
}

// midFrame: the connection ended inside a frame.
func midFrame(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
