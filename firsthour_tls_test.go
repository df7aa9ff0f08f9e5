package forkd_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd/internal/testharness"
)

// nginxPath is Debian's nginx; .ci/install-deps.sh (make deps) installs it.
const nginxPath = "/usr/sbin/nginx"

// nginxConf is the guide's TLS-proxy recipe, listening on a unix socket
// (so the test needs no fixed port) in a prefix of its own.
const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid PREFIX/nginx.pid;
error_log PREFIX/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path PREFIX/tmp/body;
    proxy_temp_path PREFIX/tmp/proxy;
    fastcgi_temp_path PREFIX/tmp/fastcgi;
    uwsgi_temp_path PREFIX/tmp/uwsgi;
    scgi_temp_path PREFIX/tmp/scgi;

    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
    upstream forkd { server UPSTREAM; keepalive 32; }
    server {
        listen unix:PREFIX/tls.sock ssl;
        ssl_certificate     PREFIX/cert.pem;
        ssl_certificate_key PREFIX/key.pem;
        location / {
            proxy_pass http://forkd;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 1h;
        }
    }
}
`

// testTLSProxy: the TLS-proxy recipe: nginx terminates TLS in front of
// forkd's HTTP listener; HTTPS and WSS (by upgrade on the HTTP port) work
// through it.
func testTLSProxy(t *testing.T, app devApp) {
	if _, err := os.Stat(nginxPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not found (make deps installs it)", nginxPath)
		}
		t.Fatalf("%s not found under CI: run make deps first (%v)", nginxPath, err)
	}
	s := startDev(t, app.bin, "--mode", "process", "--workers", "1")
	prefix := t.TempDir()
	pool := writeCert(t, prefix)
	for _, d := range []string{"tmp", "logs"} {
		os.MkdirAll(filepath.Join(prefix, d), 0o755)
	}
	conf := strings.NewReplacer("PREFIX", prefix, "UPSTREAM", s.addrs["api root"]).Replace(nginxConf)
	writeFile(t, filepath.Join(prefix, "nginx.conf"), conf)
	cmd := exec.Command(nginxPath, "-p", prefix, "-c", filepath.Join(prefix, "nginx.conf"), "-e", filepath.Join(prefix, "error.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
			t.Logf("nginx output:\n%s\nerror.log:\n%s", out.String(), b)
		}
	})
	sock := filepath.Join(prefix, "tls.sock")
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}
	tlsConf := &tls.Config{RootCAs: pool, ServerName: "forkd.test"}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial, TLSClientConfig: tlsConf}}
	var resp *http.Response
	waitUntil(t, 30*time.Second, "nginx serving", func() bool {
		select {
		case <-exited:
			t.Fatalf("nginx exited: %s", out.String())
		default:
		}
		var err error
		resp, err = client.Get("https://forkd.test/ping")
		return err == nil
	})
	var body strings.Builder
	buf := make([]byte, 64)
	n, _ := resp.Body.Read(buf)
	body.Write(buf[:n])
	resp.Body.Close()
	if resp.StatusCode != 200 || body.String() != "pong" || resp.TLS == nil {
		t.Fatalf("GET https://forkd.test/ping through nginx: %d %q (tls %v)", resp.StatusCode, body.String(), resp.TLS != nil)
	}
	d := websocket.Dialer{NetDialContext: dial, TLSClientConfig: tlsConf, HandshakeTimeout: 10 * time.Second}
	c, wresp, err := d.Dial("wss://forkd.test/", nil)
	if wresp != nil && wresp.Body != nil {
		wresp.Body.Close()
	}
	if err != nil {
		t.Fatalf("wss through nginx: %v", err)
	}
	defer c.Close()
	if w := wsRead(t, c); !strings.HasPrefix(w, "welcome ") {
		t.Fatalf("wss: first message %q, want the welcome", w)
	}
	if got := wsSay(t, c, "through the proxy"); got != "through the proxy" {
		t.Fatalf("wss echo: got %q", got)
	}
}

// writeCert writes a throw-away certificate for forkd.test to dir
// (cert.pem, key.pem) and returns a pool that trusts it.
func writeCert(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	ca := testharness.NewCA(t)
	ca.IssueFiles(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), "forkd.test", "forkd.test")
	return ca.Pool
}
