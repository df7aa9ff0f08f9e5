package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd/master"
)

// remoteSource stands in for a client on another machine: an address of
// lo outside the API's default (127.0.0.1 and ::1 only; see forkd.APIGuard).
const remoteSource = "127.0.0.2"

// apiCall POSTs body to path on addr from the local address src, with an
// Authorization header when auth is not empty, and returns the status,
// the WWW-Authenticate header and the body.
func apiCall(t testing.TB, src, addr, path, auth, body string) (int, string, string) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "POST " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n"
	if auth != "" {
		req += "Authorization: " + auth + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"+body); err != nil {
		t.Fatal(err)
	}
	r, b := readHTTP(t, bufio.NewReader(c))
	return r.StatusCode, r.Header.Get("WWW-Authenticate"), b
}

// enterChat opens /chat in room and returns the connection and its id.
func enterChat(t testing.TB, s *server, room, name string) (*websocket.Conn, string) {
	t.Helper()
	c := s.dial(s.wsAddr, "/chat?room="+room+"&name="+name)
	m := readJSON(t, c, 10*time.Second)
	if m.Type != "welcome" {
		t.Fatalf("first message: got %+v, want welcome", m)
	}
	return c, m.Conn
}

// nothingForged reads c until the line marker arrives (pushed legitimately
// after the attacks) and fails if anything from "admin" came before it.
func nothingForged(t testing.TB, c *websocket.Conn, marker string) {
	t.Helper()
	for {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("victim: read: %v (waiting for %q)", err, marker)
		}
		if string(b) == marker {
			return
		}
		if bytes.Contains(b, []byte(`"admin"`)) {
			t.Fatalf("victim received a forged message: %s", b)
		}
	}
}

const forged = `{"type":"message","room":"lobby","from":"admin","text":"send me your password"}`

// TestAPIDefaultLoopbackOnly: with no token, the push API answers only
// 127.0.0.1/::1; a client from another address (127.0.0.2 here) guessing
// its neighbour's id (its own minus 1 and 2) gets 403 and nothing reaches
// the victim; --api-allow widens the rule.
func TestAPIDefaultLoopbackOnly(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2)
			victim, vid := enterChat(t, s, "lobby", "victim")
			_, _ = enterChat(t, s, "lobby", "bystander")
			_, aid := enterChat(t, s, "lobby", "attacker")
			a, _ := strconv.ParseUint(aid, 10, 64)
			for _, guess := range []uint64{a - 1, a - 2} {
				code, _, body := apiCall(t, remoteSource, s.httpAddr, "/push?conn="+strconv.FormatUint(guess, 10), "", forged)
				if code != http.StatusForbidden {
					t.Errorf("push from %s: got %d %q, want 403", remoteSource, code, body)
				}
			}
			// The users API too (issue 19): pushing to a user, who is
			// online, a room's members, a connection's session.
			for _, path := range []string{"/broadcast?room=lobby", "/push?uid=victim", "/online?uid=victim", "/room?room=lobby", "/session?conn=" + vid} {
				if code, _, body := apiCall(t, remoteSource, s.httpAddr, path, "", forged); code != http.StatusForbidden {
					t.Errorf("%s from %s: got %d %q, want 403", path, remoteSource, code, body)
				}
			}
			if code, _, body := apiCall(t, "127.0.0.1", s.httpAddr, "/push?conn="+vid, "", "marker"); code != 200 {
				t.Fatalf("push from 127.0.0.1: got %d %q, want 200", code, body)
			}
			nothingForged(t, victim, "marker")
		})
	}
	t.Run("api-allow", func(t *testing.T) {
		s := startServer(t, "base", 2, "--api-allow", remoteSource+"/32")
		victim, vid := enterChat(t, s, "lobby", "victim")
		if code, _, body := apiCall(t, remoteSource, s.httpAddr, "/push?conn="+vid, "", "allowed"); code != 200 {
			t.Fatalf("push from %s with --api-allow: got %d %q, want 200", remoteSource, code, body)
		}
		nothingForged(t, victim, "allowed")
		// The list widens the default: 127.0.0.1 still may; 127.0.0.3 may not.
		if code, _, body := apiCall(t, "127.0.0.1", s.httpAddr, "/push?conn="+vid, "", "local"); code != 200 {
			t.Errorf("push from 127.0.0.1 with --api-allow %s/32: got %d %q, want 200", remoteSource, code, body)
		}
		nothingForged(t, victim, "local")
		if code, _, _ := apiCall(t, "127.0.0.3", s.httpAddr, "/push?conn="+vid, "", forged); code != http.StatusForbidden {
			t.Errorf("push from 127.0.0.3 with --api-allow %s/32: got %d, want 403", remoteSource, code)
		}
	})
}

