package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd/internal/testharness"
	"github.com/forkd/forkd/master"
)

// The lifecycle tests: `server reload` (and SIGUSR1) under load in both
// modes, `stop -g`, `restart`, `--max-request`, a reload whose replacement
// refuses to start, and daemon mode. The load is strict: every request is
// written on a raw keep-alive connection with no retry, so a connection the
// server closes under a request, or resets, is a counted failure. Only a
// response carrying `Connection: close` followed by a fresh connection is
// allowed.

// keepAliveLoad is n clients, each on its own keep-alive connection, doing
// GET path in a loop.
type keepAliveLoad struct {
	ok, failed, resets, closes atomic.Int64

	mu   sync.Mutex
	errs []string
	pids map[string]map[string]bool // X-Worker-Id -> X-Worker-Pid seen

	cancel context.CancelFunc
	wg     sync.WaitGroup
	dial   func(addr string) (net.Conn, error)
}

func startKeepAliveLoad(t *testing.T, addr, path string, n int) *keepAliveLoad {
	t.Helper()
	return startKeepAliveLoadDial(t, func(addr string) (net.Conn, error) {
		return net.DialTimeout("tcp", addr, 5*time.Second)
	}, addr, path, n)
}

// startKeepAliveLoadDial is startKeepAliveLoad with its own dial (TLS).
func startKeepAliveLoadDial(t *testing.T, dial func(string) (net.Conn, error), addr, path string, n int) *keepAliveLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &keepAliveLoad{cancel: cancel, pids: map[string]map[string]bool{}, dial: dial}
	for i := 0; i < n; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.client(ctx, addr, path)
		}()
	}
	t.Cleanup(l.stop)
	return l
}

func (l *keepAliveLoad) fail(err error) {
	l.failed.Add(1)
	if isReset(err) {
		l.resets.Add(1)
	}
	l.mu.Lock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, err.Error())
	}
	l.mu.Unlock()
}

