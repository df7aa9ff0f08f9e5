package main

// Hardening (issue 7), continued: see hardening_test.go.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// --- 3. Slow and idle clients ---------------------------------------------------

// TestHardenSlowClients: a slowloris is cut by --read-timeout (408), an idle
// keep-alive connection by the shorter of --idle-timeout and --heartbeat-idle, a silent WebSocket by
// --heartbeat-idle while an active one lives on, and pings get pongs.
func TestHardenSlowClients(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1, "--read-timeout", "2s", "--idle-timeout", "1s", "--heartbeat-idle", "500ms")

		t.Run("slowloris", func(t *testing.T) {
			c, err := net.Dial("tcp", s.httpAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			stop := make(chan struct{})
			defer close(stop)
			go func() { // the header, a byte at a time, never finished
				req := []byte("GET /hello HTTP/1.1\r\nHost: forkd\r\nX-Slow: " + strings.Repeat("s", 100))
				for _, b := range req {
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
					select {
					case <-stop:
						return
					case <-time.After(200 * time.Millisecond):
					}
				}
			}()
			start := time.Now()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("slowloris: want a 408, got %v after %s", err, time.Since(start))
			}
			resp.Body.Close()
			took := time.Since(start)
			if resp.StatusCode != 408 || took < 1500*time.Millisecond || took > 5*time.Second {
				t.Fatalf("slowloris: got %d after %s, want 408 after about 2s", resp.StatusCode, took)
			}
			expectEOF(t, &bufConn{Conn: c, br: br}, 3*time.Second)
		})

		t.Run("idle_keepalive", func(t *testing.T) {
			// The clock starts before the request: the server's idle spell
			// starts after it, so the close comes at least 500 ms minus the
			// coarse clock's lag (a sweep tick, 100 ms) later. Started after
			// the answer was read, it also lost however long this client
			// took to read it (a loaded machine: more than the 50 ms the
			// bound of 350 ms left).
			start := time.Now()
			resp, body, c := rawHTTP(t, s.httpAddr, []byte("GET /hello HTTP/1.1\r\nHost: forkd\r\n\r\n"))
			if resp.StatusCode != 200 || body != "hello" || resp.Close {
				t.Fatalf("got %d %q close=%v, want a kept-alive 200 hello", resp.StatusCode, body, resp.Close)
			}
			expectEOF(t, c, 5*time.Second)
			// --heartbeat-idle (500ms) is the shorter: it closes idle
			// keep-alive connections too (TestHeartbeatIdleHTTP). A server
			// that does not keep the connection alive closes it at once.
			if took := time.Since(start); took < 300*time.Millisecond {
				t.Fatalf("idle connection closed %s after its request, want about 500ms", took)
			}
		})

		t.Run("heartbeat", func(t *testing.T) {
			// The clock starts before the silent connection's upgrade, its
			// last activity: started after both dials, it lost the active
			// one's dial (hundreds of ms on a loaded machine) and a correct
			// heartbeat could look early.
			start := time.Now()
			silent := s.dial(s.wsAddr, "/echo")
			active := s.dial(s.wsAddr, "/echo")
			// The active client sends every 100 ms whatever its echoes do
			// (they are read by another goroutine): waiting for each echo
			// before the next send made the gap between two sends the
			// round trip through the server plus 100 ms, and a round trip
			// of 400 ms (a loaded machine, -race, PROCESS mode's two hops)
			// let the heartbeat end an active connection.
			activeErr := make(chan error, 2)
			go func() {
				for i := 0; i < 20; i++ { // 2s, four heartbeat periods
					active.SetWriteDeadline(time.Now().Add(2 * time.Second))
					if err := active.WriteMessage(websocket.TextMessage, []byte("beat "+strconv.Itoa(i))); err != nil {
						activeErr <- err
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}()
			go func() {
				for i := 0; i < 20; i++ {
					msg := "beat " + strconv.Itoa(i)
					active.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, b, err := active.ReadMessage(); err != nil || string(b) != msg {
						activeErr <- fmt.Errorf("read %q: %q, %v", msg, b, err)
						return
					}
				}
				activeErr <- nil
			}()
			expectCloseCode(t, silent, websocket.CloseNormalClosure, 5*time.Second)
			if took := time.Since(start); took < 400*time.Millisecond {
				t.Fatalf("silent connection closed %s after its upgrade, want about 500ms", took)
			}
			if err := <-activeErr; err != nil {
				t.Fatalf("active connection: %v", err)
			}
			// Silent from now on, the active one goes the same way, at
			// least 500 ms after its last message: counting the lines
			// before that (one, for the silent connection) raced it when
			// the last echo came late. Each connection is logged once.
			expectCloseCode(t, active, websocket.CloseNormalClosure, 5*time.Second)
			s.expectLogged(t, 2, "heartbeat timeout")
		})

		t.Run("ping", func(t *testing.T) {
			c := s.dial(s.wsAddr, "/echo")
			pongs := make(chan string, 1)
			c.SetPongHandler(func(data string) error { pongs <- data; return nil })
			if err := c.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			echoOK(t, c, "after ping") // reading processes the pong
			select {
			case p := <-pongs:
				if p != "are you there" {
					t.Fatalf("pong: got %q, want %q", p, "are you there")
				}
			default:
				t.Fatal("no pong")
			}
		})
	})
}

// --- 4. Slow consumers ----------------------------------------------------------

