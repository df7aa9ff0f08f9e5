package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd/internal/testharness"
)

// testCA is the harness's CA: a certificate authority made for one test.
type testCA = testharness.CA

func newTestCA(t testing.TB) *testCA { return testharness.NewCA(t) }

func writeFile(t testing.TB, name string, b []byte, mode os.FileMode) {
	testharness.WriteFileAtomic(t, name, b, mode)
}

// startTLSServer starts the server with TLS on both ports (cert and key
// files in the server's dir, CN "first"), and returns it and the files.
func startTLSServer(t *testing.T, ca *testCA, mode string, workers int, args ...string) (s *server, certFile, keyFile string) {
	s = newTestServer(t, mode)
	certFile, keyFile = ca.Issue(t, s.Dir, "server", "first")
	s.scheme = "https"
	s.client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: ca.TLSConfig()}}
	s.launch(workers, append([]string{"--http-tls-cert", certFile, "--http-tls-key", keyFile,
		"--ws-tls-cert", certFile, "--ws-tls-key", keyFile}, args...)...)
	return s, certFile, keyFile
}

// peerCN opens a new TLS connection to addr and returns the server
// certificate's common name.
func peerCN(t testing.TB, ca *testCA, addr string) string {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, ca.TLSConfig())
	if err != nil {
		t.Fatalf("tls dial %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func dialWSS(t testing.TB, ca *testCA, addr, path string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: ca.TLSConfig()}
	c, resp, err := d.Dial("wss://"+addr+path, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		t.Fatalf("dial wss://%s%s: %v", addr, path, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func echoOnce(t testing.TB, c *websocket.Conn, msg string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read echo of %q: %v", msg, err)
	}
	if string(b) != msg {
		t.Fatalf("echo: got %q, want %q", b, msg)
	}
}

// TestTLSEcho: https and wss on both ports, in both modes; TLS 1.2 and
// up only, ALPN http/1.1, and the plain protocol is not served there.
func TestTLSEcho(t *testing.T) {
	ca := newTestCA(t)
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s, _, _ := startTLSServer(t, ca, mode, 2)
			// The ready lines say where to go: https and wss.
			ready := []string{"chat page: https://" + s.httpAddr + "/", "ws: wss://" + s.wsAddr + "/"}
			waitFor(t, 10*time.Second, "ready lines "+strings.Join(ready, ", "), func() bool {
				out := s.Log()
				return strings.Contains(out, ready[0]+"\n") && strings.Contains(out, ready[1]+"\n")
			})
			resp, err := s.client.Get("https://" + s.httpAddr + "/hello")
			if err != nil {
				t.Fatalf("GET https /hello: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "hello" {
				t.Fatalf("GET https /hello: got %d %q, want 200 hello", resp.StatusCode, b)
			}
			// wss on the WebSocket port, and by upgrade on the HTTP port.
			for _, addr := range []string{s.wsAddr, s.httpAddr} {
				c := dialWSS(t, ca, addr, "/echo")
				for i := 0; i < 3; i++ {
					echoOnce(t, c, fmt.Sprintf("over tls %s #%d", addr, i))
				}
			}
			// ALPN: a client offering h2 gets http/1.1.
			cfg := ca.TLSConfig()
			cfg.NextProtos = []string{"h2", "http/1.1"}
			tc, err := tls.Dial("tcp", s.httpAddr, cfg)
			if err != nil {
				t.Fatalf("tls dial: %v", err)
			}
			if got := tc.ConnectionState().NegotiatedProtocol; got != "http/1.1" {
				t.Errorf("ALPN: got %q, want http/1.1", got)
			}
			tc.Close()
			// TLS 1.1 is refused.
			old := ca.TLSConfig()
			old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
			if tc, err := tls.Dial("tcp", s.wsAddr, old); err == nil {
				tc.Close()
				t.Errorf("a TLS 1.1 handshake succeeded")
			}
			// Plain HTTP on the TLS port: a plain 400 saying so, never served.
			resp, err = (&http.Client{Timeout: 3 * time.Second}).Get("http://" + s.httpAddr + "/hello")
			if err != nil {
				t.Fatalf("plain http on the TLS port: %v; want a 400", err)
			}
			b, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 || !strings.Contains(string(b), "HTTP request to an HTTPS server") {
				t.Errorf("plain http on the TLS port: got %d %q, want 400 saying it is a TLS port", resp.StatusCode, b)
			}
		})
	}
}

// TestTLSReloadCert swaps the certificate on disk: after `reload` new
// connections see the new one, and connections opened before stay up
// (PROCESS: a plain reload; BASE: `reload --tls-only`, since a BASE reload
// replaces the workers that hold WebSockets). A bad key at reload is
// refused with the reason, and the certificate in use stays.
func TestTLSReloadCert(t *testing.T) {
	ca := newTestCA(t)
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s, certFile, keyFile := startTLSServer(t, ca, mode, 2)
			for _, addr := range []string{s.httpAddr, s.wsAddr} {
				if cn := peerCN(t, ca, addr); cn != "first" {
					t.Fatalf("%s: got certificate %q, want first", addr, cn)
				}
			}
			ws := dialWSS(t, ca, s.wsAddr, "/echo")
			up := dialWSS(t, ca, s.httpAddr, "/echo")
			echoOnce(t, ws, "before")
			echoOnce(t, up, "before")
			// A keep-alive https connection opened before the swap.
			kc, err := tls.Dial("tcp", s.httpAddr, ca.TLSConfig())
			if err != nil {
				t.Fatal(err)
			}
			defer kc.Close()
			br := bufio.NewReader(kc)
			keepAlive := func(when string) {
				t.Helper()
				kc.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(kc, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					t.Fatalf("%s: keep-alive write: %v", when, err)
				}
				if r, body := readHTTP(t, br); r.StatusCode != 200 || body != "hello" {
					t.Fatalf("%s: keep-alive: got %d %q", when, r.StatusCode, body)
				}
			}
			keepAlive("before")

			// A key that does not match the certificate: refused, the
			// first certificate stays.
			dir := t.TempDir()
			_, otherKey := ca.Issue(t, dir, "other", "other")
			b, _ := os.ReadFile(otherKey)
			writeFile(t, keyFile, b, 0o600)
			reloadArgs := []string{"reload"}
			if mode == "base" {
				reloadArgs = append(reloadArgs, "--tls-only")
			}
			out, err := s.run(reloadArgs...)
			if err == nil || !strings.Contains(out, "private key does not match public key") || !strings.Contains(out, "stay") {
				t.Fatalf("reload with a mismatched key: err %v, output %q; want a failure saying the key does not match and the certificates stay", err, out)
			}
			if cn := peerCN(t, ca, s.httpAddr); cn != "first" {
				t.Fatalf("after a refused reload: got certificate %q, want first", cn)
			}

			// The renewed certificate and its key.
			newCert, newKey := ca.Issue(t, dir, "renewed", "second")
			cb, _ := os.ReadFile(newCert)
			kb, _ := os.ReadFile(newKey)
			writeFile(t, certFile, cb, 0o644)
			writeFile(t, keyFile, kb, 0o600)
			if out, err := s.run(reloadArgs...); err != nil {
				t.Fatalf("reload: %v\n%s", err, out)
			}
			for _, addr := range []string{s.httpAddr, s.wsAddr} {
				for i := 0; i < 4; i++ { // several connections: every worker serves the new one
					if cn := peerCN(t, ca, addr); cn != "second" {
						t.Fatalf("%s after reload: got certificate %q, want second", addr, cn)
					}
				}
			}
			for _, l := range s.status().Listeners {
				if !l.TLS || !strings.Contains(l.CertSubject, "second") || l.CertExpires == "" {
					t.Errorf("status after reload: listener %+v, want tls with certificate second", l)
				}
			}
			// Opened before: still up, still on the first certificate.
			echoOnce(t, ws, "after")
			echoOnce(t, up, "after")
			keepAlive("after")
			if cn := kc.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "first" {
				t.Errorf("old connection's certificate: got %q, want first", cn)
			}
		})
	}
}

