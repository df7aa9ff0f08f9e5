package main

import (
	"context"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
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
