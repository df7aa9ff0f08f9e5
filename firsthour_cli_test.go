package forkd_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/forkd/forkd/master"
)

// TestFirstHour drives testdata/devapp, a program with listeners of its own
// (api, events, state: no "http", no "ws"), through what a new user meets
// first (issue 20). One build serves every subtest.
func TestFirstHour(t *testing.T) {
	app := buildDevApp(t)
	t.Run("help describes the program", func(t *testing.T) { testHelp(t, app) })
	t.Run("unknown commands and flags", func(t *testing.T) { testUnknown(t, app) })
	t.Run("unknown listener flags", func(t *testing.T) { testListenerFlags(t, app) })
	t.Run("daemon prints the reason", func(t *testing.T) { testDaemonReason(t, app) })
	t.Run("restart keeps settings", func(t *testing.T) { testRestart(t, app) })
	t.Run("resume runs no OnOpen", func(t *testing.T) { testResume(t, app) })
	t.Run("ids fit in 53 bits", func(t *testing.T) { testIDs(t, app) })
	t.Run("bench on other paths", func(t *testing.T) { testBench(t, app) })
	t.Run("watch", func(t *testing.T) { testWatch(t, app) })
	t.Run("recipe static files", func(t *testing.T) { testStatic(t, app) })
	t.Run("recipe TLS proxy", func(t *testing.T) { testTLSProxy(t, app) })
}

// testHelp: `start --help` names the program and its own listeners with
// their defaults, shows no flag for a listener it lacks, and prints no
// default twice.
func testHelp(t *testing.T, app devApp) {
	r := runCLI(t, "", app.bin, "start", "--help")
	if r.err != nil || r.stderr != "" {
		t.Fatalf("start --help: %v", r)
	}
	for _, want := range []string{"devapp start", "api", "127.0.0.1:9611", "events", "127.0.0.1:9612", "state", "127.0.0.1:9613", "--listen"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("start --help does not mention %q:\n%s", want, r.stdout)
		}
	}
	for _, bad := range []string{"0.0.0.0:9501", "0.0.0.0:9502", "--http", "--ws "} {
		if strings.Contains(r.stdout, bad) {
			t.Errorf("start --help mentions %q, which this program does not have:\n%s", bad, r.stdout)
		}
	}
	// Every flag's placeholder is "value" (or none): urfave/cli takes a
	// `quoted` part of a Usage for the placeholder, which once showed
	// "--name forkd: worker 0 [NAME]".
	flagLine := regexp.MustCompile(`^\s+--[a-z0-9-]+(, -[a-z])?( value( \[ --[a-z0-9-]+ value \])?)?\s{2,}\S`)
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.Count(l, "default") > 1 {
			t.Errorf("a default said twice: %q", l)
		}
		if strings.HasPrefix(strings.TrimSpace(l), "--") && !flagLine.MatchString(l) {
			t.Errorf("a flag with an odd placeholder: %q", l)
		}
	}
	top := runCLI(t, "", app.bin, "--help")
	if !strings.Contains(top.stdout, "devapp - a test program with listeners of its own") {
		t.Errorf("--help: got %q, want the program's name and usage", top.stdout)
	}
	bench := runCLI(t, "", app.bin, "bench", "--help")
	for _, f := range []string{"--modes", "--workers", "--conns", "--scenarios", "--http-path", "--ws-path", "--ports"} {
		re := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(f) + ` value\s+\S`)
		if !re.MatchString(bench.stdout) {
			t.Errorf("bench --help: %s has no help text:\n%s", f, bench.stdout)
		}
	}
}

// testUnknown: an unknown command or flag is one line on stderr with a
// hint and a non-zero exit; `help` works.
func testUnknown(t *testing.T, app devApp) {
	oneLine(t, "frobnicate", runCLI(t, "", app.bin, "frobnicate"), `unknown command "frobnicate"`, "devapp help")
	oneLine(t, "help frobnicate", runCLI(t, "", app.bin, "help", "frobnicate"), `unknown command "frobnicate"`)
	oneLine(t, "start --bogus", runCLI(t, "", app.bin, "start", "--bogus"), "unknown flag --bogus", "devapp start --help")
	oneLine(t, "stop -x", runCLI(t, "", app.bin, "stop", "-x"), "unknown flag -x")
	oneLine(t, "--bogus", runCLI(t, "", app.bin, "--bogus"), "unknown flag --bogus", "devapp help")
	// A stray argument ends flag parsing: refused, not started on the
	// defaults with the flags after it ignored.
	oneLine(t, "stop extra", runCLI(t, t.TempDir(), app.bin, "stop", "extra"), `stop: unexpected argument "extra"`, "devapp stop --help")
	oneLine(t, "start --workers 0 extra", runCLI(t, t.TempDir(), app.bin, "start", "--workers", "0", "extra", "--workers", "1"), `start: unexpected argument "extra"`)
	for _, args := range [][]string{{"help"}, {"help", "start"}, {}} {
		r := runCLI(t, "", app.bin, args...)
		if r.err != nil || r.stderr != "" || !strings.Contains(r.stdout, "start") {
			t.Errorf("%q: want the help on stdout, exit 0: %v", args, r)
		}
	}
	oneLine(t, "status, none running", runCLI(t, t.TempDir(), app.bin, "status"), "not running")
}

