package forkd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd"
	"github.com/forkd/forkd/internal/testharness"
	"github.com/forkd/forkd/master"
)

// TestAPIConnID: a ConnID reads back from its string form; anything else,
// and anything at or over 2^53, is an error.
func TestAPIConnID(t *testing.T) {
	for _, id := range []forkd.ConnID{0, 1, 1<<37 | 7, 1023<<37 | 99, 1<<53 - 1} {
		got, err := forkd.ParseConnID(id.String())
		if err != nil || got != id {
			t.Errorf("ParseConnID(%q): got %d, %v; want %d", id.String(), got, err, id)
		}
	}
	for _, bad := range []string{"", "x", "-1", "1e3", "9007199254740992", "18446564200479195137", "18446744073709551616", "0x10"} {
		if _, err := forkd.ParseConnID(bad); err == nil {
			t.Errorf("ParseConnID(%q): got no error", bad)
		}
	}
}

// apiServer is a test program (testdata/taskapp, procapp, secapp)
// started with the library's own CLI (see internal/testharness).
type apiServer struct {
	*testharness.Server
	t        *testing.T
	bin      string
	runDir   string
	httpAddr string // bound addresses of the http and ws listeners, from status
	wsAddr   string
}

// buildTaskApp builds testdata/taskapp (with -race under -race).
func buildTaskApp(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "taskapp")
	args := []string{"build", "-o", bin}
	if apiRace {
		args = append(args, "-race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", append(args, "./testdata/taskapp")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./testdata/taskapp: %v\n%s", err, out)
	}
	return bin
}

// newAPIServer prepares a server of bin (see internal/testharness).
func newAPIServer(t *testing.T, bin string) *apiServer {
	h := testharness.New(t, bin)
	return &apiServer{Server: h, t: t, bin: bin, runDir: h.RunDir}
}

// startAPIServer runs `bin start --mode mode --workers 2 --task-workers 2`
// on port 0 of 127.0.0.1, waits until it serves, and registers a cleanup
// that stops it and checks that none of its processes is left.
func startAPIServer(t *testing.T, bin, mode string) *apiServer {
	t.Helper()
	s := newAPIServer(t, bin)
	s.Start(nil, "--mode", mode, "--workers", "2", "--task-workers", "2",
		"--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--log-format", "console")
	s.WaitReady(30*time.Second, func(st master.Status) error {
		s.readAddrs(st)
		if len(st.TaskWorkers) != 2 {
			return fmt.Errorf("%d task workers", len(st.TaskWorkers))
		}
		resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + s.httpAddr + "/hello")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET /hello: %d", resp.StatusCode)
		}
		return nil
	})
	return s
}

// readAddrs takes the listeners' bound addresses from st.
func (s *apiServer) readAddrs(st master.Status) {
	a := testharness.Addrs(st)
	s.httpAddr, s.wsAddr = a["http"], a["ws"]
}

func (s *apiServer) log() string { return s.Log() }

// status runs `status --json` and records every pid in it.
func (s *apiServer) status() (master.Status, error) { return s.StatusErr() }

// waitTasksIdle waits until no task worker has a task (a task that timed
// out for its sender still runs to its end in the task worker).
func (s *apiServer) waitTasksIdle() {
	s.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := s.status()
		if err != nil {
			s.t.Fatalf("status: %v", err)
		}
		busy := 0
		for _, w := range st.TaskWorkers {
			busy += w.TasksQueued
		}
		if busy == 0 {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("task workers still busy after 15s: %+v", st.TaskWorkers)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var apiClient = &http.Client{Timeout: 30 * time.Second}

// get fetches path (on a new connection when fresh, so the kernel or the
// dispatcher may pick another worker) and decodes its JSON into v.
func (s *apiServer) get(path string, fresh bool, v any) {
	s.t.Helper()
	c := apiClient
	if fresh {
		c = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	}
	resp, err := c.Get("http://" + s.httpAddr + path)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		s.t.Fatalf("GET %s: got %d %q", path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		s.t.Fatalf("GET %s: %v: %s", path, err, b)
	}
}

// TestAPI drives the worker API through testdata/taskapp, in both modes:
// tasks in their three shapes, timers, pipe messages, and the Sender and
// pipe messages from a task worker.
func TestAPI(t *testing.T) {
	bin := buildTaskApp(t)
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startAPIServer(t, bin, mode)
			t.Run("RemoteAddr", func(t *testing.T) { apiRemoteAddr(t, s) })
			t.Run("Task", func(t *testing.T) { apiTask(t, s) })
			t.Run("TaskWaitMulti", func(t *testing.T) { apiTaskWaitMulti(t, s) })
			t.Run("Timers", func(t *testing.T) { apiTimers(t, s) })
			t.Run("Pipe", func(t *testing.T) { apiPipe(t, s) })
			t.Run("TaskWorkerSender", func(t *testing.T) { apiTaskWorkerSender(t, s) })
		})
	}
}

