package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd/master"
)

// Tests of issue 21, "nothing unbounded, nothing hangs" (docs/limits.md).

// floodBound is how far a process's resident memory may grow while one
// client floods it: the documented per-connection bounds (docs/limits.md:
// a worker holds at most --max-send-buffer of a connection's unhandled
// input plus one message; the master a copy of the same and the
// connection's output buffer) are a few MiB here, and the rest is slack
// for the garbage collector and the race detector's shadow memory (96 MiB
// was exceeded by 2 MiB once, on a loaded machine). The unbounded queue
// this replaces grew a worker by over a gigabyte in 10s.
const floodBound = 128 << 20

// TestBoundsFlood: a client sends 64 KiB messages to /echo (16 KiB text
// to /chat) as fast as it can for 10s and never reads. In both modes the
// master's and the worker's memory stay within the bound, and /hello on
// the same server (and worker) keeps answering.
func TestBoundsFlood(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		op, size   int
	}{
		{name: "echo", path: "/echo", op: websocket.BinaryMessage, size: 64 << 10},
		{name: "chat", path: "/chat?room=flood&name=f", op: websocket.TextMessage, size: 16 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) { floodOnce(t, tc.path, tc.op, tc.size) })
	}
}

func floodOnce(t *testing.T, path string, op, size int) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1, "--max-send-buffer", "256KiB")
		base := s.status()
		if len(base.Workers) != 1 {
			t.Fatalf("got %d workers, want 1", len(base.Workers))
		}
		// /hello's rate before the flood, for the log (rates are not
		// asserted: the machine is shared).
		calm := helloCount(t, s, 2*time.Second)
		ws := s.dial(s.wsAddr, path)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var sent atomic.Int64
		flooding := make(chan struct{})
		go func() {
			defer close(flooding)
			msg := []byte(strings.Repeat("f", size))
			for ctx.Err() == nil {
				// A write blocked this long means the server stopped reading
				// (back-pressure): the flood ends there, pressure held.
				ws.SetWriteDeadline(time.Now().Add(3 * time.Second))
				if err := ws.WriteMessage(op, msg); err != nil {
					var ne net.Error
					if !errors.As(err, &ne) || !ne.Timeout() {
						if ctx.Err() == nil {
							t.Errorf("flood write: %v", err)
						}
						return
					}
					// A timed-out write leaves the connection unusable
					// (a partial frame): the flood ends, pressure held.
					<-ctx.Done()
					return
				}
				sent.Add(int64(len(msg)))
			}
		}()
		var hello, slow atomic.Int64
		helloDone := make(chan struct{})
		go func() {
			defer close(helloDone)
			c := &http.Client{Timeout: 10 * time.Second}
			for ctx.Err() == nil {
				begin := time.Now()
				resp, err := c.Get("http://" + s.httpAddr + "/hello")
				if err != nil {
					t.Errorf("GET /hello during the flood: %v", err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "hello" {
					t.Errorf("GET /hello during the flood: got %d %q, want 200 hello", resp.StatusCode, b)
					return
				}
				if time.Since(begin) > 2*time.Second {
					slow.Add(1)
				}
				hello.Add(1)
			}
		}()
		var maxMaster, maxWorker int64
		for ctx.Err() == nil {
			st := s.status()
			maxMaster = max(maxMaster, st.MasterRSS-base.MasterRSS)
			for _, w := range st.Workers {
				maxWorker = max(maxWorker, w.RSS-base.Workers[0].RSS)
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
		<-flooding
		<-helloDone
		st := s.status()
		maxMaster = max(maxMaster, st.MasterRSS-base.MasterRSS)
		for _, w := range st.Workers {
			maxWorker = max(maxWorker, w.RSS-base.Workers[0].RSS)
		}
		t.Logf("%s: flooded %d MiB; RSS growth master %d MiB, worker %d MiB; /hello %.0f/s during the flood, %.0f/s before (%d over 2s)",
			mode, sent.Load()>>20, maxMaster>>20, maxWorker>>20, float64(hello.Load())/10, float64(calm)/2, slow.Load())
		if maxMaster > floodBound || maxWorker > floodBound {
			t.Errorf("RSS grew by master %d MiB, worker %d MiB; want each at most %d MiB", maxMaster>>20, maxWorker>>20, floodBound>>20)
		}
		if hello.Load() < 5 {
			t.Errorf("got %d /hello answers during the flood, want it to keep serving", hello.Load())
		}
		// The flooding connection is still served once it reads.
		ws.Close()
		c := s.dial(s.wsAddr, "/echo")
		echoOK(t, c, "after the flood")
	})
}

// helloCount counts the /hello answers one client gets in d.
func helloCount(t *testing.T, s *server, d time.Duration) int {
	t.Helper()
	n := 0
	c := &http.Client{Timeout: 10 * time.Second}
	for end := time.Now().Add(d); time.Now().Before(end); n++ {
		resp, err := c.Get("http://" + s.httpAddr + "/hello")
		if err != nil {
			t.Fatalf("GET /hello: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return n
}

// TestBoundsBroadcastSkipped: a room member that never reads fills its
// send buffer; from then on POST /broadcast reports it skipped, not
// reached, in the plain count, the headers and the JSON answer.
func TestBoundsBroadcastSkipped(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 2, "--max-send-buffer", "64KiB")
		s.dial(s.wsAddr, "/chat?room=r21&name=stuck") // never read
		reader := joinChat(t, s, s.wsAddr, "r21", "reader")
		body := strings.Repeat("x", 256<<10)
		// Broadcast until the non-reader's buffer is full, alternating the
		// JSON and the plain answer until each has reported it skipped. (Its
		// buffer may drain a little into a growing kernel buffer between
		// two posts: a skip is a moment, not a state.)
		var sawJSON, sawPlain bool
		for i := 0; i < 1000 && !(sawJSON && sawPlain); i++ {
			asJSON := i%2 == 0
			req, _ := http.NewRequest("POST", "http://"+s.httpAddr+"/broadcast?room=r21", strings.NewReader(body))
			if asJSON {
				req.Header.Set("Accept", "application/json")
			}
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatalf("POST /broadcast: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("POST /broadcast: got %d %q, want 200", resp.StatusCode, b)
			}
			hr, hs := resp.Header.Get("X-Broadcast-Reached"), resp.Header.Get("X-Broadcast-Skipped")
			reached, err1 := strconv.Atoi(hr)
			skipped, err2 := strconv.Atoi(hs)
			if err1 != nil || err2 != nil || reached+skipped != 2 {
				t.Fatalf("got X-Broadcast-Reached %q, X-Broadcast-Skipped %q; want two counts adding up to the 2 members", hr, hs)
			}
			if asJSON {
				var res struct{ Reached, Skipped int }
				if err := json.Unmarshal(b, &res); err != nil {
					t.Fatalf("POST /broadcast JSON: %v: %q", err, b)
				}
				if res.Reached != reached || res.Skipped != skipped {
					t.Fatalf("got JSON %q, want the headers' reached %d skipped %d", b, reached, skipped)
				}
				sawJSON = sawJSON || skipped == 1
			} else {
				if string(b) != hr {
					t.Fatalf("plain /broadcast: got body %q, want the count reached %q", b, hr)
				}
				sawPlain = sawPlain || (skipped == 1 && string(b) == "1")
			}
		}
		if !sawJSON || !sawPlain {
			t.Fatalf("the non-reader was never reported skipped (JSON %v, plain %v)", sawJSON, sawPlain)
		}
		// The reading member is reached again once it has read what was
		// queued to it (it may have been skipped too, while behind).
		got := false
		for deadline := time.Now().Add(30 * time.Second); !got && time.Now().Before(deadline); {
			s.post("/broadcast?room=r21", "small")
			wait := time.After(300 * time.Millisecond)
		drain:
			for !got {
				select {
				case m, ok := <-reader.in:
					if !ok {
						t.Fatalf("the reading member's connection ended")
					}
					got = m == "small"
				case <-wait:
					break drain
				}
			}
		}
		if !got {
			t.Errorf("the reading member never got a broadcast after the flood")
		}
	})
}

// TestBoundsCrashLoop: clients send numbered messages to /echo while the
// worker serving them is SIGKILLed five times in a row (PROCESS mode):
// every message is echoed at least once (a message whose OnMessage ran
// just before the kill may be echoed twice), and no connection closes.
func TestBoundsCrashLoop(t *testing.T) {
	s := startHardened(t, "process", 1)
	const clients, window = 8, 16
	type client struct {
		c    *websocket.Conn
		mu   sync.Mutex
		got  map[int]int
		sent int
		err  error
	}
	cs := make([]*client, clients)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range cs {
		cl := &client{c: s.dial(s.wsAddr, "/echo"), got: map[int]int{}}
		cs[i] = cl
		credit := make(chan struct{}, window)
		for j := 0; j < window; j++ {
			credit <- struct{}{}
		}
		wg.Add(2)
		go func() { // reader: counts every echo
			defer wg.Done()
			for {
				_, b, err := cl.c.ReadMessage()
				if err != nil {
					if ctx.Err() == nil {
						cl.mu.Lock()
						cl.err = err
						cl.mu.Unlock()
					}
					return
				}
				n, _ := strconv.Atoi(strings.TrimPrefix(string(b), "m"))
				cl.mu.Lock()
				cl.got[n]++
				first := cl.got[n] == 1
				cl.mu.Unlock()
				if first {
					select {
					case credit <- struct{}{}:
					default:
					}
				}
			}
		}()
		go func() { // writer: at most window messages unanswered
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-ctx.Done():
					return
				case <-credit:
				}
				cl.mu.Lock()
				cl.sent = n + 1
				cl.mu.Unlock()
				if err := cl.c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("m%d", n))); err != nil {
					cl.mu.Lock()
					cl.err = err
					cl.mu.Unlock()
					return
				}
			}
		}()
	}
	for kill := 0; kill < 5; kill++ {
		var pid int
		waitFor(t, 30*time.Second, "worker 0 ready", func() bool {
			pid = s.workerPids()[0]
			return pid > 0
		})
		time.Sleep(100 * time.Millisecond) // messages in flight to it
		syscall.Kill(pid, syscall.SIGKILL)
		waitFor(t, 30*time.Second, "worker 0 replaced", func() bool {
			p := s.workerPids()[0]
			return p > 0 && p != pid
		})
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	// Every message sent is echoed: wait for the last ones.
	dups := 0
	waitFor(t, 30*time.Second, "every message echoed", func() bool {
		for _, cl := range cs {
			cl.mu.Lock()
			n, err := cl.sent, cl.err
			missing := 0
			for i := 0; i < n; i++ {
				if cl.got[i] == 0 {
					missing++
				}
			}
			cl.mu.Unlock()
			if err != nil {
				t.Fatalf("client: %v (PROCESS mode must keep the connection)", err)
			}
			if missing > 0 {
				return false
			}
		}
		return true
	})
	total := 0
	for _, cl := range cs {
		cl.mu.Lock()
		total += cl.sent
		for _, k := range cl.got {
			dups += k - 1
		}
		cl.mu.Unlock()
		cl.c.Close()
	}
	wg.Wait()
	t.Logf("%d messages over 5 kills: all echoed, %d twice", total, dups)
	if !strings.Contains(s.log(), "redelivering messages a dead worker never handled") {
		t.Logf("no redelivery was needed this run")
	}
	if st := s.status(); st.Workers[0].State != master.StateReady {
		t.Errorf("got worker 0 %s, want ready", st.Workers[0].State)
	}
}