// testListenerFlags: --http and --ws (and their TLS flags) on a program
// without such listeners are refused like an unknown --listen name.
func testListenerFlags(t *testing.T, app devApp) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--http", "127.0.0.1:0"},
		{"--ws", "127.0.0.1:0"},
		{"--listen", "foo=127.0.0.1:0"},
		{"--listen", "http=127.0.0.1:0"},
		{"--http-tls-cert", "cert.pem", "--http-tls-key", "key.pem"},
		{"--ws-tls-cert", "cert.pem", "--ws-tls-key", "key.pem"},
	} {
		full := append([]string{"start", "--run-dir", filepath.Join(dir, "run")}, append(portZero, args...)...)
		r := runCLI(t, dir, app.bin, full...)
		oneLine(t, strings.Join(args, " "), r, "no listener named", "its listeners: api, events, state")
	}
	// The same in a config file.
	cfg := filepath.Join(dir, "c.yaml")
	writeFile(t, cfg, "http: 127.0.0.1:0\n")
	oneLine(t, "config http:", runCLI(t, dir, app.bin, append([]string{"start", "--config", cfg, "--run-dir", filepath.Join(dir, "run")}, portZero...)...), `no listener named "http"`)
}

// testDaemonReason: `start -d` that fails prints the reason, whether the
// parent can see it (a bad flag value) or only the detached master (a port
// in use).
func testDaemonReason(t *testing.T, app devApp) {
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	oneLine(t, "--workers 0 -d", runCLI(t, dir, app.bin, append([]string{"start", "--workers", "0", "-d", "--run-dir", run}, portZero...)...),
		"--workers must be at least 1")
	busy := holdPort(t)
	r := runCLI(t, dir, app.bin, "start", "-d", "--workers", "1", "--run-dir", run,
		"--listen", "api="+busy, "--listen", "events=127.0.0.1:0", "--listen", "state=127.0.0.1:0")
	oneLine(t, "port in use -d", r, "listener api", "address already in use")
	if strings.Contains(r.stderr, "see ") {
		t.Errorf("the reason is in the message, not in a log to look at: %q", r.stderr)
	}
	if _, err := master.ReadPid(run); err == nil {
		t.Errorf("a master runs after a failed start -d")
	}
}

// testRestart: restart keeps the running server's mode, workers and
// addresses (even ports it was given as 0); flags given to restart win;
// results go to stdout and nothing to stderr.
func testRestart(t *testing.T, app devApp) {
	s := newDevServer(t, app.bin)
	dir := s.dir
	s.Adopt()
	r := runCLI(t, dir, app.bin, append([]string{"start", "-d", "--mode", "base", "--workers", "1", "--run-dir", "run", "--task-workers", "1"}, portZero...)...)
	if r.err != nil || r.stderr != "" || !strings.Contains(r.stdout, "server started in the background") {
		t.Fatalf("start -d: want the result on stdout, nothing on stderr: %v", r)
	}
	addrs := parseReady(r.stdout)
	if len(addrs) != 3 || addrs["api root"] == "" {
		t.Fatalf("start -d: ready lines %v, want api root, events and state with their addresses:\n%s", addrs, r.stdout)
	}
	if resp, body := get(t, addrs["api root"], "/ping"); resp.StatusCode != 200 || string(body) != "pong" {
		t.Fatalf("GET /ping on the ready line's address: %d %q", resp.StatusCode, body)
	}
	before := s.status()
	check := func(what string, workers int) master.Status {
		t.Helper()
		st := s.status()
		if st.Mode != "base" || len(st.Workers) != workers || len(st.TaskWorkers) != 1 {
			t.Errorf("%s: mode %s with %d workers and %d task workers, want base with %d and 1", what, st.Mode, len(st.Workers), len(st.TaskWorkers), workers)
		}
		if len(st.Listeners) != len(before.Listeners) {
			t.Fatalf("%s: listeners %+v, want %+v", what, st.Listeners, before.Listeners)
		}
		for i, l := range st.Listeners {
			if l.Addr != before.Listeners[i].Addr {
				t.Errorf("%s: listener %s on %s, want %s as before", what, l.Name, l.Addr, before.Listeners[i].Addr)
			}
		}
		if st.MasterPid == before.MasterPid {
			t.Errorf("%s: same master pid %d: not restarted", what, st.MasterPid)
		}
		return st
	}
	// From another directory, with an absolute run dir: relative paths are
	// the original start's.
	r = runCLI(t, t.TempDir(), app.bin, "restart", "--run-dir", s.runDir)
	if r.err != nil || r.stderr != "" || !strings.Contains(r.stdout, "server stopped") || !strings.Contains(r.stdout, "server started") {
		t.Fatalf("restart: %v", r)
	}
	check("restart", 1)
	r = runCLI(t, dir, app.bin, "restart", "--run-dir", "run", "--workers", "2")
	if r.err != nil {
		t.Fatalf("restart --workers 2: %v", r)
	}
	check("restart --workers 2", 2)
	// reopen-logs (the -d server logs to run/server.log): its result on
	// stdout too.
	r = runCLI(t, dir, app.bin, "reopen-logs", "--run-dir", "run")
	if r.err != nil || r.stderr != "" || !strings.Contains(r.stdout, "log file reopened") {
		t.Errorf("reopen-logs: want the result on stdout, nothing on stderr: %v", r)
	}
	r = runCLI(t, dir, app.bin, "stop", "--run-dir", "run")
	s.Stopped = true
	if r.err != nil || r.stderr != "" || !strings.HasPrefix(r.stdout, "server stopped") {
		t.Errorf("stop: want the result on stdout, nothing on stderr: %v", r)
	}
}

// writeFile writes s to name or fails the test.
func writeFile(t *testing.T, name, s string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitUntil polls cond until it holds or limit passes.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
