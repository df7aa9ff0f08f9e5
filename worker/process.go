package worker

import (
	"bufio"
	"bytes"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd/ipc"
)

// reqCtx is a pooled fasthttp.RequestCtx for a request that arrived over
// ipc (PROCESS mode), with what it takes to parse into it and answer it.
type reqCtx struct {
	ctx    fasthttp.RequestCtx
	conn   ipcConn
	rd     bytes.Reader
	br     *bufio.Reader
	head   []byte
	seq    uint32
	listen int
}

var reqPool = sync.Pool{New: func() any {
	rc := &reqCtx{}
	rc.br = bufio.NewReaderSize(&rc.rd, 16<<10)
	rc.conn.addr.IP = make(net.IP, 0, 16)
	return rc
}}

// ipcConn stands in for the client connection the master holds: fasthttp
// asks it only for addresses.
type ipcConn struct {
	net.Conn
	addr net.TCPAddr
}

func (c *ipcConn) RemoteAddr() net.Addr { return &c.addr }
func (c *ipcConn) LocalAddr() net.Addr  { return &net.TCPAddr{} }
func (c *ipcConn) Close() error         { return nil }
func (c *ipcConn) SetDeadline(time.Time) error {
	return nil
}

// serveRequest parses a Request frame (out of the ipc buffer, which the
// next frame overwrites) and serves it in a goroutine of its own (a pooled
// one, see job).
func (w *Worker) serveRequest(f ipc.Frame) {
	rc := reqPool.Get().(*reqCtx)
	rc.seq = f.Seq
	rc.listen = int(f.Code)
	remote, rest, err := ipc.NextField(f.Payload)
	if err != nil || int(f.Arg) > len(rest) {
		w.log.Error().Msg("malformed request frame")
		w.respondError(rc, fasthttp.StatusBadRequest)
		return
	}
	rc.conn.addr.IP, rc.conn.addr.Port = rc.conn.addr.IP[:0], 0
	if ip, port, ok := ipc.ParseAddr(remote); ok {
		rc.conn.addr.IP = append(rc.conn.addr.IP, ip...)
		rc.conn.addr.Port = port
	}
	rc.ctx.Init2(&rc.conn, nil, false)
	rc.rd.Reset(rest[:f.Arg])
	rc.br.Reset(&rc.rd)
	if err := rc.ctx.Request.Header.Read(rc.br); err != nil {
		w.log.Error().Err(err).Msg("unparsable request header from master")
		w.respondError(rc, fasthttp.StatusBadRequest)
		return
	}
	rc.ctx.Request.SetBody(rest[f.Arg:])
	w.inflight.Add(1)
	w.spawn(job{rc: rc})
}

func (w *Worker) runRequest(rc *reqCtx) {
	defer w.inflight.Done()
	w.counted()
	ok := w.serveHTTP(rc.listen, &rc.ctx)
	if !ok {
		rc.ctx.Response.Reset()
		rc.ctx.Error("Internal Server Error", fasthttp.StatusInternalServerError)
	}
	w.respond(rc)
}

var (
	hContentLength = []byte("Content-Length")
	hConnection    = []byte("Connection")
	hDate          = []byte("Date")
)

// respond encodes the response (ipc.AppendResponseHead) and sends it.
func (w *Worker) respond(rc *reqCtx) {
	resp := &rc.ctx.Response
	var flags uint8
	if resp.ConnectionClose() {
		flags |= ipc.RespClose
	}
	head := ipc.AppendResponseHead(rc.head[:0], resp.StatusCode(), flags)
	for k, v := range resp.Header.All() {
		if bytes.EqualFold(k, hContentLength) || bytes.EqualFold(k, hConnection) || bytes.EqualFold(k, hDate) {
			continue
		}
		head = ipc.AppendResponseHeader(head, 0, k, v)
	}
	rc.head = head
	body := resp.Body()
	err := w.out.SendWait(&ipc.Header{Type: ipc.TypeResponse, Seq: rc.seq, Arg: uint32(len(head))}, head, body)
	if err != nil {
		w.log.Debug().Err(err).Msg("response not sent: master gone")
	}
	w.release(rc)
}

func (w *Worker) respondError(rc *reqCtx, status int) {
	rc.ctx.Response.Reset()
	rc.ctx.Response.SetStatusCode(status)
	w.respond(rc)
}

func (w *Worker) release(rc *reqCtx) {
	rc.ctx.Request.Reset()
	rc.ctx.Response.Reset()
	rc.ctx.ResetUserValues()
	if cap(rc.head) > 64<<10 {
		rc.head = nil
	}
	reqPool.Put(rc)
}
