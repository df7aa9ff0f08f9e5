package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// TestWatchdogMasterPaused: a master that does not run for longer than
// twice --worker-timeout (stopped, its container frozen, the machine
// suspended) could not read its workers' answers meanwhile; when it
// resumes it must not take them for hung. Before, it killed every worker
// at once (and in BASE mode every connection with them). The workers and
// a WebSocket opened before the pause are still there after it, nothing
// is logged as hung or unresponsive, and the watchdog still replaces a
// worker that really stops answering.
func TestWatchdogMasterPaused(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		const timeout = time.Second
		s := startHardened(t, mode, 2, "--worker-timeout", timeout.String())
		var before map[int]int
		waitFor(t, 20*time.Second, "both workers ready", func() bool {
			before = s.workerPids()
			return len(before) == 2
		})
		c := s.dial(s.wsAddr, "/echo")
		echoOK(t, c, "before the pause")

		cont := sigstop(t, s.Cmd.Process.Pid)
		time.Sleep(3 * timeout) // more than the 2 x --worker-timeout that kills
		cont()
		time.Sleep(3 * timeout) // the watchdog judges every timeout/5
		echoOK(t, c, "after the pause")
		if after := s.workerPids(); after[0] != before[0] || after[1] != before[1] {
			t.Fatalf("workers after the master's pause: %v, want %v (killed as hung)", after, before)
		}
		for _, l := range strings.Split(s.log(), "\n") {
			if strings.Contains(l, "worker hung") || strings.Contains(l, "worker unresponsive") {
				t.Fatalf("logged after the master's pause: %s", l)
			}
		}

		// The watchdog still works: a worker that stops answering is replaced.
		stopped := before[1]
		sigstop(t, stopped)
		waitFor(t, 20*time.Second, "the stopped worker replaced", func() bool {
			p := s.workerPids()
			return p[1] != 0 && p[1] != stopped
		})
		if !strings.Contains(s.log(), "worker hung") {
			t.Fatal("a stopped worker was replaced without the 'worker hung' line")
		}
	})
}

// TestTimeoutsAfterPause: the process holding the connections (PROCESS:
// the master; BASE: the worker) does not run for 3 s, three times the
// --heartbeat-idle (and so the keep-alive idle timeout) of 1 s. Meanwhile
// a WebSocket client keeps sending (every 300 ms, as a heartbeat would)
// and a keep-alive HTTP client sends its next request. On resuming, what
// they sent is still unread: the timeouts count from the resumption, so
// the WebSocket gets every echo and the request its answer. Before, the
// heartbeat closed the WebSocket as silent and the sweeper cut the HTTP
// connection with its request unread, depending on which ran first.
func TestTimeoutsAfterPause(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1, "--heartbeat-idle", "1s")
		holder := s.Cmd.Process.Pid
		if mode == "base" {
			waitFor(t, 20*time.Second, "the worker ready", func() bool { return s.workerPids()[0] != 0 })
			holder = s.workerPids()[0]
		}
		for round := 0; round < 3; round++ {
			ws := s.dial(s.wsAddr, "/echo")
			echoOK(t, ws, "before")
			hc, err := net.DialTimeout("tcp", s.httpAddr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(hc)
			get := "GET /hello HTTP/1.1\r\nHost: forkd\r\n\r\n"
			exchange := func(what string) {
				hc.SetDeadline(time.Now().Add(10 * time.Second))
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("round %d: %s: %v", round, what, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("round %d: %s: %d", round, what, resp.StatusCode)
				}
			}
			io.WriteString(hc, get)
			exchange("the first request")

			cont := sigstop(t, holder)
			var sent []string
			for i := 0; i < 10; i++ { // 3 s
				time.Sleep(300 * time.Millisecond)
				msg := fmt.Sprintf("during %d", i)
				ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
					t.Fatalf("round %d: write %q: %v", round, msg, err)
				}
				sent = append(sent, msg)
				if i == 1 {
					io.WriteString(hc, get) // idle for 0.6 s when sent
				}
			}
			cont()
			for _, msg := range sent {
				ws.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, b, err := ws.ReadMessage()
				if err != nil || string(b) != msg {
					t.Fatalf("round %d: after the pause: got %q, %v; want the echo %q", round, b, err, msg)
				}
			}
			exchange("the request sent during the pause")
			ws.Close()
			hc.Close()
		}
		if strings.Contains(s.log(), "heartbeat timeout") {
			t.Fatal("a heartbeat timeout was logged for a client that kept sending")
		}
	})
}