// apiRemoteAddr: a handler sees the client's own address and port, in
// PROCESS mode too, where the master holds the socket and sends the address
// along with each request.
func apiRemoteAddr(t *testing.T, s *apiServer) {
	var local string
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				local = nc.LocalAddr().String()
			}
			return nc, err
		},
	}}
	resp, err := c.Get("http://" + s.httpAddr + "/remote")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct{ Addr, IP string }
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if r.Addr != local || r.IP != "127.0.0.1" {
		t.Errorf("handler saw RemoteAddr %q, RemoteIP %q; the client is %s", r.Addr, r.IP, local)
	}
}

type taskReply struct {
	Worker      int     `json:"worker"`
	Result      string  `json:"result"`
	Err         string  `json:"err"`
	Kind        string  `json:"kind"`
	ReturnedMs  float64 `json:"returned_ms"`
	FinishedMs  float64 `json:"finished_ms"`
	TookMs      float64 `json:"took_ms"`
	SameProcess bool    `json:"same_process"`
}

// apiTask: Task returns at once and its done callback gets the result (or
// the task's error) in the sending worker; TaskWait returns the result, the
// task's error wrapped in ErrTaskFailed, or ErrTimeout in time.
func apiTask(t *testing.T, s *apiServer) {
	var r taskReply
	timingAttempts(t, "Task(sleep 300ms)", func() string {
		s.get("/task?data="+url.QueryEscape("sleep|300"), false, &r)
		if r.Kind != "ok" || (r.Result != "2" && r.Result != "3") || !r.SameProcess {
			t.Errorf("Task(sleep 300ms): got %+v, want ok with a task worker id (2 or 3) in the sending process", r)
		}
		if r.FinishedMs < 290 {
			t.Errorf("Task(sleep 300ms): finished after %.1fms, before the task's 300ms", r.FinishedMs)
		}
		if r.ReturnedMs > 100 {
			return fmt.Sprintf("returned after %.1fms (finished after %.1fms); want it to return at once", r.ReturnedMs, r.FinishedMs)
		}
		return ""
	})
	s.get("/task?data="+url.QueryEscape("fail|no luck"), false, &r)
	if r.Kind != "failed" || r.Err != "forkd: task failed: no luck" {
		t.Errorf("Task(fail): got kind %q err %q, want failed \"forkd: task failed: no luck\"", r.Kind, r.Err)
	}

	tests := []struct {
		name, data, timeout string
		kind, result, err   string
	}{
		{name: "echo", data: "echo|hi", kind: "ok"},
		{name: "error", data: "fail|bad input", kind: "failed", err: "forkd: task failed: bad input"},
		{name: "panic", data: "panic", kind: "failed", err: "forkd: task failed: panic in OnTask"},
		{name: "timeout", data: "sleep|2000", timeout: "200", kind: "timeout", err: forkd.ErrTimeout.Error()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := "/taskwait?data=" + url.QueryEscape(tc.data)
			if tc.timeout != "" {
				path += "&timeout=" + tc.timeout
			}
			timingAttempts(t, "TaskWait("+tc.data+")", func() string {
				var r taskReply
				s.get(path, false, &r)
				if r.Kind != tc.kind || r.Err != tc.err {
					t.Errorf("TaskWait(%q): got kind %q err %q, want %q %q", tc.data, r.Kind, r.Err, tc.kind, tc.err)
				}
				if tc.name == "echo" {
					want0, want1 := fmt.Sprintf("hi@2<-%d", r.Worker), fmt.Sprintf("hi@3<-%d", r.Worker)
					if r.Result != want0 && r.Result != want1 {
						t.Errorf("TaskWait(echo): got %q, want %q or %q (task worker id, sending worker id)", r.Result, want0, want1)
					}
				}
				if tc.kind != "timeout" {
					return ""
				}
				if r.TookMs < 190 {
					t.Errorf("TaskWait with a 200ms timeout returned after %.1fms, before it", r.TookMs)
				}
				if r.TookMs > 1500 { // the task itself takes 2000ms
					return fmt.Sprintf("returned after %.1fms with a 200ms timeout", r.TookMs)
				}
				return ""
			})
		})
	}
}