func (l *keepAliveLoad) client(ctx context.Context, addr, path string) {
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\n\r\n")
	var conn net.Conn
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	drop := func() {
		if conn != nil {
			conn.Close()
			conn = nil
		}
	}
	for ctx.Err() == nil {
		if conn == nil {
			c, err := l.dial(addr)
			if err != nil {
				l.fail(fmt.Errorf("dial: %w", err))
				time.Sleep(10 * time.Millisecond)
				continue
			}
			conn, br = c, bufio.NewReader(c)
		}
		conn.SetDeadline(time.Now().Add(15 * time.Second))
		if _, err := conn.Write(req); err != nil {
			l.fail(fmt.Errorf("write: %w", err))
			drop()
			continue
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			l.fail(fmt.Errorf("read response: %w", err))
			drop()
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			l.fail(fmt.Errorf("read body: %w", err))
			drop()
			continue
		}
		if resp.StatusCode != http.StatusOK {
			l.fail(fmt.Errorf("status %d: %q", resp.StatusCode, body))
		} else {
			l.ok.Add(1)
			if id := resp.Header.Get("X-Worker-Id"); id != "" {
				l.mu.Lock()
				if l.pids[id] == nil {
					l.pids[id] = map[string]bool{}
				}
				l.pids[id][resp.Header.Get("X-Worker-Pid")] = true
				l.mu.Unlock()
			}
		}
		if resp.Close {
			l.closes.Add(1)
			drop()
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// pidsSeen returns how many distinct pids served each worker id.
func (l *keepAliveLoad) pidsSeen() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for id, ps := range l.pids {
		out[id] = len(ps)
	}
	return out
}

func (l *keepAliveLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

// check stops the load and fails the test on any failed request or reset.
func (l *keepAliveLoad) check(t *testing.T) {
	t.Helper()
	l.stop()
	l.mu.Lock()
	errs := l.errs
	l.mu.Unlock()
	t.Logf("keep-alive load: %d ok, %d failed, %d resets, %d answered with Connection: close",
		l.ok.Load(), l.failed.Load(), l.resets.Load(), l.closes.Load())
	if l.ok.Load() == 0 {
		t.Errorf("keep-alive load: no request succeeded")
	}
	if l.failed.Load() != 0 || l.resets.Load() != 0 {
		t.Errorf("keep-alive load: got %d failed requests (%d resets), want 0; first errors: %q",
			l.failed.Load(), l.resets.Load(), errs)
	}
}

// slowLoad keeps GET /slow requests (run in a task worker) in flight.
type slowLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

func startSlowLoad(t *testing.T, addr string, n int, ms int) *slowLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &slowLoad{cancel: cancel}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < n; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				resp, err := client.Get("http://" + addr + "/slow?ms=" + strconv.Itoa(ms))
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d: %q", resp.StatusCode, b)
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					l.errs = append(l.errs, err.Error())
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	t.Cleanup(func() { cancel(); l.wg.Wait() })
	return l
}

func (l *slowLoad) check(t *testing.T) {
	t.Helper()
	l.cancel()
	l.wg.Wait()
	t.Logf("slow requests: %d ok, %d failed", l.ok.Load(), l.failed.Load())
	if l.ok.Load() == 0 || l.failed.Load() != 0 {
		t.Errorf("slow requests across the reload: got %d ok, %d failed (%q), want all ok", l.ok.Load(), l.failed.Load(), l.errs)
	}
}

// echoClients hold WebSockets on /echo and echo through them in a loop.
type echoClients struct {
	n                 int
	echoed, goingAway atomic.Int64
	failed            atomic.Int64
	mu                sync.Mutex
	errs              []string
	perConnAway       []atomic.Int64
	conns             []*websocket.Conn
	cancel            context.CancelFunc
	wg                sync.WaitGroup
}

// startEchoClients opens n WebSockets. With reconnect (BASE mode), close
// 1001 is expected: the client counts it and dials again at once; without
// it (PROCESS mode) any error is a dropped connection.
func startEchoClients(t *testing.T, s *server, n int, reconnect bool) *echoClients {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e := &echoClients{n: n, cancel: cancel, perConnAway: make([]atomic.Int64, n), conns: make([]*websocket.Conn, n)}
	for i := range e.conns {
		e.conns[i] = s.dial(s.wsAddr, "/echo")
	}
	for i := range e.conns {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.loop(ctx, s, i, reconnect)
		}()
	}
	t.Cleanup(func() {
		cancel()
		e.wg.Wait()
		for _, c := range e.conns { // reconnected ones included
			c.Close()
		}
	})
	return e
}

func (e *echoClients) errorf(format string, args ...any) {
	e.failed.Add(1)
	e.mu.Lock()
	if len(e.errs) < 10 {
		e.errs = append(e.errs, fmt.Sprintf(format, args...))
	}
	e.mu.Unlock()
}

func (e *echoClients) loop(ctx context.Context, s *server, i int, reconnect bool) {
	c := e.conns[i]
	for n := 0; ctx.Err() == nil; n++ {
		msg := fmt.Sprintf("conn %d message %d", i, n)
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		err := c.WriteMessage(websocket.TextMessage, []byte(msg))
		var got []byte
		if err == nil {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, got, err = c.ReadMessage()
		}
		if err != nil {
			var ce *websocket.CloseError
			if reconnect && errors.As(err, &ce) && ce.Code == websocket.CloseGoingAway {
				e.goingAway.Add(1)
				e.perConnAway[i].Add(1)
				c.Close()
				nc, derr := s.dialErr(s.wsAddr, "/echo")
				if derr != nil {
					e.errorf("conn %d: reconnect after 1001: %v", i, derr)
					return
				}
				e.mu.Lock()
				e.conns[i] = nc
				e.mu.Unlock()
				c = nc
				continue
			}
			e.errorf("conn %d: %v", i, err)
			return
		}
		if string(got) != msg {
			e.errorf("conn %d: got %q, want %q", i, got, msg)
			return
		}
		e.echoed.Add(1)
		time.Sleep(20 * time.Millisecond)
	}
}

// check stops the loops and makes every connection echo once more.
func (e *echoClients) check(t *testing.T) {
	t.Helper()
	e.cancel()
	e.wg.Wait()
	t.Logf("websockets: %d echoes, %d close 1001 (reconnected), %d failed", e.echoed.Load(), e.goingAway.Load(), e.failed.Load())
	if e.failed.Load() != 0 {
		t.Errorf("websockets: got %d failures, want 0: %q", e.failed.Load(), e.errs)
	}
	alive := 0
	for i, c := range e.conns {
		msg := fmt.Sprintf("conn %d final", i)
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			continue
		}
		if _, got, err := c.ReadMessage(); err == nil && string(got) == msg {
			alive++
		}
	}
	if alive != len(e.conns) {
		t.Errorf("websockets: %d of %d still echo after the reload, want all", alive, len(e.conns))
	}
}

