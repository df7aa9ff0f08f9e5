package sysmon

import (
	"os"
	"strings"
	"syscall"
)

// Env set to "default" keeps the Go runtime's own sysmon behaviour
// in the server's processes (see KeepAwake). KeepAwake sets
// it to "added" in the environment it re-executes with.
const Env = "FORKD_SYSMON"

// sysmonSetting keeps sysmon out of its deep sleep: schedtrace's period in
// milliseconds, the largest the runtime accepts (about 24.8 days).
const sysmonSetting = "schedtrace=2147483647"

// KeepAwake re-executes the master with GODEBUG=schedtrace set to
// its largest period, unless it already runs so (the workers inherit the
// environment) or Env says "default".
//
// Why: when every P of a Go process is idle, its sysmon thread parks in a
// deep sleep, and the next system call of any goroutine wakes it with a
// futex. A server process that idles for a moment between batches (a
// PROCESS-mode worker is idle most of the time at full load) pays that
// wake-up, and the 20us polling that follows, on every batch: about a
// third of its context switches. With schedtrace set, sysmon never takes
// the deep sleep (so that it could print on time) and backs off to its
// 10 ms tick instead; at this period it prints nothing in practice (once
// at start on a machine up for longer than the period, and on a fatal
// crash a scheduler summary before the stack). On the 2-core machine of
// docs/BENCHMARKS.md this is worth 20-40% more requests per CPU-second in
// every mode. The cost: an idle process wakes 100 times a second.
//
// The same re-execution gives the master its process title (argv[0], what
// ps and /proc/PID/cmdline show) when title is not empty: exec is the one
// way to set a Go process's whole command line without cgo, and the master
// pays it once at start. It keeps the pid, the open descriptors (sockets
// systemd passed) and the arguments.
//
// It re-executes with argv (the program name first; nil: os.Args: restart
// runs a start with the arguments it merged) and returns only when it did
// not re-execute.
func KeepAwake(title string, argv []string) {
	env, changed := os.Environ(), false
	if os.Getenv(Env) != "default" {
		if env, changed = withSysmonSetting(env); changed {
			env = append(env, Env+"=added")
		}
	}
	args := argv
	if args == nil {
		args = os.Args
	}
	if title != "" && (len(args) == 0 || args[0] != title) {
		rest := []string{}
		if len(args) > 0 {
			rest = args[1:]
		}
		args = append([]string{title}, rest...)
		changed = true
	}
	if !changed {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	_ = syscall.Exec(exe, args, env) // returns only on failure: run as we are
}

// withSysmonSetting returns env with sysmonSetting added to GODEBUG, and
// whether it changed anything (a GODEBUG that names schedtrace is the
// user's choice and left alone).
func withSysmonSetting(env []string) ([]string, bool) {
	out := make([]string, 0, len(env)+1)
	found := false
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "GODEBUG="); ok {
			found = true
			for _, kv := range strings.Split(v, ",") {
				if strings.HasPrefix(strings.TrimSpace(kv), "schedtrace=") {
					return env, false
				}
			}
			if v != "" {
				v += ","
			}
			e = "GODEBUG=" + v + sysmonSetting
		}
		out = append(out, e)
	}
	if !found {
		out = append(out, "GODEBUG="+sysmonSetting)
	}
	return out, true
}

// PlainEnv returns the environment without what KeepAwake added: what
// bench gives its baseline, a plain fasthttp process as a user runs it
// (unless --tuned-baseline).
func PlainEnv() []string {
	env := os.Environ()
	if os.Getenv(Env) != "added" {
		return env
	}
	out := env[:0:0]
	for _, e := range env {
		if strings.HasPrefix(e, Env+"=") {
			continue
		}
		if v, ok := strings.CutPrefix(e, "GODEBUG="); ok {
			var keep []string
			for _, kv := range strings.Split(v, ",") {
				if kv != sysmonSetting {
					keep = append(keep, kv)
				}
			}
			if len(keep) == 0 {
				continue
			}
			e = "GODEBUG=" + strings.Join(keep, ",")
		}
		out = append(out, e)
	}
	return out
}