// TestTLSBadKeyAtStart: a mismatched or unreadable key stops `start` with
// one clear line and a non-zero exit.
func TestTLSBadKeyAtStart(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cert, _ := ca.Issue(t, dir, "a", "a")
	_, otherKey := ca.Issue(t, dir, "b", "b")
	garbage := filepath.Join(dir, "garbage.key")
	os.WriteFile(garbage, []byte("-----BEGIN EC PRIVATE KEY-----\nnot a key\n"), 0o600)
	for _, tc := range []struct {
		name, key, want string
	}{
		{name: "mismatched", key: otherKey, want: "private key does not match public key"},
		{name: "garbage", key: garbage, want: "key"},
		{name: "missing", key: filepath.Join(dir, "none.key"), want: "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runCLI(t, "start", "--workers", "1", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0",
				"--run-dir", filepath.Join(t.TempDir(), "run"), "--http-tls-cert", cert, "--http-tls-key", tc.key)
			if err == nil {
				t.Fatalf("start succeeded with a %s key", tc.name)
			}
			if !strings.Contains(out, tc.want) || !strings.Contains(out, "listener http") {
				t.Errorf("start output %q: want the listener and %q", out, tc.want)
			}
		})
	}
}

// runCLI runs the binary (a command expected to end by itself) and returns
// its combined output.
func runCLI(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(serverBin, args...)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not end within 60s", args)
	}
	return string(out), err
}