// checkNoRace fails the test if the server (built with -race when the
// tests are) reported a data race in its log.
func checkNoRace(t *testing.T, s *server) {
	t.Helper()
	if log := s.log(); strings.Contains(log, "WARNING: DATA RACE") {
		t.Errorf("the server reported a data race:\n%s", log)
	}
}

var reloadLineRE = regexp.MustCompile(`^(worker|task) (\d+): pid (\d+) -> (\d+) \((.+)\)$`)

// checkReloadOutput checks one line per worker slot, old pid -> new pid.
func checkReloadOutput(t *testing.T, out string, before, after master.Status) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	all := append(append([]master.WorkerStatus(nil), before.Workers...), before.TaskWorkers...)
	if len(lines) != len(all) {
		t.Errorf("reload printed %d lines, want %d (one per worker):\n%s", len(lines), len(all), out)
	}
	oldPid := map[int]int{}
	for _, w := range all {
		oldPid[w.ID] = w.Pid
	}
	newPid := map[int]int{}
	for _, w := range append(after.Workers, after.TaskWorkers...) {
		newPid[w.ID] = w.Pid
	}
	for _, line := range lines {
		m := reloadLineRE.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("reload line %q: want \"worker ID: pid OLD -> NEW (TOOK)\"", line)
			continue
		}
		id, _ := strconv.Atoi(m[2])
		o, _ := strconv.Atoi(m[3])
		n, _ := strconv.Atoi(m[4])
		if o != oldPid[id] || n != newPid[id] || o == n {
			t.Errorf("reload line %q: got pid %d -> %d, want %d -> %d", line, o, n, oldPid[id], newPid[id])
		}
		if _, err := time.ParseDuration(m[5]); err != nil {
			t.Errorf("reload line %q: time %q: %v", line, m[5], err)
		}
	}
}

// checkAllReplaced checks every worker (and task worker) has a new pid and
// is ready, and nothing else is left over.
func checkAllReplaced(t *testing.T, before, after master.Status) {
	t.Helper()
	old := map[int]bool{}
	for _, w := range append(before.Workers, before.TaskWorkers...) {
		old[w.Pid] = true
	}
	all := append(after.Workers, after.TaskWorkers...)
	if len(all) != len(before.Workers)+len(before.TaskWorkers) {
		t.Errorf("after reload: got %d worker processes, want %d: %+v", len(all), len(before.Workers)+len(before.TaskWorkers), all)
	}
	for _, w := range all {
		if old[w.Pid] {
			t.Errorf("worker %d: pid %d unchanged by the reload", w.ID, w.Pid)
		}
		if w.State != master.StateReady {
			t.Errorf("worker %d: state %q after the reload, want ready", w.ID, w.State)
		}
	}
	if after.MasterPid != before.MasterPid {
		t.Errorf("master pid changed by a reload: %d -> %d", before.MasterPid, after.MasterPid)
	}
}

// statusWatch polls `status` while a reload runs and records the states
// it saw; every entry must carry the per-worker fields.
type statusWatch struct {
	mu     sync.Mutex
	states map[string]int
	bad    []string
	cancel context.CancelFunc
	done   chan struct{}
}

