package master

import (
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// The supervisor's seam to the operating system (tableflip's process/env):
// it starts worker processes through a starter and holds each as an
// osProcess, and it reads time through a clock. The Master holds the real
// ones (execStarter, realClock) unless a test puts fakes in their place
// (supervise_test.go: workers that speak the real ipc over os.Pipe, a
// clock the test moves).

// procSpec is everything a worker process is started with.
type procSpec struct {
	Path  string
	Args  []string // Args[0] is the process title
	Env   []string
	Files []*os.File // ExtraFiles: the child's fd 3, 4, ...
	// Output takes the child's stdout and stderr.
	Output     io.Writer
	Credential *syscall.Credential // nil: run as the master
}

// osProcess is one started worker process.
type osProcess interface {
	Pid() int
	// Kill ends the process now (SIGKILL).
	Kill() error
	// Wait blocks until the process has exited, reaps it and returns how
	// it ended (nil: exit status 0). Called once.
	Wait() error
}

// starter starts worker processes.
type starter interface {
	start(spec procSpec) (osProcess, error)
}

// execStarter starts every child from one goroutine locked to its OS
// thread for the master's whole life: Pdeathsig fires when the *thread*
// that forked the child exits (golang/go#27505), and this thread never
// does. Workers also exit on EOF from their ipc pipe, which covers every
// way a master can die.
type execStarter struct {
	reqs chan spawnReq
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func newExecStarter() *execStarter {
	s := &execStarter{reqs: make(chan spawnReq)}
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the master
		for r := range s.reqs {
			r.done <- r.cmd.Start()
		}
	}()
	return s
}

func (s *execStarter) start(spec procSpec) (osProcess, error) {
	cmd := exec.Command(spec.Path)
	cmd.Args = spec.Args
	cmd.Env = spec.Env
	cmd.ExtraFiles = spec.Files
	cmd.Stdin = nil
	cmd.Stdout = spec.Output
	cmd.Stderr = spec.Output
	// Credential: --user/--group. The master bound the ports already;
	// the worker starts as that user (setgroups, setgid, setuid before
	// exec: no way back to root).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: spec.Credential}
	done := make(chan error, 1)
	s.reqs <- spawnReq{cmd: cmd, done: done}
	if err := <-done; err != nil {
		return nil, err // the caller wraps it with the slot it started
	}
	return execProcess{cmd}, nil
}

type execProcess struct{ cmd *exec.Cmd }

func (p execProcess) Pid() int    { return p.cmd.Process.Pid }
func (p execProcess) Kill() error { return p.cmd.Process.Kill() }
func (p execProcess) Wait() error { return p.cmd.Wait() }

// clock is the supervisor's time: back-off, ready and drain deadlines,
// uptimes.
type clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
	AfterFunc(d time.Duration, f func()) stopper
}

// stopper is a timer AfterFunc started.
type stopper interface{ Stop() bool }

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (realClock) AfterFunc(d time.Duration, f func()) stopper {
	return time.AfterFunc(d, f)
}