// TestTLSResumeAcrossWorkers: a session ticket one BASE worker issued
// resumes on another (the master hands every worker the same keys).
func TestTLSResumeAcrossWorkers(t *testing.T) {
	ca := newTestCA(t)
	s, _, _ := startTLSServer(t, ca, "base", 2)
	cfg := ca.TLSConfig()
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	prev := -1
	for i := 0; i < 80; i++ {
		c, err := tls.Dial("tcp", s.httpAddr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		r, _ := readHTTP(t, bufio.NewReader(c))
		resumed := c.ConnectionState().DidResume
		c.Close()
		var id int
		fmt.Sscan(r.Header.Get("X-Worker-Id"), &id)
		if resumed && prev >= 0 && id != prev {
			t.Logf("connection %d: worker %d resumed a session worker %d issued", i, id, prev)
			return
		}
		prev = id
	}
	t.Fatalf("no session resumed on another worker in 80 connections")
}

// TestTLSTicketRotation: the master makes a new ticket key every
// --tls-ticket-rotate and hands it to every process; a ticket still
// resumes a while after a few rotations (old keys still decrypt) and no
// longer once its key has been dropped (24 rotations later). The rotation
// is 200 ms, not less: a ticket lives 24 of them (4.8 s), and the resuming
// connection must reach the server within that of the ticket's issue
// (with 50 ms, 0.9 s to spare after the sleep: a loaded machine with
// -race can stall that long; with 100 ms, 2 s, no more than a stall of a
// loaded 2-core CI machine). The other way, a master stalled that long
// rotates late (its ticker drops the ticks it missed): 10 s for the 24
// rotations of 4.8 s leaves 5 s of that.
func TestTLSTicketRotation(t *testing.T) {
	ca := newTestCA(t)
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s, _, _ := startTLSServer(t, ca, mode, 2, "--tls-ticket-rotate", "200ms")
			cfg := ca.TLSConfig()
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			connect := func() bool {
				t.Helper()
				c, err := tls.Dial("tcp", s.httpAddr, cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
				readHTTP(t, bufio.NewReader(c)) // reading takes the ticket too
				return c.ConnectionState().DidResume
			}
			connect()
			time.Sleep(700 * time.Millisecond) // about 3 rotations
			if !connect() {
				t.Fatalf("a ticket a few rotations old did not resume")
			}
			time.Sleep(10 * time.Second) // about 50 rotations: its key (one of 24, 4.8 s) is gone
			if connect() {
				t.Fatalf("a ticket whose key was rotated out still resumed")
			}
		})
	}
}

// TestTLSConfigFile: the TLS keys work in the --config file, and a
// listener gets its certificate by name (listen-tls-cert NAME=FILE).
func TestTLSConfigFile(t *testing.T) {
	ca := newTestCA(t)
	s := newTestServer(t, "base")
	httpCert, httpKey := ca.Issue(t, s.Dir, "http", "http-cert")
	wsCert, wsKey := ca.Issue(t, s.Dir, "ws", "ws-cert")
	cfg := filepath.Join(s.Dir, "forkd.yaml")
	yaml := fmt.Sprintf("http-tls-cert: %s\nhttp-tls-key: %s\nlisten-tls-cert:\n  - ws=%s\nlisten-tls-key:\n  - ws=%s\n",
		httpCert, httpKey, wsCert, wsKey)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	s.scheme = "https"
	s.client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: ca.TLSConfig()}}
	s.launch(2, "--config", cfg)
	if cn := peerCN(t, ca, s.httpAddr); cn != "http-cert" {
		t.Errorf("http listener: got certificate %q, want http-cert", cn)
	}
	if cn := peerCN(t, ca, s.wsAddr); cn != "ws-cert" {
		t.Errorf("ws listener: got certificate %q, want ws-cert", cn)
	}
	echoOnce(t, dialWSS(t, ca, s.wsAddr, "/echo"), "from the config file")
}

// TestTLSReloadKeepAlive: a full reload of a TLS server under keep-alive
// https load fails no request in either mode. In BASE mode the draining
// workers end idle TLS connections with close_notify and a FIN, never a
// reset, as they do plain ones (docs/reload.md).
func TestTLSReloadKeepAlive(t *testing.T) {
	ca := newTestCA(t)
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s, _, _ := startTLSServer(t, ca, mode, 2)
			dial := func(addr string) (net.Conn, error) {
				return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, ca.TLSConfig())
			}
			load := startKeepAliveLoadDial(t, dial, s.httpAddr, "/hello", 8)
			time.Sleep(300 * time.Millisecond)
			if out, err := s.run("reload"); err != nil {
				t.Fatalf("reload: %v\n%s", err, out)
			}
			time.Sleep(1500 * time.Millisecond) // idle connections of the drained workers end
			load.check(t)
		})
	}
}

// TestTLSSlowHandshake: a client that starts a TLS handshake and stalls is
// cut by --read-timeout, as a slow plain request is, in both modes; the
// server goes on serving.
func TestTLSSlowHandshake(t *testing.T) {
	ca := newTestCA(t)
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s, _, _ := startTLSServer(t, ca, mode, 1, "--read-timeout", "500ms")
			c, err := net.DialTimeout("tcp", s.wsAddr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte{0x16, 0x03, 0x01, 0x02}) // the start of a ClientHello record
			start := time.Now()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = io.ReadAll(c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("a stalled handshake was still open after 10s")
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("a stalled handshake was cut after %s, want about the 500ms read timeout", took)
			}
			echoOnce(t, dialWSS(t, ca, s.wsAddr, "/echo"), "still serving")
		})
	}
}