func watchStatus(s *server) *statusWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &statusWatch{states: map[string]int{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			st, err := s.statusErr()
			if err != nil {
				w.mu.Lock()
				w.bad = append(w.bad, "status: "+err.Error())
				w.mu.Unlock()
				return
			}
			w.mu.Lock()
			for _, ws := range append(st.Workers, st.TaskWorkers...) {
				w.states[ws.State]++
				switch ws.State {
				case master.StateStarting, master.StateReady, master.StateDraining:
				default:
					w.bad = append(w.bad, fmt.Sprintf("worker %d: state %q", ws.ID, ws.State))
				}
				// A draining worker may have exited a moment ago (RSS 0).
				if ws.Pid <= 0 || ws.UptimeSec < 0 || (ws.State == master.StateReady && ws.RSS <= 0) {
					w.bad = append(w.bad, fmt.Sprintf("worker %d: incomplete status %+v", ws.ID, ws))
				}
			}
			w.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return w
}

func (w *statusWatch) check(t *testing.T) {
	t.Helper()
	w.cancel()
	<-w.done
	t.Logf("status during the reload: states seen %v", w.states)
	if len(w.bad) > 0 {
		t.Errorf("status during the reload: %q", w.bad)
	}
	// A replacement is "starting" only briefly (often between two polls);
	// an old worker is "draining" while its in-flight work finishes.
	if w.states[master.StateDraining] == 0 {
		t.Errorf("status during the reload: states seen %v, want draining among them", w.states)
	}
}

// TestReload is the rolling reload under load: 16 keep-alive HTTP clients,
// slow requests in flight in task workers, and WebSockets (PROCESS: 50 held
// open through the reload; BASE: close 1001, then reconnect at once).
func TestReload(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2, "--task-workers", "1")
			before := s.status()

			// An idle keep-alive connection: PROCESS keeps it (the master holds
			// it); BASE closes it cleanly (FIN, never a reset).
			idle, err := net.Dial("tcp", s.httpAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer idle.Close()
			idleBR := bufio.NewReader(idle)
			idleGet := func() error {
				idle.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(idle, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					return err
				}
				resp, err := http.ReadResponse(idleBR, nil)
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			}
			if err := idleGet(); err != nil {
				t.Fatalf("idle connection, first request: %v", err)
			}

			nws := 50
			if mode == "base" {
				nws = 8
			}
			ws := startEchoClients(t, s, nws, mode == "base")
			load := startKeepAliveLoad(t, s.httpAddr, "/hello", 16)
			slow := startSlowLoad(t, s.httpAddr, 2, 400)
			waitFor(t, 10*time.Second, "load to run", func() bool { return load.ok.Load() > 100 && ws.echoed.Load() > int64(nws) })

			watch := watchStatus(s)
			begin := time.Now()
			out, err := s.run("reload")
			took := time.Since(begin)
			watch.check(t)
			if err != nil {
				t.Fatalf("server reload: %v\n%s", err, out)
			}
			t.Logf("reload took %s:\n%s", took.Round(time.Millisecond), out)
			// Keep the load on the new workers for a moment.
			n := load.ok.Load()
			waitFor(t, 10*time.Second, "requests after the reload", func() bool { return load.ok.Load() > n+100 })

			load.check(t)
			slow.check(t)
			ws.check(t)
			after := s.status()
			checkAllReplaced(t, before, after)
			checkReloadOutput(t, out, before, after)
			checkNoRace(t, s)

			if mode == "process" {
				if err := idleGet(); err != nil {
					t.Errorf("idle keep-alive connection after the reload: %v, want it served (PROCESS mode drops no connection)", err)
				}
			} else {
				for i := range ws.perConnAway {
					if ws.perConnAway[i].Load() == 0 {
						t.Errorf("websocket %d: no close 1001 while every worker was replaced", i)
					}
				}
				idle.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err := idleBR.ReadByte()
				if !errors.Is(err, io.EOF) {
					t.Errorf("idle keep-alive connection of a drained worker: got %v, want a clean close (EOF)", err)
				}
			}
		})
	}
}

// TestReloadSignal: kill -USR1 <master pid> reloads like `server reload`.
func TestReloadSignal(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2)
			before := s.status()
			load := startKeepAliveLoad(t, s.httpAddr, "/hello", 16)
			waitFor(t, 10*time.Second, "load to run", func() bool { return load.ok.Load() > 100 })
			pid, err := master.ReadPid(s.RunDir)
			if err != nil {
				t.Fatal(err)
			}
			if pid != before.MasterPid {
				t.Fatalf("run/server.pid says %d, status says master pid %d", pid, before.MasterPid)
			}
			if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			var after master.Status
			waitFor(t, 40*time.Second, "every worker replaced after SIGUSR1", func() bool {
				after = s.status()
				if len(after.Workers) != len(before.Workers) {
					return false
				}
				for i, w := range after.Workers {
					if w.State != master.StateReady || w.Pid == before.Workers[i].Pid {
						return false
					}
				}
				return true
			})
			load.check(t)
			checkAllReplaced(t, before, after)
			// The last replacement is ready (what status shows) before the
			// old worker it replaces has drained and gone: "reload done"
			// comes after that (seconds, for a race-built worker under load).
			waitFor(t, 30*time.Second, `"reload done" in the log after SIGUSR1`, func() bool {
				return strings.Contains(s.log(), "reload done")
			})
			checkNoRace(t, s)
		})
	}
}