// TestAPIToken: with a token, a missing or wrong one is 401 with
// WWW-Authenticate and nothing is pushed, even from loopback; the right
// one works from any address. The token comes from the flag, the
// environment or a file, and never reaches a worker's command line or
// environment.
func TestAPIToken(t *testing.T) {
	const token = "s3cret-token-for-tests"
	for _, tc := range []struct{ mode, source string }{
		{mode: "process", source: "flag"}, {mode: "base", source: "env"}, {mode: "base", source: "file"},
	} {
		t.Run(tc.mode+"-"+tc.source, func(t *testing.T) {
			var args []string
			switch tc.source {
			case "flag":
				args = []string{"--api-token", token}
			case "env":
				t.Setenv("FORKD_API_TOKEN", token)
			case "file":
				f := filepath.Join(t.TempDir(), "token")
				os.WriteFile(f, []byte(token+"\n"), 0o600)
				args = []string{"--api-token-file", f}
			}
			s := startServer(t, tc.mode, 2, args...)
			victim, vid := enterChat(t, s, "lobby", "victim")
			for _, c := range []struct {
				name, auth, wantAuth string
			}{
				{name: "missing", auth: "", wantAuth: `Bearer realm="forkd"`},
				{name: "wrong", auth: "Bearer " + token + "x", wantAuth: `Bearer realm="forkd", error="invalid_token"`},
				{name: "prefix", auth: "Bearer " + token[:5], wantAuth: `Bearer realm="forkd", error="invalid_token"`},
				{name: "basic", auth: "Basic " + token, wantAuth: `Bearer realm="forkd", error="invalid_token"`},
			} {
				for _, path := range []string{"/push?conn=" + vid, "/broadcast?room=lobby", "/push?uid=victim", "/online?uid=victim", "/room?room=lobby", "/session?conn=" + vid} {
					code, www, body := apiCall(t, "127.0.0.1", s.httpAddr, path, c.auth, forged)
					if code != http.StatusUnauthorized || www != c.wantAuth {
						t.Errorf("%s token, %s: got %d (WWW-Authenticate %q) %q, want 401 with %q", c.name, path, code, www, body, c.wantAuth)
					}
				}
			}
			for _, src := range []string{"127.0.0.1", remoteSource} {
				code, _, body := apiCall(t, src, s.httpAddr, "/push?conn="+vid, "Bearer "+token, "marker from "+src)
				if code != 200 {
					t.Fatalf("right token from %s: got %d %q, want 200", src, code, body)
				}
				nothingForged(t, victim, "marker from "+src)
			}
			code, _, body := apiCall(t, remoteSource, s.httpAddr, "/broadcast?room=lobby", "bearer "+token, "to all")
			if code != 200 || body != "1" {
				t.Errorf("broadcast with the token: got %d %q, want 200 1", code, body)
			}
			// The secret is in no worker's command line or environment.
			for id, pid := range s.workerPids() {
				for _, f := range []string{"cmdline", "environ"} {
					b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
					if err != nil {
						t.Fatalf("worker %d: %v", id, err)
					}
					if bytes.Contains(b, []byte(token)) {
						t.Errorf("worker %d (pid %d): the token is in /proc/%d/%s", id, pid, pid, f)
					}
				}
			}
			if strings.Contains(s.log(), token) {
				t.Errorf("the token appears in the server log")
			}
		})
	}
}

