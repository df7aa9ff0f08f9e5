package command

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/forkd/forkd/master"
)

// readyPipe reports readiness (or the reason there is none) to the
// `start -d` that launched this master, once: "ok" and the lines to print,
// or the error.
func readyPipe() func(error, []string) {
	f := os.NewFile(3, "ready")
	var once sync.Once
	return func(err error, lines []string) {
		once.Do(func() {
			if err == nil {
				fmt.Fprintln(f, "ok")
				for _, l := range lines {
					fmt.Fprintln(f, l)
				}
			} else {
				fmt.Fprintln(f, err.Error())
			}
			f.Close()
		})
	}
}

// daemonize starts the master detached (own session, output to the log
// file) and returns once it reports ready, or with the reason it is not.
func daemonize(runDir, logFile, title string, argv []string) error {
	if os.Getenv("NOTIFY_SOCKET") != "" {
		// systemd (Type=notify) supervises the process it started: a
		// detached master has another pid, and this one would exit first.
		return errors.New("start: -d under systemd (NOTIFY_SOCKET is set): drop -d, systemd runs the server in the background itself")
	}
	if logFile == "" {
		logFile = filepath.Join(runDir, "server.log")
	}
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return err
	}
	if pid, err := master.ReadPid(runDir); err == nil {
		return fmt.Errorf("%w (pid %d, run dir %s)", master.ErrRunning, pid, runDir)
	} else if errors.Is(err, master.ErrPermission) {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return err
	}
	if err := master.CheckRunDir(runDir); err != nil {
		return err
	}
	lf, err := master.OpenNoFollow("log file", logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	defer lf.Close()
	logStart, _ := lf.Seek(0, io.SeekEnd)
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, argv...)
	cmd.Args[0] = title
	cmd.Env = append(os.Environ(), master.EnvRole+"="+master.RoleMaster)
	cmd.ExtraFiles = []*os.File{pw}
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		return fmt.Errorf("daemon: %w", err)
	}
	pw.Close()
	defer pr.Close()
	done := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(pr, 64<<10))
		done <- strings.TrimSpace(string(b))
	}()
	var msg string
	select {
	case msg = <-done:
	case <-time.After(2 * time.Minute):
		msg = "not ready after 2m"
	}
	first, rest, _ := strings.Cut(msg, "\n")
	if first != "ok" {
		if msg == "" {
			msg = "exited before it was ready" + lastLogLine(logFile, logStart) + "; see " + logFile
		}
		cmd.Process.Kill()
		cmd.Wait()
		return fmt.Errorf("start failed: %s", msg)
	}
	pid := cmd.Process.Pid // Release sets it to -1
	cmd.Process.Release()
	fmt.Printf("server started in the background (master pid %d), log: %s\n", pid, logFile)
	if rest != "" {
		fmt.Println(rest)
	}
	return nil
}

// lastLogLine returns ": LINE", the last line written to the log file
// since offset, or "".
func lastLogLine(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
		if len(last) > 300 {
			last = last[:300] + "..."
		}
		return ": " + last
	}
	return ""
}