// TestStopGraceful: `stop -g` lets an in-flight request finish.
func TestStopGraceful(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2, "--task-workers", "1")
			type result struct {
				status int
				body   string
				err    error
			}
			res := make(chan result, 1)
			begin := time.Now()
			go func() {
				resp, err := (&http.Client{Timeout: 20 * time.Second}).Get("http://" + s.httpAddr + "/slow?ms=1500")
				if err != nil {
					res <- result{err: err}
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				res <- result{status: resp.StatusCode, body: string(b), err: err}
			}()
			waitFor(t, 10*time.Second, "the slow request to reach the task worker", func() bool {
				st := s.status()
				return len(st.TaskWorkers) == 1 && st.TaskWorkers[0].Requests > 0
			})
			out, err := s.run("stop", "-g")
			if err != nil {
				t.Fatalf("server stop -g: %v\n%s", err, out)
			}
			r := <-res
			if r.err != nil || r.status != 200 || r.body != "slept 1500 ms\n" {
				t.Fatalf("in-flight request across stop -g: got %d %q (err %v), want 200 \"slept 1500 ms\\n\"", r.status, r.body, r.err)
			}
			if d := time.Since(begin); d < 1500*time.Millisecond {
				t.Errorf("request answered after %s, before its 1.5s of work", d)
			}
			select {
			case <-s.Exited:
			case <-time.After(10 * time.Second):
				t.Fatalf("master still running after stop -g returned")
			}
			if _, err := master.ReadPid(s.RunDir); !errors.Is(err, master.ErrNotRunning) {
				t.Errorf("pid file after stop -g: got %v, want ErrNotRunning", err)
			}
			checkNoRace(t, s)
		})
	}
}

// TestMaxRequest: --max-request 100 replaces workers under load, with no
// failed request.
func TestMaxRequest(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2, "--max-request", "100")
			load := startKeepAliveLoad(t, s.httpAddr, "/hello", 16)
			waitFor(t, 45*time.Second, "each worker id served by 3 processes", func() bool {
				seen := load.pidsSeen()
				return len(seen) == 2 && seen["0"] >= 3 && seen["1"] >= 3
			})
			load.check(t)
			t.Logf("distinct pids per worker id: %v", load.pidsSeen())
			// Without load no worker reaches its limit: the server settles
			// on one ready process per worker id.
			waitFor(t, 20*time.Second, "two ready workers", func() bool {
				st := s.status()
				return len(st.Workers) == 2 && st.Workers[0].State == master.StateReady && st.Workers[1].State == master.StateReady
			})
			if !strings.Contains(s.log(), "max-request reached") {
				t.Errorf("log has no \"max-request reached\"")
			}
			checkNoRace(t, s)
		})
	}
}