// TestAPITokenRestart: a server that took its API token from
// FORKD_API_TOKEN keeps it across `restart`. The token is not written to
// the start record, so a restart from an environment without it is
// refused with one line naming the variable, and the running server is
// untouched (before, it was restarted with no token at all); with it, the
// restarted server still wants the token.
func TestAPITokenRestart(t *testing.T) {
	const token = "env-token-kept-across-restart"
	t.Setenv("FORKD_API_TOKEN", token)
	s := startServer(t, "process", 1)
	before := s.status()
	var newPid int
	t.Cleanup(func() { killDaemon(t, s.RunDir, newPid) })

	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "FORKD_API_TOKEN=") {
			env = append(env, e)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, serverBin, "restart", "-d", "--run-dir", s.RunDir)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "FORKD_API_TOKEN") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Errorf("restart without FORKD_API_TOKEN: err %v, output %q; want one line naming FORKD_API_TOKEN, exit 1", err, out)
	}
	if newPid, _ = master.ReadPid(s.RunDir); newPid != before.MasterPid {
		t.Fatalf("the refused restart replaced the master (%d -> %d)", before.MasterPid, newPid)
	}
	if code, _, body := apiCall(t, "127.0.0.1", s.httpAddr, "/broadcast?room=lobby", "", "x"); code != http.StatusUnauthorized {
		t.Errorf("no token after the refused restart: got %d %q, want 401", code, body)
	}

	if out, err := s.run("restart", "-d"); err != nil {
		t.Fatalf("restart with FORKD_API_TOKEN: %v\n%s", err, out)
	}
	newPid, _ = master.ReadPid(s.RunDir)
	if after := s.status(); after.MasterPid == before.MasterPid {
		t.Fatalf("restart kept master %d", before.MasterPid)
	}
	if code, _, body := apiCall(t, "127.0.0.1", s.httpAddr, "/broadcast?room=lobby", "", "x"); code != http.StatusUnauthorized {
		t.Errorf("no token after restart: got %d %q, want 401", code, body)
	}
	if code, _, body := apiCall(t, "127.0.0.1", s.httpAddr, "/broadcast?room=lobby", "Bearer "+token, "x"); code != 200 {
		t.Errorf("the token after restart: got %d %q, want 200", code, body)
	}
	if out, err := s.run("stop"); err != nil {
		t.Errorf("stop after restart: %v\n%s", err, out)
	}
	if !waitPidGone(newPid, 10*time.Second) {
		t.Errorf("restarted master %d still running after stop", newPid)
	}
}

// upgradeStatus dials a WebSocket with the given Origin ("" for none)
// and returns the HTTP status of the answer (101 when it upgraded).
func upgradeStatus(t testing.TB, addr, origin string) int {
	t.Helper()
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial("ws://"+addr+"/echo", h)
	if err == nil {
		c.Close()
		return 101
	}
	if resp == nil {
		t.Fatalf("dial with Origin %q: %v", origin, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestOriginCheck: an upgrade whose Origin is not this server is 403
// (cross-site WebSocket hijacking); no Origin is served; the list widens.
func TestOriginCheck(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2)
			_, httpPort, _ := net.SplitHostPort(s.httpAddr)
			for _, c := range []struct {
				name, addr, origin string
				want               int
			}{
				{name: "none", addr: s.wsAddr, origin: "", want: 101},
				{name: "same", addr: s.wsAddr, origin: "http://" + s.wsAddr, want: 101},
				{name: "same by upgrade", addr: s.httpAddr, origin: "http://" + s.httpAddr, want: 101},
				{name: "page on the http port", addr: s.wsAddr, origin: "http://127.0.0.1:" + httpPort, want: 101},
				{name: "other site", addr: s.wsAddr, origin: "https://evil.example", want: 403},
				{name: "other site by upgrade", addr: s.httpAddr, origin: "http://evil.example", want: 403},
				{name: "same host, a port not ours", addr: s.wsAddr, origin: "http://127.0.0.1:1", want: 403},
				{name: "null", addr: s.wsAddr, origin: "null", want: 403},
			} {
				if got := upgradeStatus(t, c.addr, c.origin); got != c.want {
					t.Errorf("%s (Origin %q): got %d, want %d", c.name, c.origin, got, c.want)
				}
			}
		})
	}
	t.Run("listed", func(t *testing.T) {
		s := startServer(t, "base", 1, "--allowed-origins", "https://a.example,https://*.b.example")
		for _, c := range []struct {
			origin string
			want   int
		}{
			{"https://a.example", 101}, {"https://x.b.example", 101}, {"https://y.x.b.example", 101},
			{"https://b.example", 403}, {"http://a.example", 403}, {"https://evil.example", 403},
			{"https://a.example:8443", 403}, {"", 101},
		} {
			if got := upgradeStatus(t, s.wsAddr, c.origin); got != c.want {
				t.Errorf("Origin %q: got %d, want %d", c.origin, got, c.want)
			}
		}
	})
	t.Run("any", func(t *testing.T) {
		s := startServer(t, "process", 1, "--allowed-origins", "*")
		if got := upgradeStatus(t, s.wsAddr, "https://evil.example"); got != 101 {
			t.Errorf("--allowed-origins *: got %d, want 101", got)
		}
	})
}

