package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd/ipc"
)

// echoApp sends every message back (Conn.Send) and records what Flush
// said after each, when asked to.
type echoApp struct {
	flush   bool
	mu      sync.Mutex
	flushed []ipc.Outcome
}

func (a *echoApp) WorkerStart(*Worker) error                       { return nil }
func (a *echoApp) WorkerStop(*Worker, bool)                        {}
func (a *echoApp) HTTP(*Worker, int, *fasthttp.RequestCtx)         {}
func (a *echoApp) Open(*Conn)                                      {}
func (a *echoApp) Resume(*Conn)                                    {}
func (a *echoApp) Close(c *Conn, _ int, _ string)                  { c.Send(1, []byte("bye")) }
func (a *echoApp) BufferFull(*Conn)                                {}
func (a *echoApp) BufferDrain(*Conn)                               {}
func (a *echoApp) PipeMessage(*Worker, int, []byte)                {}
func (a *echoApp) Task(*Worker, int, []byte) ([]byte, error)       { return nil, nil }
func (a *echoApp) RunProcess(ctx context.Context, w *Worker) error { <-ctx.Done(); return nil }
func (a *echoApp) Message(c *Conn, op int, data []byte) {
	c.Send(op, data)
	if a.flush {
		out := c.Flush()
		a.mu.Lock()
		a.flushed = append(a.flushed, out)
		a.mu.Unlock()
	}
}

// fakeMaster runs a PROCESS-mode worker in this process over two real
// pipes and plays the master's side of the ipc stream.
type fakeMaster struct {
	out    *ipc.Writer
	rd     *ipc.Reader
	done   chan error
	in     *os.File // the master's read end
	cancel context.CancelFunc
}

func startWorker(tb testing.TB, app App) *fakeMaster {
	tb.Helper()
	toW, fromM, err := os.Pipe() // worker reads toW
	if err != nil {
		tb.Fatal(err)
	}
	fromW, toM, err := os.Pipe() // master reads fromW
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fm := &fakeMaster{out: ipc.NewWriter(fromM, 16<<20), rd: ipc.NewReader(fromW, 0), done: make(chan error, 1), in: fromW, cancel: cancel}
	go fm.out.Run()
	go func() {
		fm.done <- Run(ctx, Options{Config: Config{Mode: ModeProcess, CallTimeout: 5 * time.Second}, IPCIn: toW, IPCOut: toM, App: app, Log: zerolog.Nop()})
	}()
	fm.expect(tb, ipc.TypeHello)
	fm.out.Send(&ipc.Header{Type: ipc.TypeWelcome}, nil, nil)
	fm.out.Send(&ipc.Header{Type: ipc.TypeSecrets}, []byte("{}"), nil)
	fm.expect(tb, ipc.TypeReady)
	tb.Cleanup(func() {
		fm.out.Send(&ipc.Header{Type: ipc.TypeDrain, Code: DrainNow}, nil, nil)
		fm.out.Close()
		<-fm.out.Done()
		fromM.Close()
		cancel()
		select {
		case err := <-fm.done:
			if err != nil && !errors.Is(err, context.Canceled) {
				tb.Logf("worker ended: %v", err)
			}
		case <-time.After(10 * time.Second):
			tb.Error("worker did not stop")
		}
		fromW.Close()
	})
	return fm
}

// expect reads frames until one of type t (skipping Credit and SendAck).
func (fm *fakeMaster) expect(tb testing.TB, t ipc.Type) ipc.Frame {
	tb.Helper()
	for {
		f, err := fm.rd.Next()
		if err != nil {
			tb.Fatalf("waiting for frame %d: %v", t, err)
		}
		if f.Type == t {
			return f
		}
	}
}

// isSend: a Send frame, or a Send carrying the Credit after it.
func isSend(f ipc.Frame) bool { return f.Type == ipc.TypeSend || f.Type == ipc.TypeSendCredit }

// expectSend reads up to the next Send or SendCredit frame.
func (fm *fakeMaster) expectSend(tb testing.TB) ipc.Frame {
	tb.Helper()
	for {
		f, err := fm.rd.Next()
		if err != nil {
			tb.Fatalf("waiting for a Send: %v", err)
		}
		if isSend(f) {
			return f
		}
	}
}

func (fm *fakeMaster) open(id uint64) {
	hs := ipc.AppendHandshake(nil, &ipc.Handshake{Remote: []byte("127.0.0.1:1"), URI: []byte("/echo")})
	fm.out.Send(&ipc.Header{Type: ipc.TypeOpen, Conn: id}, hs, nil)
}

// BenchmarkProcessEcho: the worker's side of a PROCESS-mode WebSocket echo,
// 32 connections with one message each in flight per round (as bench's
// echo load gives a worker): Message frames in, Send and Credit frames
// out. ns/op and allocs/op are per message, the fake master included.
func BenchmarkProcessEcho(b *testing.B) {
	fm := startWorker(b, &echoApp{})
	const conns = 32
	for i := uint64(1); i <= conns; i++ {
		fm.open(i)
	}
	msg := []byte("0123456789012345678901234567890123456789012345678901234567890123")
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n += conns {
		for i := uint64(1); i <= conns; i++ {
			fm.out.Send(&ipc.Header{Type: ipc.TypeMessage, Conn: i, Flags: 2}, msg, nil)
		}
		for got := 0; got < conns; {
			f, err := fm.rd.Next()
			if err != nil {
				b.Fatal(err)
			}
			if isSend(f) {
				got++
			}
		}
	}
}

