package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testharness"
	"github.com/forkd/forkd/master"
	natsserver "github.com/nats-io/nats-server/v2/server"
)

// noTokenOnCmdlines checks that no process of s (master, workers) shows
// token in /proc/PID/cmdline, that the master is the one read (its
// title), and that the API still wants and takes the token.
func noTokenOnCmdlines(t *testing.T, s *server, token, what string) {
	t.Helper()
	st := s.status()
	s.httpAddr = testharness.Addrs(st)["http"]
	pids := map[string]int{"master": st.MasterPid}
	for _, w := range append(st.Workers, st.TaskWorkers...) {
		pids[fmt.Sprintf("worker %d", w.ID)] = w.Pid
	}
	for name, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			t.Fatalf("%s: %s: %v", what, name, err)
		}
		if bytes.Contains(b, []byte(token)) {
			t.Errorf("%s: %s (pid %d): the token is on its command line: %q", what, name, pid, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
		if name == "master" && !bytes.HasPrefix(b, []byte("forkd: master")) {
			t.Errorf("%s: master pid %d: command line %q, want its title", what, pid, b)
		}
	}
	if code, _, body := apiCall(t, "127.0.0.1", s.httpAddr, "/broadcast?room=lobby", "", "x"); code != http.StatusUnauthorized {
		t.Errorf("%s: without the token: got %d %q, want 401", what, code, body)
	}
	if code, _, body := apiCall(t, "127.0.0.1", s.httpAddr, "/broadcast?room=lobby", "Bearer "+token, "x"); code != http.StatusOK {
		t.Errorf("%s: with the token: got %d %q, want 200", what, code, body)
	}
}

// TestAPITokenNotOnCmdline: --api-token given on the command line (both
// forms) is on no long-lived process's /proc/PID/cmdline: not the
// foreground master's, not a `start -d` or `restart -d` master's, not a
// worker's; the API still takes the token and refuses without it.
// PROCESS: foreground "--api-token T", then restart -d "--api-token=T".
// BASE: foreground "--api-token=T", stop, then start -d "--api-token T".
func TestAPITokenNotOnCmdline(t *testing.T) {
	const token = "cmdline-secret-4c1f9e7a"
	t.Setenv("FORKD_API_TOKEN", "")
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			first := []string{"--api-token", token}
			if mode == "base" {
				first = []string{"--api-token=" + token}
			}
			s := startServer(t, mode, 2, first...)
			var daemonPid int
			t.Cleanup(func() { killDaemon(t, s.RunDir, daemonPid) })
			noTokenOnCmdlines(t, s, token, "foreground "+first[0])

			before := s.status().MasterPid
			if mode == "process" {
				// The token is not recorded: a restart given it neither way is
				// refused (one line naming FORKD_API_TOKEN), the server untouched.
				if out, err := s.run("restart", "-d"); err == nil || !bytes.Contains([]byte(out), []byte("FORKD_API_TOKEN")) {
					t.Fatalf("restart without the token: err %v, output %q; want a refusal naming FORKD_API_TOKEN", err, out)
				}
				if pid, _ := master.ReadPid(s.RunDir); pid != before {
					t.Fatalf("the refused restart replaced the master (%d -> %d)", before, pid)
				}
				if out, err := s.run("restart", "-d", "--api-token="+token); err != nil {
					t.Fatalf("restart -d: %v\n%s", err, out)
				}
			} else {
				if out, err := s.run("stop"); err != nil {
					t.Fatalf("stop: %v\n%s", err, out)
				}
				if !waitPidGone(before, 10*time.Second) {
					t.Fatalf("master %d still running after stop", before)
				}
				if out, err := s.run("start", "-d", "--mode", "base", "--workers", "2", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0",
					"--log-file", s.RunDir+"/daemon.log", "--api-token", token); err != nil {
					t.Fatalf("start -d: %v\n%s", err, out)
				}
			}
			daemonPid, _ = master.ReadPid(s.RunDir)
			if daemonPid == before || daemonPid <= 0 {
				t.Fatalf("no new master (pid %d, before %d)", daemonPid, before)
			}
			waitFor(t, 20*time.Second, "the detached server ready", func() bool {
				st, err := s.statusErr()
				return err == nil && allReady(st)
			})
			noTokenOnCmdlines(t, s, token, "detached")
			if out, err := s.run("stop"); err != nil {
				t.Errorf("stop: %v\n%s", err, out)
			}
			if !waitPidGone(daemonPid, 10*time.Second) {
				t.Errorf("detached master %d still running after stop", daemonPid)
			}
		})
	}
}

// TestClusterTokenNotOnCmdline: --cluster-token likewise is on neither
// the master's nor a worker's command line, and in no worker's
// environment (workers never talk to NATS); the node still joins a NATS
// server that wants that token, so the master has it.
func TestClusterTokenNotOnCmdline(t *testing.T) {
	const token = "nats-secret-7d2b0c91"
	t.Setenv("FORKD_CLUSTER_TOKEN", "")
	ns := runNATS(t, &natsserver.Options{Host: "127.0.0.1", Port: natsserver.RANDOM_PORT,
		Authorization: token, NoSigs: true, NoLog: true})
	s := startServer(t, "base", 2, "--node", "tok1", "--cluster", natsURL(ns), "--cluster-token="+token)
	waitFor(t, 20*time.Second, "the node in its cluster", func() bool {
		st, err := s.statusErr()
		return err == nil && st.Cluster != nil && st.Cluster.Node != 0
	})
	st := s.status()
	pids := map[string]int{"master": st.MasterPid}
	for _, w := range st.Workers {
		pids[fmt.Sprintf("worker %d", w.ID)] = w.Pid
	}
	for name, pid := range pids {
		files := []string{"cmdline"}
		if name != "master" {
			files = append(files, "environ")
		}
		for _, f := range files {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if bytes.Contains(b, []byte(token)) {
				t.Errorf("%s (pid %d): the cluster token is in /proc/%d/%s", name, pid, pid, f)
			}
		}
	}
}

// TestClusterURLNotInWorkers: credentials in a --cluster URL given through
// FORKD_CLUSTER (as docs/cluster.md advises) reach the master, which joins
// a NATS server that wants them, and no worker's environment.
func TestClusterURLNotInWorkers(t *testing.T) {
	const token = "nats-url-secret-51c3e8"
	ns := runNATS(t, &natsserver.Options{Host: "127.0.0.1", Port: natsserver.RANDOM_PORT,
		Authorization: token, NoSigs: true, NoLog: true})
	t.Setenv("FORKD_CLUSTER_TOKEN", "")
	t.Setenv("FORKD_CLUSTER", "nats://"+token+"@"+ns.Addr().String())
	s := startServer(t, "base", 2, "--node", "url1")
	waitFor(t, 20*time.Second, "the node in its cluster", func() bool {
		st, err := s.statusErr()
		return err == nil && st.Cluster != nil && st.Cluster.Node != 0
	})
	st := s.status()
	if len(st.Workers) == 0 {
		t.Fatal("no workers in status")
	}
	for _, w := range st.Workers {
		for _, f := range []string{"cmdline", "environ"} {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", w.Pid, f))
			if err != nil {
				t.Fatalf("worker %d: %v", w.ID, err)
			}
			if bytes.Contains(b, []byte(token)) {
				t.Errorf("worker %d (pid %d): the cluster URL's token is in /proc/%d/%s", w.ID, w.Pid, w.Pid, f)
			}
		}
	}
}
