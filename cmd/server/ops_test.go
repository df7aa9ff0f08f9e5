package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestProcessTitles reads /proc/PID/cmdline of every process and checks
// its title (argv[0]) in both modes: master, workers, task workers.
func TestProcessTitles(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2, "--task-workers", "1", "--name", "shop")
			st := s.status()
			want := map[int]string{st.MasterPid: fmt.Sprintf("forkd: master [shop] (%s mode, 2 workers)", mode)}
			for _, w := range st.Workers {
				want[w.Pid] = fmt.Sprintf("forkd: worker %d [shop]", w.ID)
			}
			for _, w := range st.TaskWorkers {
				want[w.Pid] = fmt.Sprintf("forkd: task worker %d [shop]", w.ID-2)
			}
			if len(want) != 4 {
				t.Fatalf("got %d processes in status, want 4: %+v", len(want), st)
			}
			for pid, title := range want {
				if got := argv0(t, pid); got != title {
					t.Errorf("pid %d: got title %q, want %q", pid, got, title)
				}
			}
		})
	}
}

// argv0 returns a process's argv[0] as /proc shows it.
func argv0(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatalf("cmdline of %d: %v", pid, err)
	}
	first, _, _ := bytes.Cut(b, []byte{0})
	return string(first)
}

// logLine is what the test reads of a JSON log line.
type logLine struct {
	Role    string `json:"role"`
	Pid     int    `json:"pid"`
	Message string `json:"message"`
}

// readLog parses every line of a JSON log file: a line that does not parse
// (two processes' lines interleaved, a line cut) fails the test. Only for a
// file nothing writes to any more: see readLogSoFar.
func readLog(t *testing.T, path string) []logLine {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseLog(t, path, b)
}

// readLogSoFar is readLog on a file the server is still writing: the text
// after the last newline is a line being written (a reader can see part of
// a write that crosses a page boundary) and is left for the next read. The
// final readLog, once the writers are done, still fails a cut line.
func readLogSoFar(t *testing.T, path string) []logLine {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseLog(t, path, b[:bytes.LastIndexByte(b, '\n')+1])
}

func parseLog(t *testing.T, path string, b []byte) []logLine {
	t.Helper()
	var out []logLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Errorf("%s: a line that is not one JSON object: %q", filepath.Base(path), sc.Text())
			continue
		}
		out = append(out, l)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Errorf("%s ends mid-line", filepath.Base(path))
	}
	return out
}

// TestReopenLogs moves the log file away (as logrotate does, without
// copytruncate) while the server logs under load, then asks for a reopen,
// by `server reopen-logs` and by the signal (RTMIN+1): the new file gets lines
// from the master and every worker, and across the files no line is lost
// or cut (every "bad request" the load caused is there, once, whole).
func TestReopenLogs(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			logPath := filepath.Join(dir, "app.log")
			s := startServer(t, mode, 2, "--task-workers", "1", "--log-file", logPath, "--log-format", "json")
			st := s.status()
			pids := map[int]bool{st.MasterPid: true}
			for _, w := range append(st.Workers, st.TaskWorkers...) {
				pids[w.Pid] = true
			}

			// Load that logs: malformed requests, each logged once
			// ("bad request") before its 400 goes out.
			var sent atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for i := 0; i < 4; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						c, err := dialTCP(s.httpAddr)
						if err != nil {
							continue
						}
						c.Write([]byte("BAD\x01 / HTTP/1.1\r\n\r\n"))
						b := make([]byte, 512)
						n, _ := c.Read(b)
						c.Close()
						if bytes.HasPrefix(b[:n], []byte("HTTP/1.1 400")) {
							sent.Add(1)
						}
					}
				}()
			}

			rotate := func(n int, how func()) string {
				old := fmt.Sprintf("%s.%d", logPath, n)
				time.Sleep(100 * time.Millisecond) // some load into the current file
				if err := os.Rename(logPath, old); err != nil {
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond) // some into the moved one
				how()
				return old
			}
			var files []string
			files = append(files, rotate(1, func() {
				if out, err := s.run("reopen-logs"); err != nil {
					t.Fatalf("reopen-logs: %v\n%s", err, out)
				}
			}))
			checkReopened(t, logPath, pids, 10*time.Millisecond)
			files = append(files, rotate(2, func() {
				if err := syscall.Kill(st.MasterPid, syscall.Signal(35)); err != nil { // SIGRTMIN+1
					t.Fatal(err)
				}
			}))
			checkReopened(t, logPath, pids, 10*time.Second)
			time.Sleep(100 * time.Millisecond)
			close(stop)
			wg.Wait()
			files = append(files, logPath)

			bad := 0
			for _, f := range files {
				for _, l := range readLog(t, f) {
					if l.Message == "bad request" {
						bad++
					}
				}
			}
			if n := sent.Load(); n == 0 || int64(bad) != n {
				t.Errorf("got %d \"bad request\" lines across the files, want %d (one per malformed request)", bad, n)
			}
		})
	}
}

// checkReopened waits (up to limit) until the log file at path has a "log
// file reopened" line from every pid.
func checkReopened(t *testing.T, path string, pids map[int]bool, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		seen := map[int]bool{}
		if _, err := os.Stat(path); err == nil {
			for _, l := range readLogSoFar(t, path) {
				if l.Message == "log file reopened" {
					seen[l.Pid] = true
				}
			}
		}
		var missing []string
		for pid := range pids {
			if !seen[pid] {
				missing = append(missing, fmt.Sprint(pid))
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no reopen line from pids %s", filepath.Base(path), strings.Join(missing, ", "))
		}
		time.Sleep(25 * time.Millisecond)
	}
}
