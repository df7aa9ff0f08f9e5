package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

// The load generator's helper processes. RLIMIT_NOFILE is per process: where
// its hard limit cannot be raised (a container whose root lacks
// CAP_SYS_RESOURCE), one process cannot hold 100,000 connections, but
// several can. bench then re-executes its own binary as `bench-client`
// (hidden) several times, each child holding its share of the connections,
// and reads what each did from its stdout (fleet.go). A child:
//
//   - prints {"t":"up"} and waits for "dial" on stdin (so that bench can
//     open its measured window first);
//   - dials its share, --par at a time, from its own range of loopback
//     source addresses, printing its progress every 250 ms;
//   - prints one "held" line: connections held, errors, the first error,
//     connect latencies (histogram buckets), members per worker (--chat);
//   - with --chat, reads every member and reports each broadcast it sees
//     ("BCAST:seq;") as {"t":"bc","seq":S,"got":N,"last":UnixNano}: at
//     once when all its members have it, else every 100 ms while it grows;
//   - when stdin ends (bench closed it, or bench died), closes every
//     connection and exits.

const clientCommandName = "bench-client"

// clientMsg is one line a child prints.
type clientMsg struct {
	T       string         `json:"t"` // up, progress, held, bc, closed
	Held    int            `json:"held,omitempty"`
	Errs    int64          `json:"errs,omitempty"`
	Retries int64          `json:"retries,omitempty"`
	First   string         `json:"first,omitempty"`
	Workers map[string]int `json:"workers,omitempty"`
	Hist    map[int]uint64 `json:"hist,omitempty"` // connect latency: bucket -> count
	Max     uint64         `json:"max,omitempty"`
	Seq     uint64         `json:"seq,omitempty"`
	Got     int            `json:"got,omitempty"`
	Last    int64          `json:"last,omitempty"` // wall clock (UnixNano) of the latest receipt
	Closed  int64          `json:"closed,omitempty"`
}

// clientArgs is what one child does.
type clientArgs struct {
	addr, path string
	conns, par int
	source     int  // index of its first source address (sourceIP)
	spread     bool // spread over source addresses (else the system's choice)
	chat       bool // /chat members: read the welcome, then every broadcast
}

func clientCommand() *cli.Command {
	return &cli.Command{Name: clientCommandName, Hidden: true,
		Flags: []cli.Flag{&cli.StringFlag{Name: "addr"}, &cli.StringFlag{Name: "path"}, &cli.IntFlag{Name: "conns"},
			&cli.IntFlag{Name: "par", Value: 64}, &cli.IntFlag{Name: "source"}, &cli.BoolFlag{Name: "spread"}, &cli.BoolFlag{Name: "chat"}},
		Action: func(c *cli.Context) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			a := clientArgs{addr: c.String("addr"), path: c.String("path"), conns: c.Int("conns"), par: c.Int("par"),
				source: c.Int("source"), spread: c.Bool("spread"), chat: c.Bool("chat")}
			return runClient(ctx, a, os.Stdin, os.Stdout)
		}}
}

// clientOut writes a child's lines, one at a time.
type clientOut struct {
	mu  sync.Mutex
	enc *json.Encoder
	err error
}

func (o *clientOut) send(m clientMsg) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = o.enc.Encode(m)
	}
}

// runClient is a child's whole life (see the top of this file).
func runClient(ctx context.Context, a clientArgs, in io.Reader, out io.Writer) error {
	if a.addr == "" || a.path == "" || a.conns <= 0 {
		return errors.New("bench-client: --addr, --path and --conns are required")
	}
	if _, err := raiseNoFileTo(uint64(a.conns) + 64); err != nil {
		return err
	}
	spreadSources.Store(a.spread)
	sourceNext.Store(uint32(a.source))
	o := &clientOut{enc: json.NewEncoder(out)}
	o.send(clientMsg{T: "up"})
	lines := make(chan string)
	go func() { // stdin: "dial", then EOF (or ctx) ends the child
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	select {
	case l, ok := <-lines:
		if !ok {
			return nil
		}
		if l != "dial" {
			return fmt.Errorf("bench-client: unexpected %q on stdin", l)
		}
	case <-ctx.Done():
		return nil
	}
	cl := &client{a: a, o: o, workers: map[string]int{}, rc: map[uint64]*receipt{}}
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // stdin's end stops the dialing too
		for range lines {
		}
		cancel()
	}()
	cl.dialAll(dctx)
	defer cl.closeAll()
	if cl.a.chat {
		go cl.flushReceipts(dctx)
	}
	<-dctx.Done()
	return nil
}

// client is one child's connections.
type client struct {
	a  clientArgs
	o  *clientOut
	mu sync.Mutex
	cs []net.Conn
	ws []*wsConn

	workers map[string]int
	hist    histogram
	held    atomic.Int64
	errs    atomic.Int64
	retries atomic.Int64
	closed  atomic.Int64
	readers sync.WaitGroup

	rmu  sync.Mutex
	rc   map[uint64]*receipt // broadcast seq -> receipts
	rtop uint64
}

type receipt struct {
	got   int
	last  int64
	dirty bool
}

