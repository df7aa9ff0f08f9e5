package reactor

import (
	"bytes"
	"errors"

	"github.com/valyala/fasthttp"
)

// HTTP framing checks fasthttp does not make (RFC 9112), run on every
// request before any handler sees it. They cost a scan of the header
// block's line starts per request, and nothing per WebSocket message.

// checkRequest returns the status to refuse a request with (0: serve it).
//   - An unsupported major version (HTTP/2.0 and up over HTTP/1 framing,
//     or HTTP/9.9): 505.
//   - Transfer-Encoding together with Content-Length, in any spelling
//     (fasthttp has read the body as chunked and ignored the length; RFC
//     9112 6.1 lets a server refuse it, and requires the connection to
//     close either way: a proxy in front may have framed it by the
//     length, and the rest would be smuggled as a request of its own).
//   - Transfer-Encoding that is not chunked (identity) without a length:
//     the body's end cannot be known (RFC 9112 6.3); fasthttp would read
//     no body and serve the body as the next request.
func checkRequest(ctx *fasthttp.RequestCtx) (int, string) {
	if p := ctx.Request.Header.Protocol(); len(p) == 8 && p[5] != '1' {
		return fasthttp.StatusHTTPVersionNotSupported, "HTTP Version Not Supported"
	}
	te, cl := framingHeaders(ctx.Request.Header.RawHeaders())
	if te && (cl || ctx.Request.Header.ContentLength() != -1) {
		return fasthttp.StatusBadRequest, "Bad Request: Transfer-Encoding with Content-Length, or not chunked"
	}
	return 0, ""
}

var (
	strTransferEncoding = []byte("transfer-encoding:")
	strContentLength    = []byte("content-length:")
)

// framingHeaders reports whether the raw header block has a
// Transfer-Encoding and a Content-Length field (names in any case;
// fasthttp refuses space before the colon).
func framingHeaders(raw []byte) (te, cl bool) {
	for len(raw) > 0 {
		switch raw[0] | 0x20 {
		case 't':
			te = te || hasPrefixFold(raw, strTransferEncoding)
		case 'c':
			cl = cl || hasPrefixFold(raw, strContentLength)
		}
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			break
		}
		raw = raw[i+1:]
	}
	return te, cl
}

var (
	strWSKey     = []byte("sec-websocket-key:")
	strWSVersion = []byte("sec-websocket-version:")
)

// fieldTwice reports whether the raw header block has the field
// lowerName (with its colon) more than once (names in any case). RFC 6455
// 11.3.1 and 11.3.5: a handshake's Sec-WebSocket-Key and
// Sec-WebSocket-Version appear once; a parser would keep one copy, and
// which one is not the client's to choose.
func fieldTwice(raw, lowerName []byte) bool {
	n := 0
	for len(raw) > 0 {
		if hasPrefixFold(raw, lowerName) {
			if n++; n > 1 {
				return true
			}
		}
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			break
		}
		raw = raw[i+1:]
	}
	return false
}

func hasPrefixFold(b, lowerPrefix []byte) bool {
	if len(b) < len(lowerPrefix) {
		return false
	}
	for i, c := range lowerPrefix {
		if x := b[i]; x != c && (c < 'a' || c > 'z' || x|0x20 != c) {
			return false
		}
	}
	return true
}

// errBareLF ends reading a header block that ends in bare LFs: fasthttp
// needs CRLFCRLF and would otherwise wait for more until the read timeout.
var errBareLF = errors.New("reactor: header block ended with bare LF")

// hdrScan follows the bytes of one request's header block as the
// connection reads them, only to tell that fasthttp is waiting for more
// after a complete block it cannot parse (one ended with bare LFs, which
// RFC 9112 2.2 lets a server refuse): Read then fails at once, and the
// client gets 400 instead of a 408 after the read timeout. It runs when
// the scan starts at a request's first byte (not when pipelined bytes
// were already buffered), and it stops at the block's end, unless the
// request can have no body (GET or HEAD, no Content-Length or
// Transfer-Encoding): then the next byte starts the next request, and
// the scan goes on into the requests pipelined behind it (follow).
type hdrScan struct {
	state   uint8
	bare    bool // the block ended without CRLFCRLF
	done    bool // the block's end was seen; scanning stopped
	follow  bool // a bodiless block ended and the scan went on past it
	next    bool // this block's request can have no body (so far)
	lines   int  // non-empty lines so far
	lineLen int  // bytes of the current line so far
	prev    byte
	lastCR  bool // the previous line ended in CRLF
	preLen  uint8
	pre     [len("transfer-encoding:")]byte // the first bytes of a line a read cut (note)
}

const (
	hdrOff      = iota // not scanning
	hdrWaitPeek        // idle between requests: the next read starts a request
	hdrScanning
)

func (s *hdrScan) reset(state uint8) { *s = hdrScan{state: state} }

// idle is called when a request is done and the connection waits for
// the next: a scan that is following the stream past this request keeps
// what it saw of the next ones (a bare block among them fails the read
// fasthttp makes for it); any other starts again at the next read.
func (s *hdrScan) idle() {
	if s.state == hdrScanning && s.follow && (!s.done || s.bare) {
		s.state = hdrWaitPeek
		return
	}
	s.reset(hdrWaitPeek)
}

// before is called before each read: whether to fail it.
func (s *hdrScan) before() error {
	if s.state == hdrScanning && s.done && s.bare {
		return errBareLF
	}
	if s.state == hdrWaitPeek {
		s.state = hdrScanning
	}
	return nil
}

// active is called when fasthttp starts reading a request: if no read
// came since the connection went idle, the request was already buffered
// and its first byte was not seen, unless the scan followed the stream
// into it.
func (s *hdrScan) active() {
	if s.state == hdrWaitPeek {
		if s.follow {
			s.state = hdrScanning
		} else {
			s.state = hdrOff
		}
	}
}

var (
	strGET  = []byte("get ")
	strHEAD = []byte("head ")
)

func (s *hdrScan) scan(b []byte) {
	for s.state == hdrScanning && !s.done && len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			s.note(b)
			s.lineLen += len(b)
			s.prev = b[len(b)-1]
			return
		}
		line := b[:i] // a whole line, or the end of one begun in an earlier read
		if s.lineLen > 0 {
			s.note(line)
			line = s.pre[:s.preLen]
		}
		prev := s.prev
		if i > 0 {
			prev = b[i-1]
		}
		n := s.lineLen + i
		cr := prev == '\r' && n > 0
		empty := n == 0 || (n == 1 && cr)
		b = b[i+1:]
		switch {
		case empty && s.lines > 0:
			bare := !cr || !s.lastCR
			if bare || !s.next {
				s.done, s.bare = true, bare
				return
			}
			// A bodiless request: what follows is the next one.
			*s = hdrScan{state: hdrScanning, follow: true}
			continue
		case !empty:
			if s.lines == 0 {
				s.next = hasPrefixFold(line, strGET) || hasPrefixFold(line, strHEAD)
			} else if s.next && len(line) > 0 && (line[0]|0x20 == 'c' || line[0]|0x20 == 't') &&
				(hasPrefixFold(line, strContentLength) || hasPrefixFold(line, strTransferEncoding)) {
				s.next = false
			}
			s.lines++
		}
		s.lastCR = cr
		s.lineLen, s.prev, s.preLen = 0, '\n', 0
	}
}

// note keeps the first bytes of a line that a read cut.
func (s *hdrScan) note(b []byte) {
	s.preLen += uint8(copy(s.pre[s.preLen:], b))
}