// TestMaxConnPerIP: beyond N connections from one address, HTTP gets 503
// and WebSocket close 1013; other addresses are unaffected; a closed
// connection frees its place. In BASE mode the connections spread over
// both workers and the limit holds across them.
func TestMaxConnPerIP(t *testing.T) {
	const limit = 4
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2, "--max-conn-per-ip", strconv.Itoa(limit))
			s.closeIdleClients(t) // the readiness probe's connection counts until the server has seen it close
			var held []*websocket.Conn
			workers := map[int]int{}
			for i := 0; i < limit; i++ {
				c, err := s.dialErr(s.wsAddr, "/chat?room=perip")
				if err != nil {
					t.Fatalf("connection %d of %d: %v", i+1, limit, err)
				}
				t.Cleanup(func() { c.Close() })
				m := readJSON(t, c, 10*time.Second)
				workers[m.Worker]++
				held = append(held, c)
			}
			t.Logf("%d connections held, per worker: %v", limit, workers)
			// Every further attempt (several, to land on every worker) is refused.
			for i := 0; i < 6; i++ {
				c, err := s.dialErr(s.wsAddr, "/echo")
				if err != nil {
					t.Fatalf("over the limit: the upgrade failed (%v); want it completed, then close 1013", err)
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, _, err = c.ReadMessage()
				c.Close()
				if !websocket.IsCloseError(err, websocket.CloseTryAgainLater) {
					t.Fatalf("attempt %d over the limit: got %v, want close 1013", i, err)
				}
				nc, err := dialTCP(s.httpAddr)
				if err != nil {
					t.Fatal(err)
				}
				io.WriteString(nc, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
				r, _ := readHTTP(t, bufio.NewReader(nc))
				nc.Close()
				if r.StatusCode != http.StatusServiceUnavailable {
					t.Fatalf("HTTP over the limit: got %d, want 503", r.StatusCode)
				}
			}
			// Another address is not affected.
			d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(remoteSource)}}
			nc, err := d.Dial("tcp", s.httpAddr)
			if err != nil {
				t.Fatal(err)
			}
			nc.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(nc, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
			if r, _ := readHTTP(t, bufio.NewReader(nc)); r.StatusCode != 200 {
				t.Errorf("from %s: got %d, want 200", remoteSource, r.StatusCode)
			}
			nc.Close()
			// Closing one frees a place.
			held[0].Close()
			waitFor(t, 10*time.Second, "a place freed by a closed connection", func() bool {
				resp, err := httpClient.Get("http://" + s.httpAddr + "/hello")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == 200
			})
		})
	}
}

// procIDs returns the real, effective, saved and filesystem uid and gid
// of pid, and its supplementary groups, from /proc/PID/status.
func procIDs(t testing.TB, pid int) (uids, gids, groups string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.Join(strings.Fields(v), " ")
		switch k {
		case "Uid":
			uids = v
		case "Gid":
			gids = v
		case "Groups":
			groups = v
		}
	}
	return
}

