package forkd_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/forkd/forkd/master"

	"github.com/forkd/forkd/internal/testharness"
)

// selfSigned writes a certificate for 127.0.0.1 and its key to dir and
// returns their paths and a pool trusting it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	ca := testharness.NewCA(t)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.IssueFiles(t, certFile, keyFile, "secapp", "127.0.0.1")
	return certFile, keyFile, ca.Pool
}

// TestAPISecurity runs testdata/secapp, a program whose listener has its
// own tls.Config (Listener.TLS) and an operator endpoint behind
// Worker.API, in both modes: https and wss by upgrade work, handlers see
// the https scheme, and the endpoint wants the token.
func TestAPISecurity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "secapp")
	args := []string{"build", "-o", bin}
	if apiRace {
		args = append(args, "-race")
	}
	if out, err := exec.CommandContext(ctx, "go", append(args, "./testdata/secapp")...).CombinedOutput(); err != nil {
		t.Fatalf("go build ./testdata/secapp: %v\n%s", err, out)
	}
	const token = "library-token"
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			certFile, keyFile, pool := selfSigned(t, dir)
			cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
			s := newAPIServer(t, bin)
			s.Start([]string{"SECAPP_CERT=" + certFile, "SECAPP_KEY=" + keyFile, "FORKD_API_TOKEN=" + token},
				"--mode", mode, "--workers", "2", "--http", "127.0.0.1:0", "--log-format", "console")
			get := func(path, auth string) (int, string, error) {
				req, _ := http.NewRequest("GET", "https://"+s.httpAddr+path, nil)
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				resp, err := client.Do(req)
				if err != nil {
					return 0, "", err
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b), nil
			}
			s.WaitReady(30*time.Second, func(st master.Status) error {
				s.readAddrs(st)
				code, _, err := get("/hello", "")
				if err == nil && code != 200 {
					err = fmt.Errorf("GET /hello: %d", code)
				}
				return err
			})
			if code, body, err := get("/scheme", ""); err != nil || body != "https" {
				t.Errorf("/scheme: %d %q %v, want https", code, body, err)
			}
			d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: cfg}
			ws, resp, err := d.Dial("wss://"+s.httpAddr+"/", http.Header{"Origin": {"https://" + s.httpAddr}})
			if err != nil {
				t.Fatalf("wss by upgrade: %v (%v)", err, resp)
			}
			defer ws.Close()
			ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, id, err := ws.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			ws.WriteMessage(websocket.TextMessage, []byte("echo over wss"))
			if _, b, err := ws.ReadMessage(); err != nil || string(b) != "echo over wss" {
				t.Fatalf("wss echo: %q %v", b, err)
			}
			if code, _, _ := get("/kick?conn="+string(id), ""); code != 401 {
				t.Errorf("/kick without the token: got %d, want 401", code)
			}
			if code, _, _ := get("/kick?conn="+string(id), "Bearer wrong"); code != 401 {
				t.Errorf("/kick with a wrong token: got %d, want 401", code)
			}
			if code, body, _ := get("/kick?conn="+string(id), "Bearer "+token); code != 200 || body != "kicked" {
				t.Errorf("/kick with the token: got %d %q, want 200 kicked", code, body)
			}
			_, _, err = ws.ReadMessage()
			if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) || !strings.Contains(err.Error(), "kicked") {
				t.Errorf("the kicked connection: got %v, want close 1008 kicked", err)
			}
		})
	}
}
