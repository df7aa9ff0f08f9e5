package command

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/forkd/forkd/master"
)

func stop(c *cli.Context) error {
	dir := c.String("run-dir")
	pid, err := master.ReadPid(dir)
	if err != nil {
		return err
	}
	if err := askStop(dir, c.Bool("graceful")); err != nil {
		return err
	}
	if err := waitGone(dir, pid, 2*time.Minute); err != nil {
		return err
	}
	fmt.Printf("server stopped (master pid %d)\n", pid)
	return nil
}

// askStop sends stop. The master answers before it stops, but the answer
// may be lost as it exits: only a refusal or a master that is not there
// is an error (said at once, not after waiting for an exit that will not
// come).
func askStop(dir string, graceful bool) error {
	_, err := master.Call(dir, master.Request{Cmd: "stop", Graceful: graceful}, 10*time.Second)
	if errors.Is(err, master.ErrNoAnswer) {
		return nil
	}
	return err
}

// waitGone waits until the master pid of dir has exited: it no longer
// holds the run dir's pid lock (which it keeps until it exits) and the
// process is gone (a zombie counts as gone). Another master that takes the
// run dir meanwhile (a `start` right after the stop) is not waited for.
func waitGone(dir string, pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if cur, err := master.ReadPid(dir); (err != nil || cur != pid) && pidGone(pid) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("server (pid %d) still running after %s", pid, limit)
}

// pidGone reports whether process pid has exited (or is a zombie, exited
// and not yet reaped by its parent).
func pidGone(pid int) bool {
	if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which may hold spaces and ')'.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && len(b) > i+2 {
		return b[i+2] == 'Z'
	}
	return false
}

func reload(c *cli.Context) error {
	resp, err := master.Call(c.String("run-dir"), master.Request{Cmd: "reload", TasksOnly: c.Bool("tasks-only"), TLSOnly: c.Bool("tls-only")}, 30*time.Minute)
	if resp != nil {
		printReload(resp.Reload)
	}
	return err
}

func printReload(lines []master.ReloadLine) {
	for _, l := range lines {
		if l.Note != "" {
			fmt.Printf("%s %d: %s\n", l.Kind, l.ID, l.Note)
			continue
		}
		fmt.Printf("%s %d: pid %d -> %d (%s)\n", l.Kind, l.ID, l.OldPid, l.NewPid, l.Took)
	}
}