// TestUserDrop: with --user nobody the master stays root and binds the
// ports, and every worker and task worker runs as nobody (real,
// effective, saved uid; nobody's group; no supplementary group of
// root's); the control socket answers nobody and root; without root,
// or with an unknown user, start is refused with one clear line.
func TestUserDrop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the master must start as root to drop workers to another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody here")
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := newTestServer(t, mode)
			// nobody must reach the run dir (for `status`, below).
			os.Chmod(filepath.Dir(s.Dir), 0o755)
			os.Chmod(s.Dir, 0o755)
			s.launch(2, "--task-workers", "1", "--user", "nobody")
			st := s.status()
			if u, g, _ := procIDs(t, st.MasterPid); u != "0 0 0 0" || g != "0 0 0 0" {
				t.Errorf("master: Uid %q Gid %q, want root's", u, g)
			}
			want := fmt.Sprintf("%d %d %d %d", uid, uid, uid, uid)
			wantG := fmt.Sprintf("%d %d %d %d", gid, gid, gid, gid)
			all := append(st.Workers, st.TaskWorkers...)
			if len(all) != 3 {
				t.Fatalf("got %d workers and task workers, want 3", len(all))
			}
			for _, w := range all {
				u, g, groups := procIDs(t, w.Pid)
				if u != want || g != wantG || groups != strconv.Itoa(gid) {
					t.Errorf("worker %d (pid %d): Uid %q Gid %q Groups %q, want %q %q %q", w.ID, w.Pid, u, g, groups, want, wantG, strconv.Itoa(gid))
				}
			}
			// The workers still serve, and nobody may use the control socket.
			if r, body := s.get("/hello"); r.StatusCode != 200 || body != "hello" {
				t.Errorf("GET /hello: %d %q", r.StatusCode, body)
			}
			cmd := exec.Command(serverBin, "status", "--json", "--run-dir", s.RunDir)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
			out, err := cmd.CombinedOutput()
			var got struct {
				MasterPid int `json:"master_pid"`
			}
			if err != nil || json.Unmarshal(out, &got) != nil || got.MasterPid != st.MasterPid {
				t.Errorf("status as nobody: %v, %s", err, out)
			}
			// The workers' user reads the pid file but cannot rewrite it:
			// root's `kill $(cat server.pid)` must not be aimable by it.
			pidFile := filepath.Join(s.RunDir, "server.pid")
			sh := exec.Command("/bin/sh", "-c", `echo 1 > "$0"`, pidFile)
			sh.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
			if out, err := sh.CombinedOutput(); err == nil {
				t.Errorf("nobody rewrote %s (%s)", pidFile, out)
			}
			if pid, err := master.ReadPid(s.RunDir); err != nil || pid != st.MasterPid {
				t.Errorf("pid file after nobody's attempt: %d, %v; want %d", pid, err, st.MasterPid)
			}
		})
	}
	// --group replaces the user's primary group everywhere: the workers'
	// supplementary groups hold --group's, not nobody's own (nogroup).
	t.Run("group", func(t *testing.T) {
		g, err := user.LookupGroup("daemon")
		if err != nil || g.Gid == nobody.Gid {
			t.Skip("no group daemon here")
		}
		s := newTestServer(t, "base")
		os.Chmod(filepath.Dir(s.Dir), 0o755)
		os.Chmod(s.Dir, 0o755)
		s.launch(1, "--user", "nobody", "--group", "daemon")
		for _, w := range s.status().Workers {
			u, gids, groups := procIDs(t, w.Pid)
			want := strings.Repeat(g.Gid+" ", 4)
			if u != strings.Repeat(nobody.Uid+" ", 3)+nobody.Uid || gids != want[:len(want)-1] || groups != g.Gid {
				t.Errorf("worker %d (pid %d) with --group daemon: Uid %q Gid %q Groups %q, want nobody's uid, gid %s and groups %q",
					w.ID, w.Pid, u, gids, groups, g.Gid, g.Gid)
			}
		}
	})
	t.Run("refused", func(t *testing.T) {
		out, err := runCLI(t, "start", "--workers", "1", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0",
			"--run-dir", filepath.Join(t.TempDir(), "run"), "--user", "no-such-user-here")
		if err == nil || !strings.Contains(out, "no such user") {
			t.Errorf("unknown user: err %v, output %q", err, out)
		}
		cmd := exec.Command(serverBin, "start", "--workers", "1", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0",
			"--run-dir", "/tmp/forkd-never-created", "--user", "nobody")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		b, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(b), "must be started as root") || strings.Count(strings.TrimSpace(string(b)), "\n") != 0 {
			t.Errorf("--user when not root: err %v, output %q; want one line saying root is needed", err, b)
		}
	})
}

// TestMaxConnPerIPWorkerCrash: in BASE mode the connections of a worker
// that dies (SIGKILL: it uncounts nothing) stop counting once the master
// has reaped it, so its replacement admits the address again.
func TestMaxConnPerIPWorkerCrash(t *testing.T) {
	s := startServer(t, "base", 1, "--max-conn-per-ip", "2")
	s.closeIdleClients(t)
	// Held until the worker is killed: a client connection nothing refers
	// to is closed by its finalizer at the next GC, freeing its place.
	var held []*websocket.Conn
	for i := 0; i < 2; i++ {
		held = append(held, s.dial(s.wsAddr, "/echo"))
	}
	refused := func() bool {
		c, err := s.dialErr(s.wsAddr, "/echo")
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err = c.ReadMessage()
		return websocket.IsCloseError(err, websocket.CloseTryAgainLater)
	}
	if !refused() {
		t.Fatalf("a third connection was not refused")
	}
	old := s.workerPids()[0]
	syscall.Kill(old, syscall.SIGKILL)
	runtime.KeepAlive(held)
	waitFor(t, 20*time.Second, "a replacement worker", func() bool {
		pid, ok := s.workerPids()[0]
		return ok && pid != old
	})
	for i := 0; i < 2; i++ {
		c := s.dial(s.wsAddr, "/echo")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.WriteMessage(websocket.TextMessage, []byte("back"))
		if _, b, err := c.ReadMessage(); err != nil || string(b) != "back" {
			t.Fatalf("connection %d after the crash: %v %q (the dead worker's connections still count)", i+1, err, b)
		}
	}
}
