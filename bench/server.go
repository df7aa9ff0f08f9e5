package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	modeBaseline = "baseline"
	readyTimeout = 15 * time.Second
	stopTimeout  = 10 * time.Second
)

// proc is one server process and what it is.
type proc struct {
	pid  int
	role string // "master", "worker 0", "task 0", "baseline", ...
}

// target is a server under load: a spawned server binary in one mode, the
// spawned baseline, or (in tests) a baseline running in this process.
type target struct {
	mode     string
	workers  int
	httpAddr string
	wsAddr   string
	httpPath string // GET answering 200 (the HTTP scenario)
	wsPath   string // WebSocket echo (echo, connect, idle)

	httpListener, wsListener string // the listeners' names (for their bound addresses in status)

	exe     string
	runDir  string
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	waitErr error
	errPath string // the child's stderr

	inProcess bool  // pids are this process (tests)
	known     []int // every pid ever reported, killed at the end
}

// freeAddrs returns n distinct free loopback addresses, with ports in
// lo..hi (0, 0: any).
func freeAddrs(n, lo, hi int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var addrs []string
	port := lo
	for range n {
		var l net.Listener
		var err error
		if lo == 0 {
			l, err = net.Listen("tcp", "127.0.0.1:0")
		} else {
			for err = errors.New("none free"); port <= hi && l == nil; port++ {
				l, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
			}
		}
		if err != nil || l == nil {
			if lo != 0 {
				return nil, fmt.Errorf("bench: no %d free ports in %d-%d: %w", n, lo, hi, err)
			}
			return nil, fmt.Errorf("bench: pick a free port: %w", err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

// listenerArgs are the start flags that put listener name on addr.
func listenerArgs(name, addr string) []string {
	if name == "http" || name == "ws" {
		return []string{"--" + name, addr}
	}
	return []string{"--listen", name + "=" + addr}
}

// startTarget starts the server binary in mode (or the baseline) and waits
// until it answers on both ports. On error nothing is left running.
func startTarget(ctx context.Context, o *Options, mode string, extra ...string) (*target, error) {
	// Port 0: the server picks free ports and reports them (status --json,
	// or the baseline's line); waitReady reads them. Only --ports, a range
	// the user chose, makes bench pick the ports itself.
	addrs := make([]string, 2+len(o.OtherListeners))
	for i := range addrs {
		addrs[i] = "127.0.0.1:0"
	}
	if o.PortMin != 0 {
		var err error
		if addrs, err = freeAddrs(len(addrs), o.PortMin, o.PortMax); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "forkd-bench-"+mode+"-")
	if err != nil {
		return nil, fmt.Errorf("bench: run dir: %w", err)
	}
	t := &target{mode: mode, workers: o.Workers, httpAddr: addrs[0], wsAddr: addrs[1], httpPath: o.HTTPPath, wsPath: o.WSPath,
		httpListener: o.HTTPListener, wsListener: o.WSListener,
		exe: o.Exe, runDir: dir, done: make(chan struct{}), errPath: filepath.Join(dir, "bench-stderr.log")}
	var args []string
	if mode == modeBaseline {
		t.workers = 1
		args = []string{"bench-baseline", "--http", t.httpAddr, "--ws", t.wsAddr}
	} else {
		args = []string{"start", "--mode", mode, "--workers", strconv.Itoa(o.Workers), "--run-dir", dir, "--log-level", "warn"}
		args = append(args, listenerArgs(o.HTTPListener, t.httpAddr)...)
		if o.WSListener == o.HTTPListener {
			t.wsAddr = t.httpAddr
		} else {
			args = append(args, listenerArgs(o.WSListener, t.wsAddr)...)
		}
		for i, name := range o.OtherListeners {
			args = append(args, listenerArgs(name, addrs[2+i])...)
		}
		args = append(args, extra...)
	}
	errf, err := os.Create(t.errPath)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: %w", err)
	}
	t.cmd = exec.Command(o.Exe, args...)
	t.cmd.Stdout, t.cmd.Stderr = errf, errf
	if mode == modeBaseline {
		t.cmd.Env = o.BaselineEnv // nil: this process's
	}
	t.cmd.SysProcAttr = setpgid()
	if err := t.cmd.Start(); err != nil {
		errf.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: start %s %s: %w", o.Exe, strings.Join(args, " "), err)
	}
	errf.Close()
	if err := t.watch(ctx, o.readyTimeout); err != nil {
		return nil, err
	}
	return t, nil
}

// watch reaps the started process in the background (t.done closes when
// it is gone) and waits until it is ready; a target that is not is
// stopped.
func (t *target) watch(ctx context.Context, timeout time.Duration) error {
	go func() {
		t.waitErr = t.cmd.Wait()
		close(t.done)
	}()
	if err := t.waitReady(ctx, timeout); err != nil {
		t.stop()
		return err
	}
	return nil
}

// exited reports why the server process is gone, or nil while it runs.
func (t *target) exited() error {
	if t.cmd == nil {
		return nil
	}
	select {
	case <-t.done:
		why := "exit status 0" // before it was asked to stop: no server exits so
		if t.waitErr != nil {
			why = t.waitErr.Error()
		}
		return fmt.Errorf("bench: server in mode %s exited (%s)%s", t.mode, why, t.stderrTail())
	default:
		return nil
	}
}

// stderrTail returns what the child wrote that explains its end, for error
// messages: from a Go panic or fatal error on if there is one (the goroutine
// dump after it can be long), else the last lines. A long stderr is also
// kept whole in the temporary directory, and the message names the file.
func (t *target) stderrTail() string {
	b, err := os.ReadFile(t.errPath)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	b = bytes.TrimSpace(b)
	kept := ""
	if len(b) > 800 {
		name := filepath.Join(os.TempDir(), fmt.Sprintf("forkd-bench-%s-%d.log", t.mode, t.cmd.Process.Pid))
		if os.WriteFile(name, b, 0o644) == nil {
			kept = " (whole stderr: " + name + ")"
		}
	}
	if i := panicStart(b); i >= 0 {
		b = b[i:]
		if len(b) > 800 {
			b = b[:800]
		}
	} else if len(b) > 800 {
		b = b[len(b)-800:]
	}
	return kept + ": " + string(b)
}

// panicStart returns where a Go panic's or fatal error's report begins in
// b, or -1.
func panicStart(b []byte) int {
	for _, m := range [][]byte{[]byte("\npanic: "), []byte("\nfatal error: ")} {
		if bytes.HasPrefix(b, m[1:]) {
			return 0
		}
		if i := bytes.Index(b, m); i >= 0 {
			return i + 1
		}
	}
	return -1
}

func (t *target) remember(pid int) {
	for _, k := range t.known {
		if k == pid {
			return
		}
	}
	t.known = append(t.known, pid)
}

// stop stops the server and removes its run dir: `stop` (for the real
// server), then SIGTERM to its process group if it is still there, then
// SIGKILL to the group and to every pid it ever reported. Safe to call on
// any target; it never uses the caller's (maybe cancelled) context.
func (t *target) stop() error {
	if t.cmd == nil {
		return nil
	}
	defer os.RemoveAll(t.runDir)
	var errs []error
	exitedWithin := func(d time.Duration) bool {
		select {
		case <-t.done:
			return true
		case <-time.After(d):
			return false
		}
	}
	stopped := false
	if t.mode != modeBaseline && t.mode != modeNginx && t.exited() == nil {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		cmd := exec.CommandContext(ctx, t.exe, "stop", "--run-dir", t.runDir)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("bench: stop server in mode %s: %w: %s", t.mode, err, bytes.TrimSpace(out.Bytes())))
		} else if stopped = exitedWithin(5 * time.Second); !stopped {
			errs = append(errs, fmt.Errorf("bench: server in mode %s did not exit within 5s of stop", t.mode))
		}
	}
	if !stopped {
		_ = killGroup(t.cmd.Process.Pid, syscall.SIGTERM)
		exitedWithin(2 * time.Second)
	}
	_ = killGroup(t.cmd.Process.Pid, syscall.SIGKILL)
	for _, pid := range t.known { // workers that left the group, if any
		if sameExe(pid, t.exe) || t.mode == modeNginx && runsExe(pid, t.exe) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if !exitedWithin(5 * time.Second) {
		errs = append(errs, fmt.Errorf("bench: server process %d survived SIGKILL", t.cmd.Process.Pid))
	}
	if t.mode == modeBaseline {
		return nil // a signal is how it stops
	}
	return errors.Join(errs...)
}

// sameExe reports whether pid is alive and runs exe (so a recycled pid is
// never signalled).
func sameExe(pid int, exe string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	arg0, _, _ := bytes.Cut(b, []byte{0})
	return filepath.Base(string(arg0)) == filepath.Base(exe)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
