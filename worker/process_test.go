package worker

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd/ipc"
)

// httpApp answers PROCESS-mode requests: /block waits for release, /peek
// answers with the request headers it looks up in lower case, anything
// else "ok". It sets headers the master writes itself, in odd cases, which
// must not reach the Response frame.
type httpApp struct {
	echoApp
	release chan struct{}
}

func (a *httpApp) HTTP(_ *Worker, _ int, ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/block":
		<-a.release
	case "/peek":
		fmt.Fprintf(ctx, "custom=%s type=%s host=%s ua=%s body=%s",
			ctx.Request.Header.Peek("x-custom"), ctx.Request.Header.Peek("content-type"),
			ctx.Host(), ctx.UserAgent(), ctx.PostBody())
		ctx.Response.Header.Set("x-answer", "42")
		ctx.Response.Header.Set("date", "yesterday")
		ctx.Response.Header.Set("CONNECTION", "keep-alive")
		return
	}
	ctx.SetBodyString("ok")
}

// request queues a Request frame as the master writes it: the client's
// address, the head its fasthttp wrote (names normalized), the body.
func (fm *fakeMaster) request(seq uint32, head, body string) {
	p := binary.LittleEndian.AppendUint32(nil, ipc.AddrSize)
	p = ipc.AppendAddr(p, netip.MustParseAddrPort("127.0.0.1:4321"))
	hlen := len(head)
	p = append(p, head...)
	fm.out.Send(&ipc.Header{Type: ipc.TypeRequest, Seq: seq, Arg: uint32(hlen)}, p, []byte(body))
}

// response decodes a Response frame: status, headers "Name: value" in order, body.
func response(t testing.TB, f ipc.Frame) (int, []string, string) {
	t.Helper()
	var hs []string
	status, _, err := ipc.ParseResponseHead(f.Payload[:f.Arg], func(k, v []byte) {
		hs = append(hs, string(k)+": "+string(v))
	})
	if err != nil {
		t.Fatalf("response head: %v", err)
	}
	return status, hs, string(f.Payload[f.Arg:])
}

// TestProcessRequestHead: the worker parses the head as the master's
// fasthttp wrote it, and the handler's lookups in any case find the headers
// (they are normalized, as in BASE mode); the headers the master writes
// itself (Content-Length, Connection, Date, in any case) are not passed on.
func TestProcessRequestHead(t *testing.T) {
	fm := startWorker(t, &httpApp{release: make(chan struct{})})
	head := "POST /peek HTTP/1.1\r\nHost: example.test\r\nContent-Length: 4\r\nContent-Type: text/x-test\r\n" +
		"User-Agent: ua/1\r\nX-Custom: yes\r\n\r\n"
	for i := uint32(1); i <= 3; i++ { // pooled contexts: the second and third reuse the first's
		fm.request(i, head, "body")
		f := fm.expect(t, ipc.TypeResponse)
		if f.Seq != i {
			t.Fatalf("response seq: got %d, want %d", f.Seq, i)
		}
		status, hs, body := response(t, f)
		if status != 200 {
			t.Errorf("status: got %d, want 200", status)
		}
		if want := "custom=yes type=text/x-test host=example.test ua=ua/1 body=body"; body != want {
			t.Errorf("body: got %q, want %q", body, want)
		}
		got := strings.Join(hs, "|")
		if !strings.Contains(got, "X-Answer: 42") {
			t.Errorf("headers: got %q, want X-Answer: 42 among them", got)
		}
		for _, name := range []string{"content-length", "connection", "date"} {
			if strings.Contains(strings.ToLower(got), name+":") {
				t.Errorf("headers: got %q, want no %s (the master writes it)", got, name)
			}
		}
	}
}

// TestProcessBlockingHandler: requests queued behind handlers that block are
// served while those wait (a burst arrives in one pipe read, and the
// worker's goroutines take it from a queue: a spare takes over whenever
// the one running a request blocks).
func TestProcessBlockingHandler(t *testing.T) {
	app := &httpApp{release: make(chan struct{})}
	fm := startWorker(t, app)
	for round := 0; round < 10; round++ {
		const blocked, quick = 4, 20
		seq := uint32(round * 100)
		// A worker that ran the burst on one goroutine would never answer:
		// fail rather than hang.
		fm.in.SetReadDeadline(time.Now().Add(10 * time.Second))
		// One burst: the blocking requests first, then the quick ones.
		for i := 0; i < blocked; i++ {
			fm.request(seq+uint32(i), "GET /block HTTP/1.1\r\nHost: x\r\n\r\n", "")
		}
		for i := 0; i < quick; i++ {
			fm.request(seq+blocked+uint32(i), "GET /quick HTTP/1.1\r\nHost: x\r\n\r\n", "")
		}
		got := map[uint32]bool{}
		for len(got) < quick {
			f := fm.expect(t, ipc.TypeResponse)
			if f.Seq < seq+blocked {
				t.Fatalf("round %d: blocked request %d answered before its release", round, f.Seq)
			}
			got[f.Seq] = true
		}
		for i := 0; i < blocked; i++ {
			app.release <- struct{}{}
		}
		for i := 0; i < blocked; i++ {
			if f := fm.expect(t, ipc.TypeResponse); f.Seq >= seq+blocked {
				t.Fatalf("round %d: response %d after the quick ones were all answered", round, f.Seq)
			}
		}
	}
	fm.in.SetReadDeadline(time.Time{})
}

// BenchmarkProcessHTTP: the worker's side of PROCESS-mode HTTP, 32 requests
// in flight per round (as bench's http load gives a worker): Request frames
// in, Response frames out. ns/op and allocs/op are per request, the fake
// master included.
func BenchmarkProcessHTTP(b *testing.B) {
	fm := startWorker(b, &httpApp{release: make(chan struct{})})
	const inflight = 32
	head := "GET /hello HTTP/1.1\r\nHost: 127.0.0.1:9501\r\nUser-Agent: bench\r\n\r\n"
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n += inflight {
		for i := 0; i < inflight; i++ {
			fm.request(uint32(n+i), head, "")
		}
		for i := 0; i < inflight; i++ {
			fm.expect(b, ipc.TypeResponse)
		}
	}
}