// apiTaskWaitMulti: results and errors come in the order of the inputs,
// run in parallel over the pool, and a slow one times out alone.
func apiTaskWaitMulti(t *testing.T, s *apiServer) {
	var r struct {
		Results []string `json:"results"`
		Kinds   []string `json:"kinds"`
		Errs    []string `json:"errs"`
		TookMs  float64  `json:"took_ms"`
		Worker  int      `json:"worker"`
	}
	timingAttempts(t, "TaskWaitMulti", func() string {
		s.waitTasksIdle() // the timed-out tasks of apiTask (or of an attempt before) may still run
		q := url.Values{"d": {"echo|a", "fail|b", "echo|c", "sleep|300", "sleep|300"}}
		s.get("/multi?"+q.Encode(), false, &r)
		wantKinds := []string{"ok", "failed", "ok", "ok", "ok"}
		if fmt.Sprint(r.Kinds) != fmt.Sprint(wantKinds) {
			t.Fatalf("TaskWaitMulti kinds: got %v (%q), want %v", r.Kinds, r.Errs, wantKinds)
		}
		for i, prefix := range []string{"a@", "", "c@"} {
			if prefix != "" && !bytes.HasPrefix([]byte(r.Results[i]), []byte(prefix)) {
				t.Errorf("TaskWaitMulti result %d: got %q, want %s...", i, r.Results[i], prefix)
			}
		}
		if r.Errs[1] != "forkd: task failed: b" {
			t.Errorf("TaskWaitMulti error 1: got %q", r.Errs[1])
		}
		// Two 300ms tasks on two task workers run side by side (plus the
		// quick ones queued behind them at worst).
		if r.TookMs > 1200 {
			return fmt.Sprintf("took %.1fms, want the two 300ms tasks in parallel", r.TookMs)
		}
		return ""
	})
	timingAttempts(t, "TaskWaitMulti with a 300ms timeout", func() string {
		s.waitTasksIdle() // an attempt before left its 3 s task running: the echo must not queue behind it
		q := url.Values{"d": {"echo|x", "sleep|3000"}, "timeout": {"300"}}
		s.get("/multi?"+q.Encode(), false, &r)
		if fmt.Sprint(r.Kinds) != "[ok timeout]" {
			t.Errorf("TaskWaitMulti with a 300ms timeout: got %v, want [ok timeout]", r.Kinds)
		}
		if r.TookMs > 2000 { // the slow task takes 3000ms
			return fmt.Sprintf("returned after %.1fms, want promptly after the timeout", r.TookMs)
		}
		return ""
	})
}

// timingAttempts runs attempt, which checks what must hold every time
// itself (t.Errorf) and returns what went wrong with its timing ("" for
// nothing). A timing miss is tried again, up to three attempts: the bounds
// are wide for a server process of a race build, but one scheduling stall
// of a loaded machine (a second or two) can still take one attempt past
// them; a server that misses every time fails.
func timingAttempts(t *testing.T, what string, attempt func() string) {
	t.Helper()
	var misses []string
	for i := 0; i < 3; i++ {
		miss := attempt()
		if miss == "" || t.Failed() {
			return
		}
		t.Logf("%s, attempt %d: %s", what, i+1, miss)
		misses = append(misses, miss)
	}
	t.Errorf("%s: missed its timing in every attempt: %s", what, strings.Join(misses, "; "))
}

