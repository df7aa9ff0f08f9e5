package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// End-to-end tests: the scenarios against Baseline in this process, and Run
// against this test binary standing in for the server (see helperMain).

// useHelper makes children of this test binary run helperMain. A race-built
// child would sleep a second at every exit (GORACE atexit_sleep_ms), and
// `status` runs often.
func useHelper(t *testing.T) {
	t.Setenv(helperEnv, "1")
	t.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

// startBaseline runs Baseline in this process until the test ends.
func startBaseline(t *testing.T) *target {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	addrs := make(chan []string, 1)
	go func() {
		done <- serveBaseline(ctx, "127.0.0.1:0", "127.0.0.1:0", func(h, w string) { addrs <- []string{h, w} })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Baseline: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Baseline did not return within 10s of cancel")
		}
	})
	var bound []string
	select {
	case bound = <-addrs:
	case err := <-done:
		done <- err // for the cleanup
		t.Fatalf("Baseline: %v", err)
	}
	tg := &target{mode: modeBaseline, workers: 1, httpAddr: bound[0], wsAddr: bound[1], httpPath: "/hello", wsPath: "/echo", inProcess: true}
	if err := tg.waitReady(context.Background(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return tg
}

func TestScenariosAgainstBaseline(t *testing.T) {
	tg := startBaseline(t)
	o := Options{Conns: 8, Duration: 300 * time.Millisecond, Scenarios: []string{"http", "echo", "connect", "idle", "push"},
		IdleConns: 300, idleSettle: 50 * time.Millisecond}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	o.Progress = &lockedWriter{w: &progress}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rs, err := newSession(&o).runTarget(ctx, &tg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 5 {
		t.Fatalf("got %d results, want 5", len(rs))
	}
	for _, r := range rs {
		t.Run(r.Scenario, func(t *testing.T) {
			if r.Scenario == "push" {
				if !r.NA {
					t.Errorf("baseline push: got %+v, want n/a", r)
				}
				return
			}
			if r.Error != "" || r.Ops <= 0 || r.OpsPerSec <= 0 || r.P50us <= 0 || r.P99us < r.P50us || r.Errors != 0 {
				t.Errorf("got %+v", r)
			}
			if r.ServerCPU <= 0 || r.LoadgenCPU <= 0 || r.PeakRSSMiB <= 0 {
				t.Errorf("figures: got cpu %v loadgen %v rss %v", r.ServerCPU, r.LoadgenCPU, r.PeakRSSMiB)
			}
			if r.Scenario == "idle" && (r.Idle == nil || r.Idle.Conns != 300 || len(r.Idle.Procs) != 1) {
				t.Errorf("idle: got %+v", r.Idle)
			}
		})
	}
}

// progressLog logs progress lines that start a new phase.
type progressLog struct{ t *testing.T }

func (p progressLog) Write(b []byte) (int, error) {
	p.t.Log(time.Now().Format("15:04:05.000"), strings.TrimSpace(string(b)))
	return len(b), nil
}

// lockedWriter is a Writer safe for the meter's goroutine and the test.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestRunWithFakeServer(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	useHelper(t)
	dir := t.TempDir()
	var out bytes.Buffer
	o := Options{
		Exe: os.Args[0], Modes: []string{"process", "base"}, Workers: 2, Conns: 8,
		Duration: 300 * time.Millisecond, Out: filepath.Join(dir, "report.md"), Chart: filepath.Join(dir, "chart.svg"),
		Stdout: &out, Progress: progressLog{t}, IdleConns: 200, Members: 50, idleSettle: 50 * time.Millisecond,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := Run(ctx, o); err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	t.Logf("\n%s", out.String())
	table := out.String()
	for _, sc := range AllScenarios {
		for _, mode := range []string{"baseline", "process", "base"} {
			if !strings.Contains(table, "\n"+sc+" ") && !strings.HasPrefix(table, sc) {
				t.Errorf("no %s rows", sc)
			}
			_ = mode
		}
	}
	if n := strings.Count(table, "n/a"); n != 3*9 {
		t.Errorf("got %d n/a cells, want 27 (baseline push, uid-push and broadcast)", n)
	}
	if strings.Contains(table, " error ") || strings.Contains(table, "error:") {
		t.Errorf("a scenario failed:\n%s", table)
	}
	for _, f := range []string{o.Out, o.Chart} {
		if fi, err := os.Stat(f); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	// The JSON form parses and has every row.
	out.Reset()
	o.JSON, o.Out, o.Chart = true, "", ""
	o.Scenarios = []string{"http", "broadcast"}
	if err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("JSON: %v\n%s", err, out.String())
	}
	if len(rep.Results) != 6 {
		t.Errorf("JSON results: got %d, want 6", len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.Scenario == "broadcast" && r.Mode != "baseline" && (r.Broadcast == nil || r.Broadcast.Broadcasts == 0 || r.Ops != int64(r.Broadcast.Broadcasts)*50 && r.Ops < int64(r.Broadcast.Broadcasts)*50) {
			t.Errorf("broadcast: got %+v %+v", r, r.Broadcast)
		}
	}
}

func TestBroadcastServerLosesMembers(t *testing.T) {
	useHelper(t)
	t.Setenv("FORKD_BENCH_TEST_LOSE", "1")
	var out bytes.Buffer
	o := Options{Exe: os.Args[0], Modes: []string{"base"}, Workers: 1, Conns: 8, Duration: 300 * time.Millisecond,
		Scenarios: []string{"broadcast"}, Stdout: &out, JSON: true, Members: 50}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 1 || rep.Results[0].Mode != "base" {
		t.Fatalf("got %d results, want base only (no baseline row for broadcast alone)", len(rep.Results))
	}
	b := rep.Results[0].Broadcast
	if b == nil || b.Broadcasts == 0 || b.CountMismatch != b.Broadcasts || b.Incomplete != 0 {
		t.Errorf("got %+v, want every broadcast complete and flagged as a count mismatch", b)
	}
}

// children lists this process's live children.
func children(t *testing.T) []int {
	t.Helper()
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) {
			out = append(out, pid)
		}
	}
	return out
}

func TestRunCancelled(t *testing.T) {
	useHelper(t)
	o := Options{Exe: os.Args[0], Modes: []string{"process"}, Workers: 1, Conns: 8, Duration: 30 * time.Second,
		Stdout: new(bytes.Buffer), Scenarios: []string{"http"}}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	err := Run(ctx, o)
	if err == nil || !strings.Contains(err.Error(), "context deadline exceeded") {
		t.Errorf("got %v, want the context's error", err)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("Run took %v after cancel", d)
	}
	if kids := children(t); len(kids) > 0 {
		t.Errorf("processes left behind: %v", kids)
	}
}

func TestStartTargetNotReady(t *testing.T) {
	useHelper(t)
	// Only "hangs" waits out its deadline; the others end on their own, so
	// theirs is long enough for a loaded machine to notice the exit.
	tests := []struct {
		name, exe, hang, want string
		ready                 time.Duration
	}{
		{"exits", "/bin/false", "", "bench: server in mode base exited (exit status 1)", 30 * time.Second},
		// Long enough for the race-built helper to have started and said
		// why it hangs (the error must carry it) on a loaded machine: with
		// 500 ms the deadline could come before the child's first line.
		{"hangs", os.Args[0], "1", "bench: server in mode base did not become ready in 3s: ", 3 * time.Second},
		{"missing", "/nonexistent/server", "", "bench: start /nonexistent/server start --mode base", 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("FORKD_BENCH_TEST_HANG", tt.hang)
			o := Options{Exe: tt.exe, Workers: 1, readyTimeout: tt.ready}
			_ = o.setDefaults()
			_, err := startTarget(context.Background(), &o, "base")
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("got %v, want %q...", err, tt.want)
			}
			if tt.hang == "1" && (err == nil || !strings.Contains(err.Error(), "hanging instead of listening")) {
				t.Errorf("got %v, want the server's stderr in the error", err)
			}
			if kids := children(t); len(kids) > 0 {
				t.Errorf("processes left behind: %v", kids)
			}
		})
	}
}

