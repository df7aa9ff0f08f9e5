package main

// Hardening (issue 7), continued: see hardening_test.go.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd/internal/testharness"
	"github.com/forkd/forkd/master"
)

// --- 5. --max-conn --------------------------------------------------------------

// TestHardenMaxConn: beyond --max-conn (per process: with one worker, per
// server in both modes) new HTTP gets 503 and new WebSockets close 1013,
// while the connections already open are unaffected.
func TestHardenMaxConn(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1, "--max-conn", "3")
		s.closeIdleClients(t)
		conns := []*websocket.Conn{s.dial(s.wsAddr, "/echo"), s.dial(s.wsAddr, "/echo"), s.dial(s.httpAddr, "/echo")}
		for i, c := range conns {
			echoOK(t, c, "hi "+strconv.Itoa(i))
		}

		fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := fresh.Get("http://" + s.httpAddr + "/hello")
		if err != nil {
			t.Fatalf("GET over the limit: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !strings.Contains(string(b), "too many connections") {
			t.Fatalf("GET over the limit: got %d %q, want 503 too many connections", resp.StatusCode, b)
		}
		over, err := s.dialErr(s.wsAddr, "/echo")
		if err != nil {
			t.Fatalf("WebSocket over the limit: want an upgrade then close 1013, got %v", err)
		}
		expectCloseCode(t, over, websocket.CloseTryAgainLater, 5*time.Second)
		over.Close()
		s.expectLogged(t, 2, "too many connections")

		for i, c := range conns {
			echoOK(t, c, "still here "+strconv.Itoa(i))
		}
		// A slot freed is a slot usable again.
		conns[0].Close()
		waitFor(t, 10*time.Second, "a connection to be accepted again", func() bool {
			c, err := s.dialErr(s.wsAddr, "/echo")
			if err != nil {
				return false
			}
			defer c.Close()
			c.WriteMessage(websocket.TextMessage, []byte("back"))
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, b, err := c.ReadMessage()
			return err == nil && string(b) == "back"
		})
	})
}

// --- 6. Crashes -------------------------------------------------------------------

// TestHardenPanics: a panic in a user callback closes only its connection
// (1011 for WebSocket, 500 for HTTP), is logged with its stack, and the
// worker goes on (same pid, no restart).
func TestHardenPanics(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1)
		before := s.workerPids()
		bystander := s.dial(s.wsAddr, "/echo")
		echoOK(t, bystander, "before")

		victim := s.dial(s.wsAddr, "/echo")
		echoOK(t, victim, "about to panic")
		if err := victim.WriteMessage(websocket.TextMessage, []byte(panicMessage)); err != nil {
			t.Fatal(err)
		}
		expectCloseCode(t, victim, websocket.CloseInternalServerErr, 5*time.Second)
		s.expectLogged(t, 1, "deliberate panic in OnMessage")
		if !strings.Contains(s.log(), "goroutine") {
			t.Fatal("the panic was logged without its stack")
		}

		resp, body := s.get("/panic")
		if resp.StatusCode != 500 {
			t.Fatalf("GET /panic: got %d %q, want 500", resp.StatusCode, body)
		}
		s.expectLogged(t, 1, "deliberate panic in an HTTP handler")
		if got := s.countLog("panic", "goroutine"); got < 2 {
			t.Fatalf("log lines with a panic and its stack: got %d, want 2", got)
		}

		echoOK(t, bystander, "after")
		if resp, body := s.get("/hello"); resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("GET /hello after the panics: got %d %q", resp.StatusCode, body)
		}
		st := s.status()
		if after := s.workerPids(); after[0] != before[0] || st.Workers[0].Restarts != 0 {
			t.Fatalf("worker restarted after a recovered panic: pid %d -> %d, restarts %d", before[0], after[0], st.Workers[0].Restarts)
		}
	})
}

// TestHardenBaseWorkerKilled: in BASE mode a worker SIGKILLed costs only its
// own connections; the other worker's stay open, and it is replaced.
func TestHardenBaseWorkerKilled(t *testing.T) {
	s := startHardened(t, "base", 2)
	pids := s.workerPids()
	byWorker := map[int][]*websocket.Conn{}
	for i := 0; i < 60 && (len(byWorker[0]) == 0 || len(byWorker[1]) == 0); i++ {
		c := s.dial(s.wsAddr, fmt.Sprintf("/chat?room=k%d&name=n%d", i, i))
		w := readJSON(t, c, 5*time.Second)
		readJSON(t, c, 5*time.Second) // its own join
		byWorker[w.Worker] = append(byWorker[w.Worker], c)
	}
	if len(byWorker[0]) == 0 || len(byWorker[1]) == 0 {
		t.Fatalf("could not get connections on both workers: %d and %d", len(byWorker[0]), len(byWorker[1]))
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, c := range byWorker[0] {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.ReadMessage(); err == nil {
			t.Fatal("a connection of the killed worker is still open")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("a connection of the killed worker is still open after 10s")
		}
	}
	for i, c := range byWorker[1] {
		text := "survivor " + strconv.Itoa(i)
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
			t.Fatalf("connection of the other worker: %v", err)
		}
		if m := readJSON(t, c, 5*time.Second); m.Type != "message" || m.Text != text {
			t.Fatalf("connection of the other worker: got %+v, want its message back", m)
		}
	}
	waitFor(t, 20*time.Second, "worker 0 to be replaced", func() bool {
		now := s.workerPids()
		return now[0] != 0 && now[0] != pids[0] && now[1] == pids[1]
	})
	s.expectLogged(t, 1, "worker exited unexpectedly")
	for i := 0; i < 20; i++ {
		if resp, body := s.get("/hello"); resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("GET /hello after the replacement: got %d %q", resp.StatusCode, body)
		}
	}
}