// apiTimers: Tick fires at its interval within tolerance and stops when
// cleared; a slow callback delays only its own timer; After fires once; a
// cleared After never fires; ClearTimer reports whether the timer was live.
func apiTimers(t *testing.T, s *apiServer) {
	type timersReply struct {
		Ticks           []float64 `json:"ticks_ms"`
		TicksAfterClear int       `json:"ticks_after_clear"`
		SlowRuns        int       `json:"slow_runs"`
		SlowAfterClear  int       `json:"slow_after_clear"`
		AfterMs         float64   `json:"after_ms"`
		ClearAfterFired bool      `json:"clear_after_fired"`
		ClearedFired    bool      `json:"cleared_fired"`
		ClearPending    bool      `json:"clear_pending"`
		ClearFirst      bool      `json:"clear_first"`
		ClearAgain      bool      `json:"clear_again"`
		TimersBefore    int       `json:"timers_before"`
		TimersDuring    int       `json:"timers_during"`
		TimersAfter     int       `json:"timers_after"`
	}
	timingAttempts(t, "timers", func() string {
		var r timersReply
		s.get("/timers", false, &r)
		t.Logf("ticks at %v ms; slow runs %d; after at %.1fms", r.Ticks, r.SlowRuns, r.AfterMs)
		// What holds however late the worker runs: never early, nothing
		// after a clear, ClearTimer's answers, no timer left.
		for i, at := range r.Ticks {
			if want := float64(50 * (i + 1)); at < want-5 {
				t.Errorf("tick %d at %.1fms, before its time (%.0fms)", i+1, at, want)
			}
		}
		if r.TicksAfterClear > 0 {
			t.Errorf("Tick kept firing after ClearTimer: %d more ticks", r.TicksAfterClear)
		}
		if r.SlowAfterClear > 0 {
			t.Errorf("slow Tick kept firing after ClearTimer: %d more runs", r.SlowAfterClear)
		}
		if r.AfterMs != 0 && r.AfterMs < 145 { // 0: not fired yet (below)
			t.Errorf("After(150ms) fired at %.1fms, before its time", r.AfterMs)
		}
		if r.ClearedFired || !r.ClearPending {
			t.Errorf("After cleared before firing: fired %v, ClearTimer returned %v; want not fired, true", r.ClearedFired, r.ClearPending)
		}
		if !r.ClearFirst || r.ClearAgain || r.AfterMs != 0 && r.ClearAfterFired {
			t.Errorf("ClearTimer: live Tick %v, again %v, fired After %v; want true, false, false", r.ClearFirst, r.ClearAgain, r.ClearAfterFired)
		}
		if r.TimersAfter != r.TimersBefore {
			t.Errorf("Stats timers: before %d, after %d; want back after", r.TimersBefore, r.TimersAfter)
		}
		// What a stall of the worker (a loaded machine) can move: the
		// counts over 600ms, the After's lateness, and whether the After
		// had fired already when Stats was read right after it was set.
		var miss []string
		// 600ms of a 50ms Tick: 12 ticks; allow a scheduler hiccup or two.
		if n := len(r.Ticks); n < 9 || n > 13 {
			miss = append(miss, fmt.Sprintf("Tick(50ms) over 600ms: %d ticks, want about 12", n))
		}
		// On average at the interval (a loaded machine may delay one tick,
		// and a Ticker then skips rather than bunches).
		if n := len(r.Ticks); n >= 2 {
			if mean := (r.Ticks[n-1] - r.Ticks[0]) / float64(n-1); mean < 45 || mean > 75 {
				miss = append(miss, fmt.Sprintf("Tick(50ms): mean interval %.1fms, want about 50ms", mean))
			}
		}
		// The slow Tick (200ms callback every 50ms) skips what it missed:
		// 3-4 runs; the fast one beside it was not slowed (checked above).
		if r.SlowRuns < 2 || r.SlowRuns > 5 {
			miss = append(miss, fmt.Sprintf("slow Tick: %d runs in 600ms, want 3-4", r.SlowRuns))
		}
		if r.AfterMs == 0 || r.AfterMs > 300 {
			miss = append(miss, fmt.Sprintf("After(150ms) fired at %.1fms (0: not within 900ms)", r.AfterMs))
		}
		if r.TimersDuring != r.TimersBefore+3 {
			miss = append(miss, fmt.Sprintf("Stats timers: before %d, during %d, want +3 while running", r.TimersBefore, r.TimersDuring))
		}
		return strings.Join(miss, "; ")
	})
}