// TestReloadFailedStart: a replacement whose OnWorkerStart fails stops the
// reload; the old workers keep serving; the command says which and why.
// The test binary, run as the built-in app (startHooked), refuses to
// start a worker while FORKD_FAIL_START_FILE exists.
func TestReloadFailedStart(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			flag := filepath.Join(t.TempDir(), "fail-start")
			t.Setenv(envFailStartFile, flag)
			s := startHooked(t, mode, 2)
			before := s.status()
			if err := os.WriteFile(flag, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			load := startKeepAliveLoad(t, s.httpAddr, "/hello", 4)
			// Load under way before the reload (load.check fails a load
			// that served nothing, and the failing start can be quick).
			waitFor(t, 10*time.Second, "load to run", func() bool { return load.ok.Load() > 20 })
			out, err := s.run("reload")
			if err == nil {
				t.Fatalf("reload with a failing replacement succeeded:\n%s", out)
			}
			if !strings.Contains(out, "worker 0") || !strings.Contains(out, "refusing to start") || !strings.Contains(out, flag) {
				t.Errorf("reload output %q: want it to name worker 0 and the reason (refusing to start: %s exists)", out, flag)
			}
			load.check(t)
			after := s.status()
			if len(after.Workers) != 2 {
				t.Fatalf("after the failed reload: %d workers, want 2: %+v", len(after.Workers), after.Workers)
			}
			for i, w := range after.Workers {
				if w.Pid != before.Workers[i].Pid || w.State != master.StateReady {
					t.Errorf("worker %d after the failed reload: pid %d state %s, want the old pid %d, ready", w.ID, w.Pid, w.State, before.Workers[i].Pid)
				}
			}
			old := map[string]bool{}
			for _, w := range before.Workers {
				old[strconv.Itoa(w.Pid)] = true
			}
			for i := 0; i < 8; i++ {
				resp, body := s.get("/hello")
				if resp.StatusCode != 200 || body != "hello" || !old[resp.Header.Get("X-Worker-Pid")] {
					t.Fatalf("GET /hello after the failed reload: %d %q from pid %s, want 200 from an old worker", resp.StatusCode, body, resp.Header.Get("X-Worker-Pid"))
				}
			}
			// Once the cause is gone, the reload goes through.
			os.Remove(flag)
			if out, err := s.run("reload"); err != nil {
				t.Fatalf("reload after removing %s: %v\n%s", flag, err, out)
			}
			checkAllReplaced(t, before, s.status())
			checkNoRace(t, s)
		})
	}
}

// TestRestart: `restart` stops the master and starts a new one.
func TestRestart(t *testing.T) {
	s := startServer(t, "process", 2)
	before := s.status()
	var newPid int
	t.Cleanup(func() { killDaemon(t, s.RunDir, newPid) })
	out, err := s.run("restart", "-d", "--mode", "base", "--workers", "2", "--http", s.httpAddr, "--ws", s.wsAddr)
	if err != nil {
		t.Fatalf("server restart: %v\n%s", err, out)
	}
	newPid, err = master.ReadPid(s.RunDir)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	select { // the old master is gone
	case <-s.Exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("the old master is still running after restart")
	}
	after := s.status()
	if after.MasterPid == before.MasterPid || after.MasterPid != newPid {
		t.Errorf("master pid: %d before, %d after (pid file %d), want a new one", before.MasterPid, after.MasterPid, newPid)
	}
	if after.Mode != "base" || len(after.Workers) != 2 {
		t.Errorf("after restart: mode %s with %d workers, want base with 2", after.Mode, len(after.Workers))
	}
	if resp, body := s.get("/hello"); resp.StatusCode != 200 || body != "hello" {
		t.Errorf("GET /hello after restart: %d %q", resp.StatusCode, body)
	}
	if out, err := s.run("stop"); err != nil {
		t.Errorf("stop after restart: %v\n%s", err, out)
	}
	if !waitPidGone(newPid, 10*time.Second) {
		t.Errorf("restarted master %d still running after stop", newPid)
	}
}

