package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

// Baseline serves the built-in application's /hello and /echo from a single
// plain fasthttp process with no process machinery: GET /hello (any path)
// answers 200 "hello" with X-Worker-Id: 0 and X-Worker-Pid, and WebSocket /echo (any path; on both
// addresses) sends every message back with the same opcode. It is the row
// every mode is compared with. It blocks until ctx is done, then closes the
// listeners and every WebSocket connection, and returns once all its
// goroutines have ended.
//
// Threading: call it from any goroutine; it blocks.
func Baseline(ctx context.Context, httpAddr, wsAddr string) error {
	return serveBaseline(ctx, httpAddr, wsAddr, nil)
}

// baselineLine is what the bench-baseline command prints once it listens:
// the addresses it was bound to (it is started on port 0).
const baselineLine = "bench-baseline: listening http=%s ws=%s\n"

// announceBaseline prints baselineLine to stdout.
func announceBaseline(httpAddr, wsAddr string) { fmt.Printf(baselineLine, httpAddr, wsAddr) }

// serveBaseline is Baseline, calling bound (if not nil) with the addresses
// the listeners were bound to once they listen.
func serveBaseline(ctx context.Context, httpAddr, wsAddr string, bound func(httpAddr, wsAddr string)) error {
	_, _ = raiseNoFile() // best effort: the idle scenario opens 10,000 connections
	pid := []byte(strconv.Itoa(os.Getpid()))
	hello := []byte("hello")
	b := &baseline{conns: map[*websocket.Conn]struct{}{}}
	up := websocket.FastHTTPUpgrader{
		CheckOrigin: func(*fasthttp.RequestCtx) bool { return true },
	}
	handler := func(ctx *fasthttp.RequestCtx) {
		// Any path: bench may be pointed at a program's own (--http-path,
		// --ws-path); the baseline serves each the same way.
		if websocket.FastHTTPIsWebSocketUpgrade(ctx) {
			if err := up.Upgrade(ctx, b.echo); err != nil {
				return // the upgrader has answered
			}
			return
		}
		ctx.Response.Header.Set("X-Worker-Id", "0")
		ctx.Response.Header.SetBytesV("X-Worker-Pid", pid)
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBody(hello)
	}
	var servers []*fasthttp.Server
	var lns []net.Listener
	for _, addr := range []string{httpAddr, wsAddr} {
		if addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("bench: baseline listen %s: %w", addr, err)
		}
		lns = append(lns, ln)
		servers = append(servers, &fasthttp.Server{
			Handler:         handler,
			Name:            "forkd-baseline",
			CloseOnShutdown: true,
		})
	}
	if len(servers) == 0 {
		return errors.New("bench: baseline needs an address")
	}
	if bound != nil {
		got := []string{"", ""}
		for i, ln := range lns {
			got[i] = ln.Addr().String()
		}
		bound(got[0], got[1])
	}
	errc := make(chan error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- s.Serve(lns[i])
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("bench: baseline: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.ShutdownWithContext(sctx)
	}
	b.closeAll()
	wg.Wait()
	b.wg.Wait()
	return err
}

// baseline tracks the hijacked WebSocket connections, which the HTTP
// server's shutdown does not cover.
type baseline struct {
	mu     sync.Mutex
	conns  map[*websocket.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func (b *baseline) echo(c *websocket.Conn) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		c.Close()
		return
	}
	b.conns[c] = struct{}{}
	b.wg.Add(1)
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		c.Close()
		b.wg.Done()
	}()
	for {
		op, r, err := c.NextReader()
		if err != nil {
			return
		}
		w, err := c.NextWriter(op)
		if err != nil {
			return
		}
		if _, err := io.Copy(w, r); err != nil {
			return
		}
		if err := w.Close(); err != nil {
			return
		}
	}
}

func (b *baseline) closeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for c := range b.conns {
		_ = c.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(100*time.Millisecond))
		c.Close()
	}
}
