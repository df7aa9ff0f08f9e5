package main

// The loads and checks of the lifecycle tests (reload_test.go).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd/master"
)

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