// TestDaemon: `start -d` returns once ready, logs to the run dir's log
// file; `status` and `stop` work on it.
func TestDaemon(t *testing.T) {
	h := testharness.New(t, serverBin)
	dir, runDir := h.Dir, h.RunDir
	h.Adopt() // stops it unless stopped, and checks that every pid status showed is gone
	cli := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, serverBin, append(args, "--run-dir", runDir)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	var pid int
	t.Cleanup(func() { killDaemon(t, runDir, pid) })
	begin := time.Now()
	out, err := cli("start", "-d", "--mode", "process", "--workers", "2", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("start -d: %v\n%s", err, out)
	}
	// The ready line names the address the listener was bound to.
	httpAddr := readyAddr(t, out, "chat page")
	t.Logf("start -d returned after %s: %s", time.Since(begin).Round(time.Millisecond), strings.TrimSpace(out))
	pid, err = master.ReadPid(runDir)
	if err != nil {
		t.Fatalf("after start -d: %v", err)
	}
	if !strings.Contains(out, fmt.Sprintf("master pid %d", pid)) {
		t.Errorf("start -d said %q, want it to name master pid %d", out, pid)
	}
	// Ready means ready: no polling before the first request.
	resp, err := http.Get("http://" + httpAddr + "/hello")
	if err != nil {
		t.Fatalf("GET /hello right after start -d: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /hello right after start -d: status %d", resp.StatusCode)
	}
	out, err = cli("status")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{"master pid " + strconv.Itoa(pid), "PID", "STATE", "CONNS", "REQUESTS", "RSS", "RESTARTS", "UPTIME", "ready"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	out, err = cli("status", "--json")
	if err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	var st master.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	h.Remember(pid)
	for _, w := range st.Workers {
		h.Remember(w.Pid)
	}
	if st.MasterPid != pid || len(st.Workers) != 2 {
		t.Errorf("status --json: master pid %d with %d workers, want %d with 2", st.MasterPid, len(st.Workers), pid)
	}
	logFile := filepath.Join(runDir, "server.log")
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("daemon log: %v", err)
	}
	for _, want := range []string{"server ready", "worker ready"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("daemon log %s lacks %q:\n%s", logFile, want, b)
		}
	}
	// A second start -d in the same run dir says so and fails.
	if out, err := cli("start", "-d", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0"); err == nil || !strings.Contains(out, "already running") {
		t.Errorf("second start -d: got %v %q, want an \"already running\" error", err, out)
	}
	out, err = cli("stop")
	h.Stopped = true
	if err != nil {
		t.Fatalf("stop: %v\n%s", err, out)
	}
	if !waitPidGone(pid, 10*time.Second) {
		t.Errorf("daemon master %d still running after stop", pid)
	}
	if out, err := cli("status"); err == nil || !strings.Contains(out, "not running") {
		t.Errorf("status after stop: got %v %q, want \"not running\"", err, out)
	}
}

// killDaemon kills a detached master (its own session: the harness's
// process group kill does not reach it) and waits for it to go.
func killDaemon(t *testing.T, runDir string, pid int) {
	if p, err := master.ReadPid(runDir); err == nil {
		pid = p
	}
	if pid <= 0 || waitPidGone(pid, 0) {
		return
	}
	t.Errorf("master %d still running at the end of the test; killing it", pid)
	syscall.Kill(pid, syscall.SIGKILL)
	waitPidGone(pid, 5*time.Second)
}

// TestCrashLoopStatus: a worker that keeps failing to start backs off, and
// `status` shows it (state backoff, the delay, the reason); once the cause
// is gone the slot recovers by itself.
func TestCrashLoopStatus(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			flag := filepath.Join(t.TempDir(), "fail-start")
			t.Setenv(envFailStartFile, flag)
			s := startHooked(t, mode, 2)
			before := s.status()
			if err := os.WriteFile(flag, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(before.Workers[1].Pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			var w1 master.WorkerStatus
			waitFor(t, 30*time.Second, "worker 1 to show its crash loop", func() bool {
				for _, w := range s.status().Workers {
					if w.ID == 1 {
						w1 = w
					}
				}
				return w1.State == master.StateBackoff && w1.Backoff != "" && w1.Restarts >= 2 &&
					strings.Contains(w1.LastExit, "refusing to start")
			})
			t.Logf("worker 1 in a crash loop: %+v", w1)
			out, err := s.run("status")
			if err != nil || !strings.Contains(out, "crash loop, next try in") {
				t.Errorf("status: got %v\n%s\nwant a crash-loop note for worker 1", err, out)
			}
			if mode == "process" {
				// The master holds the connections: worker 0 serves them all.
				if resp, body := s.get("/hello"); resp.StatusCode != 200 || body != "hello" {
					t.Errorf("GET /hello with worker 1 down: %d %q", resp.StatusCode, body)
				}
			}
			os.Remove(flag)
			waitFor(t, 30*time.Second, "worker 1 to recover", func() bool {
				for _, w := range s.status().Workers {
					if w.ID == 1 && w.State == master.StateReady && w.Pid != before.Workers[1].Pid {
						w1 = w
						return true
					}
				}
				return false
			})
			if w1.Backoff != "" || w1.LastExit != "" {
				t.Errorf("worker 1 recovered but status still says backoff %q, last exit %q", w1.Backoff, w1.LastExit)
			}
		})
	}
}