type pipeReply struct {
	Worker     int    `json:"worker"`
	To         int    `json:"to"`
	Kind       string `json:"kind"`
	Err        string `json:"err"`
	PongFrom   int    `json:"pong_from"`
	PongWorker int    `json:"pong_worker"`
}

// apiPipe: SendMessage from worker 0 reaches worker 1's OnPipeMessage (and
// back), with the right from; an invalid worker id is an error.
func apiPipe(t *testing.T, s *apiServer) {
	seen := map[string]bool{}
	for try := 0; try < 100 && !(seen["0->1"] && seen["1->0"]); try++ {
		// Ask the serving worker to message the other one; a new connection
		// each time so both workers get to serve. The targets go 0, 0, 1, 1:
		// with connections spread alternately (--dispatch fd), a target that
		// simply alternated would meet the same worker's parity every time.
		to := (try / 2) % 2
		var r pipeReply
		s.get("/pipe?to="+strconv.Itoa(to), true, &r)
		if r.Worker == to {
			continue // it served itself; a self-message is fine but not the point
		}
		if r.Kind != "ok" || r.PongFrom != to || r.PongWorker != to {
			t.Fatalf("worker %d SendMessage(%d): got %+v, want a pong from worker %d", r.Worker, to, r, to)
		}
		seen[fmt.Sprintf("%d->%d", r.Worker, to)] = true
	}
	if !seen["0->1"] {
		t.Fatalf("never got worker 0 to message worker 1: %v", seen)
	}
	// A worker may message a task worker too (ids 2, 3), and itself.
	var r pipeReply
	s.get("/pipe?to=3", false, &r)
	if r.Kind != "ok" || r.PongFrom != 3 || r.PongWorker != 3 {
		t.Errorf("SendMessage(3) to a task worker: got %+v, want a pong from 3", r)
	}
	for _, to := range []string{"4", "99", "-1"} {
		var r pipeReply
		s.get("/pipe?to="+to, false, &r)
		if r.Kind != "unavailable" || r.Err != forkd.ErrUnavailable.Error() {
			t.Errorf("SendMessage(%s): got %+v, want ErrUnavailable", to, r)
		}
	}
}

// apiTaskWorkerSender: a task worker sends pipe messages and pushes to
// connections held anywhere, with real outcomes.
func apiTaskWorkerSender(t *testing.T, s *apiServer) {
	var r pipeReply
	s.get("/taskpipe", false, &r)
	if r.Kind != "ok" || (r.PongFrom != 2 && r.PongFrom != 3) || r.PongWorker != r.PongFrom {
		t.Errorf("a task worker's SendMessage back to worker %d: got %+v, want ok from task worker 2 or 3", r.Worker, r)
	}
	// Connections on both workers.
	perWorker := map[int]string{}
	var conns []*websocket.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for try := 0; try < 100 && len(perWorker) < 2; try++ {
		c, resp, err := websocket.DefaultDialer.Dial("ws://"+s.wsAddr+"/", nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		resp.Body.Close()
		conns = append(conns, c)
		var hello struct {
			Conn   string `json:"conn"`
			Worker int    `json:"worker"`
		}
		// The hello, then (same deadline) a push through a task worker.
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		if err := c.ReadJSON(&hello); err != nil {
			t.Fatalf("read hello: %v", err)
		}
		if _, ok := perWorker[hello.Worker]; !ok {
			perWorker[hello.Worker] = hello.Conn
			text := "from a task to " + hello.Conn
			var tr taskReply
			s.get("/taskpush?"+url.Values{"conn": {hello.Conn}, "text": {text}}.Encode(), false, &tr)
			if tr.Kind != "ok" || tr.Result != "ok" {
				t.Fatalf("task worker Push to conn %s on worker %d: got %+v, want ok", hello.Conn, hello.Worker, tr)
			}
			_, b, err := c.ReadMessage()
			if err != nil || string(b) != text {
				t.Fatalf("conn on worker %d: got %q, %v; want %q", hello.Worker, b, err, text)
			}
		}
	}
	if len(perWorker) < 2 {
		t.Fatalf("connections landed on workers %v only", perWorker)
	}
	var tr taskReply
	s.get("/taskpush?conn=1&text=x", false, &tr)
	if tr.Kind != "ok" || tr.Result != "noconn" {
		t.Errorf("task worker Push to an unknown id: got %+v, want ErrNoConnection", tr)
	}
}
