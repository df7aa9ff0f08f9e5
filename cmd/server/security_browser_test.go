package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAPIBrowserRefused: with the defaults (no token) a web page shown by
// a browser on the server's own host must not reach the operator API: not
// by a cross-site POST (CSRF; the browser sends Origin and Sec-Fetch-Site,
// and the request comes from 127.0.0.1), nor through a name of the
// attacker's that resolves to 127.0.0.1 (DNS rebinding; Host is that
// name). Nothing forged reaches the victim; curl-like calls still work.
func TestAPIBrowserRefused(t *testing.T) {
	for _, mode := range []string{"process", "base"} {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, 2)
			victim, vid := enterChat(t, s, "lobby", "victim")
			client := &http.Client{Timeout: 10 * time.Second}
			call := func(method, path, host, body string, hdr map[string]string) (int, string) {
				t.Helper()
				req, err := http.NewRequest(method, "http://"+s.httpAddr+path, strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "text/plain")
				if host != "" {
					req.Host = host
				}
				for k, v := range hdr {
					req.Header.Set(k, v)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			_, port, _ := strings.Cut(s.httpAddr, ":")
			csrf := map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
			rebind := map[string]string{"Origin": "http://evil.example:" + port}
			for _, tc := range []struct {
				name, method, path, host string
				hdr                      map[string]string
			}{
				{"csrf push", "POST", "/push?conn=" + vid, "", csrf},
				{"csrf broadcast", "POST", "/broadcast?room=lobby", "", csrf},
				{"csrf push uid", "POST", "/push?uid=victim", "", csrf},
				{"rebinding broadcast", "POST", "/broadcast?room=lobby", "evil.example:" + port, rebind},
				{"rebinding room", "GET", "/room?room=lobby", "evil.example:" + port, nil},
				{"rebinding session", "GET", "/session?conn=" + vid, "evil.example:" + port, nil},
			} {
				if code, body := call(tc.method, tc.path, tc.host, forged, tc.hdr); code != http.StatusForbidden {
					t.Errorf("%s: got %d %q, want 403", tc.name, code, body)
				}
			}
			if code, body := call("POST", "/push?conn="+vid, "localhost:"+port, "marker", nil); code != 200 {
				t.Fatalf("push as localhost: got %d %q, want 200", code, body)
			}
			nothingForged(t, victim, "marker")
		})
	}
}