// TestLoadgenAgainstWrk compares the http scenario with wrk -t1 -c64 on the
// same baseline server, in alternating 5-second rounds, and also measures
// the server's CPU under wrk. Opt in: FORKD_BENCH_WRK=1 (needs wrk in PATH);
// FORKD_BENCH_WRK_ROUNDS (default 3).
func TestLoadgenAgainstWrk(t *testing.T) {
	if os.Getenv("FORKD_BENCH_WRK") != "1" {
		t.Skip("set FORKD_BENCH_WRK=1 to compare with wrk")
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk not installed")
	}
	rounds := 3
	if n, _ := strconv.Atoi(os.Getenv("FORKD_BENCH_WRK_ROUNDS")); n > 0 {
		rounds = n
	}
	useHelper(t)
	const d = 5 * time.Second
	o := Options{Exe: os.Args[0], Conns: 64, Duration: d, Scenarios: []string{"http"}}
	_ = o.setDefaults()
	tg, err := startTarget(context.Background(), &o, modeBaseline)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.stop()
	// The server's own count, independent of both clients: bytes it wrote
	// (/proc/<pid>/io wchar) over the size of one /hello response.
	respLen := func() float64 {
		c, err := dialTCP(context.Background(), tg.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(httpGet(tg.httpAddr, "/hello"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 4096)
		n, _ := c.Read(buf)
		return float64(n)
	}()
	wchar := func() float64 {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(tg.cmd.Process.Pid) + "/io")
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "wchar: "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return 0
	}
	type figures struct{ rps, perCPU, serverCPU, genCPU float64 }
	runOurs := func() figures {
		w0 := wchar()
		rs, err := newSession(&o).runTarget(context.Background(), &tg)
		if err != nil {
			t.Fatal(err)
		}
		r := rs[0]
		t.Logf("  bench: %.0f responses counted, server wrote %.0f responses' worth (warm-up included)", float64(r.Ops), (wchar()-w0)/respLen)
		t.Logf("  bench: %.0f req/s, p50 %.0fus, p99 %.0fus, server CPU %.2fs, loadgen CPU %.2fs (%.1fus/req), %.0f req/server-CPU-s, %d errors",
			r.OpsPerSec, r.P50us, r.P99us, r.ServerCPU, r.LoadgenCPU, r.LoadgenCPU*1e6/float64(r.Ops), r.OpsPerCPU, r.Errors)
		return figures{r.OpsPerSec, r.OpsPerCPU, r.ServerCPU, r.LoadgenCPU}
	}
	runWrk := func() figures {
		cmd := exec.Command(wrk, "-t1", "-c64", "-d"+d.String(), "--latency", "http://"+tg.httpAddr+"/hello")
		m := newMeter(context.Background(), tg, "wrk", nil)
		m.begin(d, "req", nil)
		w0 := wchar()
		b, err := cmd.CombinedOutput()
		w := m.end()
		m.close()
		served := (wchar() - w0) / respLen
		if err != nil {
			t.Fatalf("wrk: %v\n%s", err, b)
		}
		var f figures
		var p50, p99 string
		for _, l := range strings.Split(string(b), "\n") {
			switch fs := strings.Fields(l); {
			case len(fs) == 2 && fs[0] == "Requests/sec:":
				f.rps, _ = strconv.ParseFloat(fs[1], 64)
			case len(fs) == 2 && fs[0] == "50%":
				p50 = fs[1]
			case len(fs) == 2 && fs[0] == "99%":
				p99 = fs[1]
			}
		}
		f.serverCPU = w.serverCPU.Seconds()
		f.perCPU = f.rps * w.elapsed.Seconds() / f.serverCPU
		f.genCPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
		t.Logf("  wrk:   %.0f responses counted, server wrote %.0f responses' worth", f.rps*d.Seconds(), served)
		t.Logf("  wrk:   %.0f req/s, p50 %s, p99 %s, server CPU %.2fs, wrk CPU %.2fs (%.1fus/req), %.0f req/server-CPU-s",
			f.rps, p50, p99, f.serverCPU, f.genCPU, f.genCPU*1e6/(f.rps*d.Seconds()), f.perCPU)
		return f
	}
	var ours, theirs []figures
	for round := range rounds {
		t.Logf("round %d", round)
		if round%2 == 0 {
			ours = append(ours, runOurs())
			theirs = append(theirs, runWrk())
		} else {
			theirs = append(theirs, runWrk())
			ours = append(ours, runOurs())
		}
	}
	median := func(fs []figures, get func(figures) float64) float64 {
		v := make([]float64, len(fs))
		for i, f := range fs {
			v[i] = get(f)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	rps := func(f figures) float64 { return f.rps }
	per := func(f figures) float64 { return f.perCPU }
	or, wr := median(ours, rps), median(theirs, rps)
	op, wp := median(ours, per), median(theirs, per)
	diff := (or - wr) / wr
	t.Logf("median of %d rounds: bench %.0f req/s, wrk %.0f req/s: %+.1f%%; req/server-CPU-s bench %.0f, wrk %.0f: %+.1f%%",
		rounds, or, wr, diff*100, op, wp, (op-wp)/wp*100)
	if math.Abs(diff) > 0.15 {
		t.Errorf("bench and wrk differ by %.1f%% (median req/s)", diff*100)
	}
}

// runTarget runs every scenario against *tp, in order (see runScenario).
func (s *session) runTarget(ctx context.Context, tp **target) ([]*Result, error) {
	var out []*Result
	ran := false
	for _, sc := range s.o.Scenarios {
		r, err := s.runScenario(ctx, tp, sc, &ran)
		out = append(out, r)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}
