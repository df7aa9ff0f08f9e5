package forkd_test

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd/master"
)

// buildProcApp builds testdata/procapp (with -race under -race).
func buildProcApp(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "procapp")
	args := []string{"build", "-o", bin}
	if apiRace {
		args = append(args, "-race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", append(args, "./testdata/procapp")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./testdata/procapp: %v\n%s", err, out)
	}
	return bin
}

// TestUserProcess drives a user process (Server.Processes) through
// testdata/procapp in both modes: a worker's pipe message reaches it; it
// pushes to a connection held by a worker (or the master) and broadcasts to
// a room; its pipe message answers the worker. It shows in status with its
// title; SIGKILLed, it is restarted and works again; reload restarts it.
func TestUserProcess(t *testing.T) {
	bin := buildProcApp(t)
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startAPIServer(t, bin, mode)
			proc := func() master.WorkerStatus {
				st, err := s.status()
				if err != nil {
					t.Fatalf("status: %v", err)
				}
				if len(st.Processes) != 1 {
					t.Fatalf("status: got %d processes, want 1: %+v", len(st.Processes), st.Processes)
				}
				return st.Processes[0]
			}
			p := proc()
			if p.Kind != "process" || p.Name != "relay" || p.ID != 4 || p.State != master.StateReady {
				t.Fatalf("status: got %+v, want process relay, id 4 (after 2 workers and 2 task workers), ready", p)
			}
			if got, want := procArgv0(t, p.Pid), "forkd: process relay [procapp]"; got != want {
				t.Errorf("title: got %q, want %q", got, want)
			}

			d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
			ws, _, err := d.Dial("ws://"+s.wsAddr+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			read := func() string {
				ws.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, b, err := ws.ReadMessage()
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				return string(b)
			}
			id := read()
			relay := func(cmd string) {
				t.Helper()
				resp, err := apiClient.Get("http://" + s.httpAddr + "/relay?cmd=" + url.QueryEscape(cmd))
				if err != nil {
					t.Fatalf("relay %q: %v", cmd, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				_, text, _ := strings.Cut(strings.SplitN(cmd, " ", 2)[1], " ")
				if resp.StatusCode != 200 || string(b) != "ack "+text {
					t.Fatalf("relay %q: got %d %q, want 200 %q (the process's pipe message back)", cmd, resp.StatusCode, b, "ack "+text)
				}
			}
			check := func(round int) {
				t.Helper()
				text := fmt.Sprintf("pushed-%d", round)
				relay("push " + id + " " + text)
				if got := read(); got != text {
					t.Fatalf("push from the process: got %q, want %q", got, text)
				}
				text = fmt.Sprintf("room-%d", round)
				relay("room all " + text)
				if got := read(); got != text {
					t.Fatalf("broadcast from the process: got %q, want %q", got, text)
				}
			}
			check(1)

			// SIGKILLed: restarted, and working again.
			if err := syscall.Kill(p.Pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(20 * time.Second)
			for {
				q := proc()
				if q.Pid != p.Pid && q.State == master.StateReady {
					if q.Restarts != 1 {
						t.Errorf("restarts: got %d, want 1", q.Restarts)
					}
					p = q
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("process not restarted after 20s: %+v\n%s", q, s.log())
				}
				time.Sleep(25 * time.Millisecond)
			}
			check(2)

			// Reload restarts it too (the old one is gone before the new one runs).
			t0 := time.Now()
			out, err := exec.Command(bin, "reload", "--run-dir", s.runDir).CombinedOutput()
			t.Logf("reload took %s: %s", time.Since(t0), out)
			if err != nil {
				t.Fatalf("reload: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), fmt.Sprintf("process 4: pid %d -> ", p.Pid)) {
				t.Errorf("reload did not replace the process: %s", out)
			}
			if q := proc(); q.Pid == p.Pid || q.State != master.StateReady {
				t.Errorf("after reload: got %+v, want a new ready process", q)
			}
			// A PROCESS-mode connection survives the reload, silently (a
			// resumed connection is not new: OnOpen does not run again, so
			// nothing is sent, and it is still in its room); in BASE mode it
			// was its worker's, so open a new one.
			if mode != "process" {
				ws.Close()
				if ws, _, err = d.Dial("ws://"+s.wsAddr+"/", nil); err != nil {
					t.Fatal(err)
				}
				id = read()
			}
			check(3)
		})
	}
}

func procArgv0(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(b), "\x00")
	return first
}
