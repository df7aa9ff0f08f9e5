package master

import (
	"encoding/binary"
	"hash/maphash"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// procBackend is the master reactor's Handler in PROCESS mode: it forwards
// each complete request or message to a worker over ipc and relays the
// answer. It runs no user code.
type procBackend struct {
	m    *Master
	rr   atomic.Uint32
	seed maphash.Seed

	// serving holds, per worker slot, the process taking new work (nil:
	// none). Read without a lock on every request; changed under mu, whose
	// cond wakes the readers waiting for a slot's replacement.
	serving []atomic.Pointer[proc]
	mu      sync.Mutex
	cond    *sync.Cond

	// Per-connection credit (credit.go): each WebSocket's wsFlow by id.
	flows      sync.Map
	maxPending int // bytes of one connection's messages a worker may hold unhandled
	stopped    atomic.Bool

	// clock is a coarse unix-nanos clock, advanced by sweepRequests at
	// each of its ticks: a request's start is read from it, not from
	// time.Now (which reads the wall and the monotonic clock, about 1% of
	// the master's CPU per request). See sweepRequests for why no request
	// is answered 504 early.
	clock atomic.Int64
}

func newProcBackend(m *Master) *procBackend {
	b := &procBackend{m: m, seed: maphash.MakeSeed(), serving: make([]atomic.Pointer[proc], m.opts.Workers)}
	b.maxPending = m.opts.MaxSendBuffer
	if b.maxPending <= 0 {
		b.maxPending = 1 << 20
	}
	b.cond = sync.NewCond(&b.mu)
	b.clock.Store(time.Now().UnixNano())
	return b
}

// httpCall is one request waiting for its worker's response.
type httpCall struct {
	done     chan struct{}
	failed   bool   // the worker died: 502
	timedOut bool   // not answered within RequestTimeout: 504
	start    int64  // when it was handed to the worker: procBackend.clock, at most a sweep tick behind
	resp     []byte // response payload: header section + body
	arg      uint32 // header section length
	req      []byte // scratch for the request frame
}

var callPool = sync.Pool{New: func() any { return &httpCall{done: make(chan struct{}, 1)} }}

// attach makes p the process serving its slot: the slot's WebSockets are
// handed to it (Resume, with each one's handshake) before any new message.
func (b *procBackend) attach(p *proc) {
	id := p.slot.id
	var conns []*reactor.Conn
	b.m.reactor.Each(func(c *reactor.Conn) {
		if c.IsWebSocket() && int(c.Slot.Load()) == id {
			conns = append(conns, c)
		}
	})
	// Outside Each (which holds the reactor's lock): a turn may take a
	// moment, while the connection's reader finishes queueing a message.
	for _, c := range conns {
		f := b.flowOf(c)
		f.take()
		b.takeover(c, f, p)
		f.release()
	}
	b.mu.Lock()
	b.serving[id].Store(p)
	b.cond.Broadcast()
	b.mu.Unlock()
}

// detach stops routing to p (drained or dead). Task workers are never
// routed to (their slot ids lie past the serving table).
func (b *procBackend) detach(p *proc) {
	if !p.slot.worker() {
		return
	}
	b.mu.Lock()
	b.serving[p.slot.id].CompareAndSwap(p, nil)
	b.mu.Unlock()
}

// fail answers every request still waiting on p: 502 at once, no hang.
func (b *procBackend) fail(p *proc) {
	p.mu.Lock()
	calls := p.calls
	p.calls = make(map[uint32]*httpCall)
	p.mu.Unlock()
	if len(calls) > 0 {
		b.m.log.Warn().Int("worker", p.slot.id).Int("worker_pid", p.pid).Int("requests", len(calls)).Msg("worker gone with requests unanswered: 502")
	}
	for _, c := range calls {
		c.failed = true
		c.done <- struct{}{}
	}
}

// pick chooses the worker for an HTTP request by the dispatch mode.
func (b *procBackend) pick(ctx *fasthttp.RequestCtx) *proc {
	n := len(b.serving)
	var start int
	switch b.m.dispatch {
	case DispatchRoundRobin:
		start = int(b.rr.Add(1) % uint32(n))
	case DispatchIP:
		ip := ctx.RemoteIP()
		start = int(maphash.Bytes(b.seed, ip) % uint64(n))
	case DispatchIdle:
		return b.idlest()
	default: // fd: sticky per connection
		start = int(ctx.ConnID() % uint64(n))
	}
	for i := 0; i < n; i++ {
		if p := b.serving[(start+i)%n].Load(); p != nil {
			return p
		}
	}
	return nil
}

// pickEnter picks a worker for a request and enters its gate (see
// proc.enter); the caller leaves once the request is queued. A worker
// being drained is detached first, so the next pick finds another.
func (b *procBackend) pickEnter(ctx *fasthttp.RequestCtx) *proc {
	for {
		p := b.pick(ctx)
		if p == nil || p.enter() {
			return p
		}
	}
}

func (b *procBackend) idlest() *proc {
	var best *proc
	for i := range b.serving {
		p := b.serving[i].Load()
		if p != nil && (best == nil || p.inflight.Load() < best.inflight.Load()) {
			best = p
		}
	}
	return best
}

// HTTP forwards a request and writes back the worker's response.
func (b *procBackend) HTTP(l *reactor.Listener, ctx *fasthttp.RequestCtx) {
	p := b.pickEnter(ctx)
	if p == nil {
		ctx.Error("Service Unavailable: no worker available", fasthttp.StatusServiceUnavailable)
		return
	}
	call := callPool.Get().(*httpCall)
	call.failed, call.timedOut = false, false
	call.start = b.clock.Load()
	req := call.req[:0]
	req = appendRemote(req, ctx)
	hlen := len(req)
	req = append(req, ctx.Request.Header.Header()...)
	hlen = len(req) - hlen
	call.req = req

	p.mu.Lock()
	seq := p.nextSeq()
	p.calls[seq] = call
	p.mu.Unlock()
	p.inflight.Add(1)
	err := p.out.Send(&ipc.Header{Type: ipc.TypeRequest, Seq: seq, Code: uint16(l.Index), Arg: uint32(hlen)}, req, ctx.Request.Body())
	p.leave()
	if err != nil {
		p.mu.Lock()
		_, mine := p.calls[seq]
		delete(p.calls, seq)
		p.mu.Unlock()
		p.inflight.Add(-1)
		if !mine { // failed concurrently: the failure signal is queued
			<-call.done
		}
		callPool.Put(call)
		ctx.Error("Service Unavailable: worker queue full", fasthttp.StatusServiceUnavailable)
		return
	}
	<-call.done
	p.inflight.Add(-1)
	if call.timedOut {
		callPool.Put(call)
		ctx.Error("Gateway Timeout: the worker did not answer within --request-timeout", fasthttp.StatusGatewayTimeout)
		return
	}
	if call.failed {
		callPool.Put(call)
		ctx.Error("Bad Gateway: worker exited while serving the request", fasthttp.StatusBadGateway)
		return
	}
	resp := &ctx.Response
	// The worker's fasthttp has normalized the names already (or the
	// handler chose not to): pass them on as they are, as BASE mode would.
	resp.Header.DisableNormalizing()
	status, flags, err := ipc.ParseResponseHead(call.resp[:call.arg], resp.Header.AddBytesKV)
	if err != nil {
		callPool.Put(call)
		b.m.log.Error().Err(err).Int("worker", p.slot.id).Msg("malformed response from worker")
		ctx.Error("Bad Gateway: malformed response from worker", fasthttp.StatusBadGateway)
		return
	}
	resp.SetStatusCode(status)
	resp.SetBody(call.resp[call.arg:])
	if flags&ipc.RespClose != 0 {
		ctx.SetConnectionClose()
	}
	if cap(call.resp) > 64<<10 {
		call.resp = nil
	}
	callPool.Put(call)
}

// response delivers a worker's Response frame to the waiting request.
func (b *procBackend) response(p *proc, f ipc.Frame) {
	p.mu.Lock()
	call := p.calls[f.Seq]
	delete(p.calls, f.Seq)
	p.mu.Unlock()
	if call == nil || int(f.Arg) > len(f.Payload) {
		return
	}
	call.resp = append(call.resp[:0], f.Payload...)
	call.arg = f.Arg
	call.done <- struct{}{}
}

// wakeAll releases readers waiting for a worker or for credit (stop).
func (b *procBackend) wakeAll() {
	b.stopped.Store(true)
	b.mu.Lock()
	b.cond.Broadcast()
	b.mu.Unlock()
	b.wakeFlows(nil)
}

// appendRemote appends the client's address as an ipc field: ipc.AppendAddr
// for a TCP client, empty otherwise.
func appendRemote(dst []byte, ctx *fasthttp.RequestCtx) []byte {
	a, ok := ctx.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return binary.LittleEndian.AppendUint32(dst, 0)
	}
	dst = binary.LittleEndian.AppendUint32(dst, ipc.AddrSize)
	return ipc.AppendAddr(dst, a.AddrPort())
}