// TestSendFlush: the master's SendFailed for a Send is what the next Flush
// returns, once; a Flush with no failure since the last is OK. Sends go
// out in order, before the SendFlush that follows them.
func TestSendFlush(t *testing.T) {
	app := &echoApp{flush: true}
	fm := startWorker(t, app)
	fm.open(7)
	round := func(fail ipc.Outcome) {
		t.Helper()
		fm.out.Send(&ipc.Header{Type: ipc.TypeMessage, Conn: 7, Flags: 1}, []byte("hi"), nil)
		f := fm.expectSend(t)
		if f.Conn != 7 || string(f.Payload) != "hi" || f.Seq != 0 {
			t.Fatalf("Send frame: conn %d seq %d payload %q, want conn 7, seq 0 (no answer wanted), %q", f.Conn, f.Seq, f.Payload, "hi")
		}
		if fail != ipc.OK {
			fm.out.Send(&ipc.Header{Type: ipc.TypeSendFailed, Conn: 7, Code: uint16(fail)}, nil, nil)
		} else {
			fm.out.Send(&ipc.Header{Type: ipc.TypeSendAck, Arg: 1}, nil, nil)
		}
		f = fm.expect(t, ipc.TypeSendFlush)
		if f.Seq == 0 {
			t.Fatal("SendFlush without a seq: its Result could not be matched")
		}
		fm.out.Send(&ipc.Header{Type: ipc.TypeResult, Seq: f.Seq, Code: uint16(ipc.OK)}, nil, nil)
	}
	round(ipc.BufferFull)
	round(ipc.OK)
	round(ipc.Closed)
	want := []ipc.Outcome{ipc.BufferFull, ipc.OK, ipc.Closed}
	testWait(t, func() bool { app.mu.Lock(); defer app.mu.Unlock(); return len(app.flushed) == len(want) })
	app.mu.Lock()
	defer app.mu.Unlock()
	for i, w := range want {
		if app.flushed[i] != w {
			t.Errorf("Flush %d: got outcome %d, want %d (all: %v)", i, app.flushed[i], w, app.flushed)
		}
	}
}

func testWait(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("timed out")
}

// TestSendInOnClose: what OnClose sends goes out, and before the worker's
// close reply (the Close frame answering a Closed with ClosedReply).
func TestSendInOnClose(t *testing.T) {
	fm := startWorker(t, &echoApp{})
	fm.open(9)
	fm.out.Send(&ipc.Header{Type: ipc.TypeMessage, Conn: 9, Flags: 1}, []byte("last"), nil)
	fm.out.Send(&ipc.Header{Type: ipc.TypeClosed, Conn: 9, Code: 1000, Flags: ipc.ClosedReply}, nil, nil)
	var got []string
	for len(got) == 0 || got[len(got)-1] != "close" {
		f, err := fm.rd.Next()
		if err != nil {
			t.Fatal(err)
		}
		switch f.Type {
		case ipc.TypeSend, ipc.TypeSendCredit:
			got = append(got, "send "+string(f.Payload))
		case ipc.TypeClose:
			got = append(got, "close")
		}
	}
	if want := []string{"send last", "send bye", "close"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("frames from the worker: %q, want %q", got, want)
	}
}

// TestSendCreditFold: the Credit for a handled message rides on the Send
// its callback made when that Send is the last frame queued (SendCredit),
// and stays a Credit frame of its own otherwise; either way every message
// is credited exactly once and every Send arrives, in order.
func TestSendCreditFold(t *testing.T) {
	for round := 0; round < 20; round++ {
		fm := startWorker(t, &echoApp{})
		fm.open(5)
		const n = 200
		for i := 0; i < n; i++ {
			fm.out.Send(&ipc.Header{Type: ipc.TypeMessage, Conn: 5, Flags: 1}, []byte(fmt.Sprint(i)), nil)
		}
		sends, credits, folded := 0, 0, 0
		for sends < n || credits < n {
			f, err := fm.rd.Next()
			if err != nil {
				t.Fatal(err)
			}
			switch f.Type {
			case ipc.TypeSend, ipc.TypeSendCredit:
				if string(f.Payload) != fmt.Sprint(sends) || f.Conn != 5 {
					t.Fatalf("Send %d: conn %d payload %q, want conn 5 payload %q", sends, f.Conn, f.Payload, fmt.Sprint(sends))
				}
				sends++
				if f.Type == ipc.TypeSendCredit {
					folded++
					credits += int(f.Arg)
				}
			case ipc.TypeCredit:
				credits += int(f.Arg)
			}
			if credits > sends {
				t.Fatalf("%d messages credited after %d Sends: a credit ahead of the message's answer", credits, sends)
			}
		}
		if credits != n || sends != n {
			t.Fatalf("%d Sends and %d credits for %d messages", sends, credits, n)
		}
		if folded == 0 {
			t.Errorf("round %d: no credit rode on a Send in %d echoes", round, n)
		}
	}
}