func (cl *client) dialAll(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-tick.C:
				cl.o.send(clientMsg{T: "progress", Held: int(cl.held.Load()), Errs: cl.errs.Load()})
			case <-stop:
				return
			}
		}
	}()
	_, err := dialAll(ctx, cl.a.conns, cl.a.par, func(ctx context.Context, i int) (struct{}, error) {
		if err := cl.dialOne(ctx, i); err != nil {
			cl.errs.Add(1)
			return struct{}{}, err
		}
		return struct{}{}, nil
	})
	tick.Stop()
	close(stop)
	m := clientMsg{T: "held", Held: int(cl.held.Load()), Errs: cl.errs.Load(), Retries: cl.retries.Load(), Max: cl.hist.max}
	if err != nil {
		if first := errors.Unwrap(err); first != nil {
			err = first // dialAll's "N of M failed, first: ERR": the parent counts
		}
		m.First = err.Error()
	}
	cl.mu.Lock()
	m.Workers = cl.workers
	m.Hist = map[int]uint64{}
	for i, c := range cl.hist.counts {
		if c > 0 {
			m.Hist[i] = c
		}
	}
	cl.o.send(m)
	cl.mu.Unlock()
}

// dialOne opens connection i: a WebSocket on the path, and for a chat
// member (with name bench-<source>-<i>) its welcome read.
func (cl *client) dialOne(ctx context.Context, i int) error {
	t0 := time.Now()
	c, err := dialTCPRetry(ctx, cl.a.addr, &cl.retries)
	if err != nil {
		return err
	}
	path := cl.a.path
	if cl.a.chat {
		path += "&name=bench-" + strconv.Itoa(cl.a.source) + "-" + strconv.Itoa(i)
	}
	ws, err := wsHandshake(c, bufio.NewReaderSize(c, 1024), cl.a.addr, path)
	if err != nil {
		c.Close()
		return err
	}
	worker := -1
	if cl.a.chat {
		if worker, err = readWelcome(ws); err != nil {
			c.Close()
			return err
		}
	} else if ws.br.Buffered() > 0 {
		c.Close()
		return errors.New("unexpected data on an idle connection")
	}
	lat := time.Since(t0)
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if ctx.Err() != nil {
		c.Close()
		return ctx.Err()
	}
	cl.hist.record(lat)
	cl.held.Add(1)
	if !cl.a.chat {
		cl.cs = append(cl.cs, c) // the reader and its buffer go
		return nil
	}
	cl.ws = append(cl.ws, ws)
	cl.workers[strconv.Itoa(worker)]++
	cl.readers.Add(1)
	go cl.read(ws)
	return nil
}

// readWelcome reads a chat member's messages until its welcome, returning
// the worker it names.
func readWelcome(ws *wsConn) (int, error) {
	_ = ws.c.SetReadDeadline(time.Now().Add(welcomeTimeout))
	for {
		if _, err := ws.readMessage(); err != nil {
			return 0, fmt.Errorf("waiting for the welcome message: %w", err)
		}
		var w welcome
		if json.Unmarshal(ws.msg, &w) == nil && w.Type == "welcome" {
			_ = ws.c.SetReadDeadline(time.Time{})
			return w.Worker, nil
		}
	}
}

// read counts the broadcasts a member receives, until its connection ends.
func (cl *client) read(ws *wsConn) {
	defer cl.readers.Done()
	for {
		if _, err := ws.readMessage(); err != nil {
			cl.closed.Add(1)
			return
		}
		f, ok := markerFields(ws.msg, bcastMarker)
		if !ok {
			continue
		}
		now := time.Now().UnixNano()
		cl.rmu.Lock()
		r := cl.rc[f[0]]
		if r == nil {
			r = &receipt{}
			cl.rc[f[0]] = r
			if f[0] > cl.rtop {
				cl.rtop = f[0]
				for s := range cl.rc { // keep the last few only
					if s+8 < cl.rtop {
						delete(cl.rc, s)
					}
				}
			}
		}
		r.got++
		r.last = max(r.last, now)
		complete := r.got == int(cl.held.Load())
		r.dirty = !complete
		m := clientMsg{T: "bc", Seq: f[0], Got: r.got, Last: r.last}
		cl.rmu.Unlock()
		if complete {
			cl.o.send(m)
		}
	}
}

// flushReceipts reports broadcasts still arriving, every 100 ms, and
// members whose connection ended.
func (cl *client) flushReceipts(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var closed int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var ms []clientMsg
		cl.rmu.Lock()
		for s, r := range cl.rc {
			if r.dirty {
				r.dirty = false
				ms = append(ms, clientMsg{T: "bc", Seq: s, Got: r.got, Last: r.last})
			}
		}
		cl.rmu.Unlock()
		for _, m := range ms {
			cl.o.send(m)
		}
		if c := cl.closed.Load(); c != closed {
			closed = c
			cl.o.send(clientMsg{T: "closed", Closed: c})
		}
	}
}

func (cl *client) closeAll() {
	cl.mu.Lock()
	for _, c := range cl.cs {
		c.Close()
	}
	for _, w := range cl.ws {
		w.Close()
	}
	cl.mu.Unlock()
	cl.readers.Wait()
}

// chatPath is a quiet member's path into room (the name is added per
// connection).
func chatPath(room string) string { return "/chat?room=" + url.QueryEscape(room) + "&quiet=1" }
