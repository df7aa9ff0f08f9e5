package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/master"
)

// TestStopConcurrent: several `stop`s at once, or a `stop` while SIGTERM
// stops the master, all end, and so does the master. On the old code the
// second stop request sat in the master's one-slot stop queue that nobody
// read any more, its control connection waited on it for ever, and the
// master, which waits for every control connection before it exits, hung
// after "server stopped" holding the pid lock: every stop said "still
// running after 2m0s" and a new start "already running".
func TestStopConcurrent(t *testing.T) {
	for _, how := range []string{"three-stops", "sigterm-and-stop"} {
		for _, mode := range []string{"process", "base"} {
			t.Run(how+"/"+mode, func(t *testing.T) {
				for round := 0; round < 3; round++ {
					s := startServer(t, mode, 2)
					stop := func() error {
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						defer cancel()
						out, err := exec.CommandContext(ctx, s.Bin, "stop", "--run-dir", s.RunDir).CombinedOutput()
						if err != nil && ctx.Err() != nil {
							t.Errorf("round %d: stop still waiting after 30s: %s", round, out)
						}
						return err
					}
					var wg sync.WaitGroup
					n := 3
					if how == "sigterm-and-stop" {
						n = 2
						if err := s.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
							t.Fatal(err)
						}
					}
					for i := 0; i < n; i++ {
						wg.Add(1)
						go func() {
							defer wg.Done()
							stop() // "not running" is a fair answer for a stop that came late
						}()
					}
					select {
					case <-s.Exited:
					case <-time.After(30 * time.Second):
						t.Fatalf("round %d: master still running 30s after %s", round, how)
					}
					wg.Wait()
				}
			})
		}
	}
}

// TestStopDuringStart: `stop` while a worker's start never ends. The
// master gives up on the start (its ready timeout, 30 s) and exits. On the
// old code the stop request was never read (Run had not reached its stop
// wait), the stop's control connection waited for ever, and Run, failing,
// waited for that connection: the master hung holding the pid lock.
func TestStopDuringStart(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	flag := filepath.Join(t.TempDir(), "hang-start")
	if err := os.WriteFile(flag, []byte("hang"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envTestServer, "1")
	t.Setenv(envFailStartFile, flag)
	s := newTestServer(t, "process")
	s.Bin = exe
	s.Start(nil, "--mode", "process", "--workers", "1", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--log-format", "console")
	waitFor(t, 20*time.Second, "the control socket", func() bool {
		_, err := os.Stat(filepath.Join(s.RunDir, master.SocketName))
		return err == nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	stopped := make(chan string, 1)
	go func() {
		out, _ := exec.CommandContext(ctx, s.Bin, "stop", "--run-dir", s.RunDir).CombinedOutput()
		stopped <- string(out)
	}()
	select {
	case <-s.Exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("master still running 60s after a stop during its start (ready timeout 30s):\n%s", s.log())
	}
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Errorf("stop still waiting 30s after the master exited")
	}
}
