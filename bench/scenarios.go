package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Each scenario sets up, measures one window with drive (or by hand), tears
// down, and fills a Result. Setup failures are returned as errors; errors
// during the window are counted.

const echoSize = 64

// dialAll opens n connections with up to par dialers at once. It returns
// the first error and how many dials failed.
func dialAll[T any](ctx context.Context, n, par int, dial func(ctx context.Context, i int) (T, error)) ([]T, error) {
	out := make([]T, n)
	var (
		mu     sync.Mutex
		first  error
		failed int
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
		}
		failed++
	}
	sem := make(chan struct{}, max(par, 1))
	var wg sync.WaitGroup
	for i := range n {
		if ctx.Err() != nil {
			fail(ctx.Err())
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var err error
			if out[i], err = dial(ctx, i); err != nil {
				fail(err)
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return out, fmt.Errorf("%d of %d failed, first: %w", failed, n, first)
	}
	return out, nil
}

// benchHTTP: Conns keep-alive connections doing GET /hello back to back.
func (s *session) benchHTTP(ctx context.Context, t *target, m *meter, r *Result) error {
	if s.wrk != "" {
		return s.benchHTTPWrk(ctx, t, m, r)
	}
	req := httpGet(t.httpAddr, t.httpPath)
	conns, set, err := dialSet(ctx, s.o.Conns, 16, func(ctx context.Context, _ int) (*httpConn, error) {
		return dialHTTP(ctx, t.httpAddr)
	})
	if err != nil {
		return err
	}
	w, cs := drive(ctx, m, s.o.Duration, "req", len(conns), set, func(i int, ctr *lane, stop <-chan struct{}) {
		c := conns[i]
		for !stopped(stop) {
			t0 := time.Now()
			ok, end := s.roundTrip(ctx, t, set, ctr, stop, &c, req)
			if end {
				return
			}
			if !ok {
				continue
			}
			ctr.done(t0, time.Since(t0))
		}
	})
	r.fill(w, cs)
	return nil
}

// dialSet dials n connections (par at a time) and files them in a new
// closerSet; on failure it closes those it opened.
func dialSet[T interface {
	comparable
	io.Closer
}](ctx context.Context, n, par int, dial func(ctx context.Context, i int) (T, error)) ([]T, *closerSet, error) {
	conns, err := dialAll(ctx, n, par, dial)
	set := new(closerSet)
	var none T
	for _, c := range conns {
		if c != none {
			set.add(c)
		}
	}
	if err != nil {
		set.closeAll()
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	return conns, set, nil
}

// roundTrip sends req on *c and reads the response. A broken or closing
// connection is replaced (a broken one counts an error). ok: a 200 came
// back; end: the lane must stop (the window ended or no redial worked).
func (s *session) roundTrip(ctx context.Context, t *target, set *closerSet, ctr *lane, stop <-chan struct{}, c **httpConn, req []byte) (ok, end bool) {
	st, err := (*c).do(req, false)
	if stopped(stop) {
		return false, true
	}
	if err != nil || (*c).close {
		if err != nil {
			ctr.errs.Add(1)
		}
		set.remove(*c)
		(*c).Close()
		if *c = s.redialHTTP(ctx, t, set, ctr, stop); *c == nil {
			return false, true
		}
		if err != nil {
			return false, false
		}
	}
	if st != 200 {
		ctr.errs.Add(1)
		return false, false
	}
	return true, false
}

// redialHTTP replaces a broken connection, backing off while dials fail.
func (s *session) redialHTTP(ctx context.Context, t *target, set *closerSet, ctr *lane, stop <-chan struct{}) *httpConn {
	for !stopped(stop) && ctx.Err() == nil {
		c, err := dialHTTP(ctx, t.httpAddr)
		if err == nil {
			if !set.add(c) {
				return nil
			}
			return c
		}
		ctr.errs.Add(1)
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// benchEcho: Conns WebSocket connections to /echo, each sending a 64-byte
// binary message and waiting for it to come back, in a loop.
func (s *session) benchEcho(ctx context.Context, t *target, m *meter, r *Result) error {
	payload := bytes.Repeat([]byte{'e'}, echoSize)
	frame := appendFrame(nil, opBinary, payload)
	conns, set, err := dialSet(ctx, s.o.Conns, 16, func(ctx context.Context, _ int) (*wsConn, error) {
		return dialWS(ctx, t.wsAddr, t.wsPath)
	})
	if err != nil {
		return err
	}
	w, cs := drive(ctx, m, s.o.Duration, "msg", len(conns), set, func(i int, ctr *lane, stop <-chan struct{}) {
		c := conns[i]
		for !stopped(stop) {
			t0 := time.Now()
			_, err := c.c.Write(frame)
			var op byte
			if err == nil {
				op, err = c.readMessage()
			}
			if stopped(stop) {
				return
			}
			if err != nil {
				ctr.errs.Add(1)
				set.remove(c)
				c.Close()
				for c = nil; c == nil && !stopped(stop) && ctx.Err() == nil; {
					if c, err = dialWS(ctx, t.wsAddr, t.wsPath); err != nil {
						ctr.errs.Add(1)
						time.Sleep(10 * time.Millisecond)
					} else if !set.add(c) {
						return
					}
				}
				if c == nil {
					return
				}
				continue
			}
			if op != opBinary || !bytes.Equal(c.msg, payload) {
				ctr.errs.Add(1)
				continue
			}
			ctr.done(t0, time.Since(t0))
		}
	})
	r.fill(w, cs)
	return nil
}

// benchConnect: a connection storm. Conns goroutines each repeatedly dial
// /echo, complete the handshake, send and receive one message, and close
// (close frame, then the socket). One op is one such connection.
func (s *session) benchConnect(ctx context.Context, t *target, m *meter, r *Result) error {
	payload := bytes.Repeat([]byte{'c'}, echoSize)
	set := new(closerSet)
	w, cs := drive(ctx, m, s.o.Duration, "conn", s.o.Conns, set, func(i int, ctr *lane, stop <-chan struct{}) {
		br := bufio.NewReaderSize(nil, 4<<10)
		var frame []byte
		for !stopped(stop) {
			t0 := time.Now()
			err := func() error {
				c, err := dialTCP(ctx, t.wsAddr)
				if err != nil {
					return err
				}
				if !set.add(c) {
					return nil
				}
				defer set.remove(c)
				ws, err := wsHandshake(c, br, t.wsAddr, t.wsPath)
				if err != nil {
					c.Close()
					return err
				}
				ws.wbuf = frame
				err = ws.writeMessage(opBinary, payload)
				frame = ws.wbuf
				if err == nil {
					_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
					_, err = ws.readMessage()
				}
				if err == nil && !bytes.Equal(ws.msg, payload) {
					err = errors.New("echo mismatch")
				}
				if err != nil {
					c.Close()
					return err
				}
				return ws.closeGracefully(time.Second)
			}()
			if stopped(stop) {
				return
			}
			if err != nil {
				ctr.errs.Add(1)
				time.Sleep(time.Millisecond)
				continue
			}
			ctr.done(t0, time.Since(t0))
		}
	})
	r.fill(w, cs)
	return nil
}

// benchIdle opens 10,000 (Options.IdleConns) idle WebSocket connections to
// /echo and reports how much RSS the server's processes grew per connection.
// The window is the opening of the connections (ops = connections opened).
func (s *session) benchIdle(ctx context.Context, t *target, m *meter, r *Result) error {
	n := s.o.IdleConns
	if !s.overBudget(n) {
		if _, err := raiseNoFileTo(uint64(n) + 1024); err != nil {
			return err
		}
	}
	time.Sleep(s.o.idleSettle) // let the previous scenario's memory settle
	before := m.rssByProc()
	var retried int64
	var err error
	if s.overBudget(n) { // held by helper processes (fleet.go)
		fl, h, ferr := s.idleFleet(ctx, t, m, r, n)
		if fl != nil {
			defer func() {
				if err := fl.stop(); err != nil {
					s.logf("[%s] idle: %v", t.mode, err)
				}
			}()
		}
		if ferr != nil {
			return fmt.Errorf("connect: %w", ferr)
		}
		retried = h.retries
		if h.errs > 0 {
			err = fmt.Errorf("%d of %d failed, first: %s", h.errs, n, h.first)
		}
	} else {
		var closeAll func()
		closeAll, retried, err = s.idleLocal(ctx, t, m, r, n)
		defer closeAll()
	}
	if err != nil && r.Ops == 0 {
		return fmt.Errorf("connect: %w", err)
	}
	idle := &IdleStats{Conns: int(r.Ops), AddrRetries: retried}
	r.Errors += retried
	if err != nil {
		idle.Error = err.Error()
	}
	time.Sleep(s.o.idleSettle)
	after := m.rssByProc()
	if !t.inProcess && t.mode != modeBaseline {
		idle.StatusMs, idle.ConnectionsMs, idle.ConnectionsErr = t.timeQueries(ctx)
	}
	conns := t.connsByPid(ctx)
	if t.inProcess || t.mode == modeBaseline {
		for pid := range after {
			conns[pid] = int(r.Ops)
		}
	}
	m.mu.Lock()
	procs := m.procs
	m.mu.Unlock()
	var total int64
	for _, p := range procs {
		b, okb := before[p.pid]
		a, oka := after[p.pid]
		if !okb && !oka {
			continue
		}
		pr := ProcRSS{Pid: p.pid, Role: p.role, BeforeKiB: b, AfterKiB: a, DeltaKiB: int64(a) - int64(b), Conns: conns[p.pid]}
		if pr.Conns > 0 {
			pr.KiBPerConn = float64(pr.DeltaKiB) / float64(pr.Conns)
		}
		total += pr.DeltaKiB
		idle.Procs = append(idle.Procs, pr)
	}
	sort.Slice(idle.Procs, func(i, j int) bool { return idle.Procs[i].DeltaKiB > idle.Procs[j].DeltaKiB })
	if idle.Conns > 0 {
		idle.KiBPerConn = float64(total) / float64(idle.Conns)
	}
	r.Idle = idle
	return nil
}

// idleLocal opens the idle scenario's n connections from this process;
// closeAll closes them.
func (s *session) idleLocal(ctx context.Context, t *target, m *meter, r *Result, n int) (closeAll func(), retries int64, err error) {
	set := new(closerSet)
	ctrs := make([]*counter, s.o.Conns)
	for i := range ctrs {
		ctrs[i] = new(counter)
	}
	brs := make(chan *bufio.Reader, s.o.Conns)
	for range s.o.Conns {
		brs <- bufio.NewReaderSize(nil, 4<<10)
	}
	var retried atomic.Int64
	m.beginCount(n, "conn", sumOps(ctrs))
	slot := make(chan int, s.o.Conns)
	for i := range s.o.Conns {
		slot <- i
	}
	_, err = dialAll(ctx, n, s.o.Conns, func(ctx context.Context, _ int) (struct{}, error) {
		k := <-slot
		defer func() { slot <- k }()
		ctr := ctrs[k]
		br := <-brs
		defer func() { brs <- br }()
		t0 := time.Now()
		c, err := dialTCPRetry(ctx, t.wsAddr, &retried)
		if err != nil {
			ctr.errs.Add(1)
			return struct{}{}, err
		}
		if _, err := wsHandshake(c, br, t.wsAddr, t.wsPath); err != nil {
			c.Close()
			ctr.errs.Add(1)
			return struct{}{}, err
		}
		if br.Buffered() > 0 {
			c.Close()
			ctr.errs.Add(1)
			return struct{}{}, errors.New("unexpected data on an idle connection")
		}
		set.add(c)
		ctr.h.record(time.Since(t0))
		ctr.ops.Add(1)
		return struct{}{}, nil
	})
	w := m.end()
	r.fill(w, ctrs)
	return set.closeAll, retried.Load(), err
}