// TestHardenMasterKilled: workers never outlive their master, even one
// killed with SIGKILL.
func TestHardenMasterKilled(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 2, "--task-workers", "1")
		st := s.status()
		c := s.dial(s.wsAddr, "/echo")
		echoOK(t, c, "hi")
		if err := syscall.Kill(st.MasterPid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for _, w := range append(st.Workers, st.TaskWorkers...) {
			if !waitPidGone(w.Pid, 5*time.Second) {
				t.Fatalf("worker %d (pid %d) outlived its master by 5s", w.ID, w.Pid)
			}
		}
		<-s.Exited // reaped: the cleanup has no master to stop
	})
}

// --- 7. The control socket ---------------------------------------------------------

// TestHardenControlSocket: the control socket is mode 0600, an oversized
// request gets a clear error and does not hurt the master, and the pid file
// and socket a SIGKILLed master leaves behind do not block the next start.
func TestHardenControlSocket(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		s := startHardened(t, mode, 1)
		sock := filepath.Join(s.RunDir, master.SocketName)
		fi, err := os.Stat(sock)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Fatalf("control socket: got mode %v, want a socket with 0600", fi.Mode())
		}
		pid := s.status().MasterPid

		ask := func(req []byte) master.Response {
			t.Helper()
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go c.Write(req)
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			var resp master.Response
			if err := json.NewDecoder(c).Decode(&resp); err != nil {
				t.Fatalf("control answer to a %d byte request: %v", len(req), err)
			}
			return resp
		}
		if resp := ask(bytes.Repeat([]byte("x"), 100<<10)); !strings.Contains(resp.Error, "64 KiB") {
			t.Fatalf("oversized control request: got %+v, want an error naming the 64 KiB limit", resp)
		}
		// Under the limit is fine, however long.
		padded := []byte(`{"cmd":"status","pad":"` + strings.Repeat("p", 60<<10) + "\"}\n")
		if resp := ask(padded); resp.Error != "" || resp.Status == nil || resp.Status.MasterPid != pid {
			t.Fatalf("60 KiB control request: got error %q, status %v", resp.Error, resp.Status != nil)
		}
		if st := s.status(); st.MasterPid != pid || len(st.Workers) != 1 {
			t.Fatalf("master after an oversized request: %+v", st)
		}

		// A master killed with SIGKILL leaves its pid file and socket.
		st := s.status()
		syscall.Kill(pid, syscall.SIGKILL)
		select {
		case <-s.Exited:
		case <-time.After(10 * time.Second):
			t.Fatal("master still running 10s after SIGKILL")
		}
		for _, w := range st.Workers {
			if !waitPidGone(w.Pid, 5*time.Second) {
				t.Fatalf("worker pid %d outlived the master", w.Pid)
			}
		}
		for _, name := range []string{master.PidName, master.SocketName} {
			if _, err := os.Stat(filepath.Join(s.RunDir, name)); err != nil {
				t.Fatalf("want the stale %s left behind: %v", name, err)
			}
		}
		if out, err := s.run("status"); err == nil || !strings.Contains(out, "not running") || strings.Contains(out, "goroutine") {
			t.Fatalf("status with a stale pid file: got %v %q, want one line saying it is not running", err, out)
		}
		// The next start in the same run dir is not blocked by them.
		out, err := s.run("start", "-d", "--mode", mode, "--workers", "1", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--log-format", "console")
		if err != nil {
			t.Fatalf("start over a stale pid file: %v\n%s", err, out)
		}
		t.Cleanup(func() {
			if out, err := s.run("stop"); err != nil {
				t.Errorf("stop the second master: %v\n%s", err, out)
			}
		})
		st2 := s.status() // records its pids: the cleanup checks they are gone
		if st2.MasterPid == pid || len(st2.Workers) != 1 {
			t.Fatalf("second master: %+v", st2)
		}
		resp, err := httpClient.Get("http://" + testharness.Addrs(st2)["http"] + "/hello")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("second master: GET /hello: %d", resp.StatusCode)
		}
	})
}