// TestHardenSlowConsumer: a client that never reads while 100 MiB (more
// where the kernel's socket buffers are larger) is pushed to it: pushes
// start failing with "connection send buffer full" (503), server memory
// stays bounded, and once the client reads again pushes work.
func TestHardenSlowConsumer(t *testing.T) {
	const chunk = 64 << 10
	// What a correct server may accept for a client that never reads: the
	// kernel's socket buffers (the server's send buffer and the client's
	// receive buffer, each autotuned up to its sysctl's maximum: 4 MiB and
	// 32 MiB on this machine, other machines differ) plus the 1 MiB send
	// buffer and the pushes in flight; at least 64 MiB. Twice that, and at
	// least 100 MiB, is pushed: a server without the bound accepts it all.
	bound := max(64<<20, kernelSocketMax(t)+16<<20)
	pushes := int64(max(100<<20, 2*bound) / chunk)
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1)
		c := s.dial(s.wsAddr, "/chat?room=slow&name=sloth")
		welcome := readJSON(t, c, 5*time.Second)
		if welcome.Type != "welcome" || welcome.Conn == "" {
			t.Fatalf("got %+v, want a welcome", welcome)
		}
		rss0 := s.rssTotal()

		var next, ok, full atomic.Int64
		var mu sync.Mutex
		other := map[string]int{}
		body := strings.Repeat("x", chunk)
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= pushes {
					resp, err := httpClient.Post("http://"+s.httpAddr+"/push?conn="+welcome.Conn, "text/plain", strings.NewReader(body))
					if err != nil {
						mu.Lock()
						other[err.Error()]++
						mu.Unlock()
						continue
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					switch {
					case resp.StatusCode == 200:
						ok.Add(1)
					case resp.StatusCode == 503 && strings.Contains(string(b), "connection send buffer full"):
						full.Add(1)
					default:
						mu.Lock()
						other[fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))]++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		rss1 := s.rssTotal()
		growth := rss1 - rss0
		t.Logf("%s: %d pushes of 64 KiB: %d queued (%d MiB, most in kernel socket buffers), %d refused as buffer full; RSS %d -> %d MiB",
			mode, pushes, ok.Load(), ok.Load()*chunk>>20, full.Load(), rss0>>20, rss1>>20)
		if len(other) > 0 {
			t.Fatalf("unexpected push answers: %v", other)
		}
		if full.Load() == 0 {
			t.Fatalf("no push failed with 503 connection send buffer full (%d succeeded)", ok.Load())
		}
		// What was accepted is the kernel's socket buffers plus at most
		// the 1 MiB send buffer, not all that was pushed.
		if accepted := ok.Load() * chunk; accepted > int64(bound) {
			t.Fatalf("%d MiB accepted for a client that never reads (bound %d MiB)", accepted>>20, bound>>20)
		}
		if growth > 100<<20 {
			t.Fatalf("server RSS grew by %d MiB while pushing %d MiB to a client that never reads", growth>>20, pushes*chunk>>20)
		}
		// OnBufferFull runs in the worker serving the connection, in both
		// modes (in PROCESS mode the master tells it), once per filling,
		// not once per refused push. The kernel's socket buffers grow
		// (autotuning) while the client does not read, so the buffer may
		// empty and fill again: full and drained alternate.
		waitFor(t, 5*time.Second, "a send buffer full line", func() bool {
			return len(bufferEvents(s.log(), welcome.Conn)) > 0
		})
		checkAlternating(t, bufferEvents(s.log(), welcome.Conn))

		// The client reads again: the buffer drains and pushes work.
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
		waitFor(t, 30*time.Second, "a push to succeed again", func() bool {
			resp, _ := s.post("/push?conn="+welcome.Conn, "hello again")
			return resp.StatusCode == 200
		})
		waitFor(t, 5*time.Second, "the send buffer to drain", func() bool {
			ev := bufferEvents(s.log(), welcome.Conn)
			return len(ev) > 0 && ev[len(ev)-1] == "drained"
		})
		checkAlternating(t, bufferEvents(s.log(), welcome.Conn))
		c.Close()
		<-done
	})
}

// kernelSocketMax is the most a loopback TCP connection's socket buffers
// can hold one way: the sender's tcp_wmem maximum plus the receiver's
// tcp_rmem maximum (autotuning grows each up to it).
func kernelSocketMax(t *testing.T) int {
	t.Helper()
	total := 0
	for _, name := range []string{"tcp_rmem", "tcp_wmem"} {
		b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
		if err != nil {
			t.Fatalf("the socket buffer sizes: %v", err)
		}
		f := strings.Fields(string(b))
		if len(f) != 3 {
			t.Fatalf("%s: %q", name, b)
		}
		n, err := strconv.Atoi(f[2])
		if err != nil {
			t.Fatalf("%s: %q: %v", name, b, err)
		}
		total += n
	}
	return total
}

// bufferEvents lists, in order, the demo's "send buffer full" and "send
// buffer drained" log lines for conn, as "full" and "drained".
func bufferEvents(log, conn string) []string {
	var ev []string
	for _, line := range strings.Split(log, "\n") {
		switch {
		case !strings.Contains(line, conn):
		case strings.Contains(line, "send buffer full"):
			ev = append(ev, "full")
		case strings.Contains(line, "send buffer drained"):
			ev = append(ev, "drained")
		}
	}
	return ev
}

// checkAlternating fails unless ev is full, drained, full, ...: each
// filling is reported once, and a drain only follows a filling.
func checkAlternating(t *testing.T, ev []string) {
	t.Helper()
	for i, e := range ev {
		if want := [2]string{"full", "drained"}[i%2]; e != want {
			t.Fatalf("send buffer events %v: event %d is %q, want %q", ev, i, e, want)
		}
	}
	t.Logf("send buffer events: %v", ev)
}
