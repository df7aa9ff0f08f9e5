package forkd

import (
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func guardCtx(remote, auth string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod("POST")
	req.SetRequestURI("/push?conn=1")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	ctx := &fasthttp.RequestCtx{}
	ip, port, _ := net.SplitHostPort(remote)
	ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP(ip), Port: atoi(port)}, nil)
	return ctx
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestAPIGuard(t *testing.T) {
	const tok = "t0ken"
	tests := []struct {
		name     string
		token    string
		allow    []string
		remote   string
		auth     string
		want     int // 0: allowed
		wantAuth string
	}{
		{name: "default/127.0.0.1", remote: "127.0.0.1:5000"},
		{name: "default/::1", remote: "[::1]:5000"},
		{name: "default/mapped 127.0.0.1", remote: "[::ffff:127.0.0.1]:5000"},
		{name: "default/127.0.0.2", remote: "127.0.0.2:5000", want: 403},
		{name: "default/remote v4", remote: "192.0.2.7:5000", want: 403},
		{name: "default/remote v6", remote: "[2001:db8::1]:5000", want: 403},
		{name: "allow/inside", allow: []string{"10.0.0.0/8,192.0.2.7"}, remote: "10.9.8.7:1"},
		{name: "allow/single", allow: []string{"10.0.0.0/8,192.0.2.7"}, remote: "192.0.2.7:1"},
		{name: "allow/outside", allow: []string{"10.0.0.0/8"}, remote: "192.0.2.1:1", want: 403},
		{name: "allow/loopback stays", allow: []string{"10.0.0.0/8"}, remote: "127.0.0.1:1"},
		{name: "allow/127.0.0.2 listed", allow: []string{"127.0.0.2/32"}, remote: "127.0.0.2:1"},
		{name: "token/missing", token: tok, remote: "127.0.0.1:1", want: 401, wantAuth: `Bearer realm="forkd"`},
		{name: "token/wrong", token: tok, remote: "127.0.0.1:1", auth: "Bearer t0kem", want: 401, wantAuth: `Bearer realm="forkd", error="invalid_token"`},
		{name: "token/longer", token: tok, remote: "127.0.0.1:1", auth: "Bearer t0ken0", want: 401, wantAuth: `Bearer realm="forkd", error="invalid_token"`},
		{name: "token/empty bearer", token: tok, remote: "127.0.0.1:1", auth: "Bearer ", want: 401, wantAuth: `Bearer realm="forkd", error="invalid_token"`},
		{name: "token/basic", token: tok, remote: "127.0.0.1:1", auth: "Basic " + tok, want: 401, wantAuth: `Bearer realm="forkd", error="invalid_token"`},
		{name: "token/right from anywhere", token: tok, remote: "198.51.100.1:1", auth: "Bearer " + tok},
		{name: "token/scheme case", token: tok, remote: "198.51.100.1:1", auth: "bearer " + tok},
		{name: "token+allow/right token, wrong address", token: tok, allow: []string{"10.0.0.0/8"}, remote: "198.51.100.1:1", auth: "Bearer " + tok, want: 403},
		{name: "token+allow/both", token: tok, allow: []string{"10.0.0.0/8"}, remote: "10.0.0.1:1", auth: "Bearer " + tok},
		{name: "token+allow/loopback, no token", token: tok, allow: []string{"10.0.0.0/8"}, remote: "127.0.0.1:1", want: 401, wantAuth: `Bearer realm="forkd"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := NewAPIGuard(tt.token, tt.allow)
			if err != nil {
				t.Fatal(err)
			}
			ctx := guardCtx(tt.remote, tt.auth)
			ok := g.Check(ctx)
			got := 0
			if !ok {
				got = ctx.Response.StatusCode()
			}
			if got != tt.want {
				t.Fatalf("got %d, want %d", got, tt.want)
			}
			if www := string(ctx.Response.Header.Peek("WWW-Authenticate")); www != tt.wantAuth {
				t.Errorf("WWW-Authenticate: got %q, want %q", www, tt.wantAuth)
			}
		})
	}
}

func TestAPIGuardTokenOK(t *testing.T) {
	g, _ := NewAPIGuard("abc", nil)
	for _, tt := range []struct {
		given string
		want  bool
	}{{"abc", true}, {"abd", false}, {"ab", false}, {"abcd", false}, {"", false}, {"ABC", false}} {
		if got := g.TokenOK([]byte(tt.given)); got != tt.want {
			t.Errorf("TokenOK(%q): got %v, want %v", tt.given, got, tt.want)
		}
	}
	none, _ := NewAPIGuard("", nil)
	if none.TokenOK(nil) || none.TokenOK([]byte("")) {
		t.Errorf("with no token, TokenOK accepted something")
	}
}

func TestAPIGuardBadAllow(t *testing.T) {
	for _, a := range []string{"10.0.0.0/33", "not-an-ip", "10.0.0/8"} {
		if _, err := NewAPIGuard("", []string{a}); err == nil || !strings.Contains(err.Error(), "--api-allow") {
			t.Errorf("--api-allow %q: got %v, want an error naming the flag", a, err)
		}
	}
}

// TestAPIGuardBrowser: with no token the address is the only lock, and a
// browser on the operator's host is at that address: a page it shows must
// not reach the API, neither cross-site (CSRF: Origin, Sec-Fetch-Site) nor
// through a name of its own resolving to us (DNS rebinding: Host). curl
// and scripts (no Origin, Host an address or localhost) still may; with a
// token a page cannot send the header, so nothing changes there.
func TestAPIGuardBrowser(t *testing.T) {
	for _, tt := range []struct {
		name, token, host string
		hdr               map[string]string
		want              int
	}{
		{name: "curl by address", host: "127.0.0.1:9501"},
		{name: "curl by [::1]", host: "[::1]:9501"},
		{name: "curl as localhost", host: "localhost:9501"},
		{name: "no host (HTTP/1.0)", host: ""},
		{name: "same origin", host: "127.0.0.1:9501", hdr: map[string]string{"Origin": "http://127.0.0.1:9501", "Sec-Fetch-Site": "same-origin"}},
		{name: "same origin, default port", host: "localhost", hdr: map[string]string{"Origin": "http://localhost"}},
		{name: "user typed the URL", host: "127.0.0.1:9501", hdr: map[string]string{"Sec-Fetch-Site": "none"}},
		{name: "csrf: other origin", host: "127.0.0.1:9501", hdr: map[string]string{"Origin": "http://evil.example"}, want: 403},
		{name: "csrf: null origin", host: "127.0.0.1:9501", hdr: map[string]string{"Origin": "null"}, want: 403},
		{name: "csrf: other port", host: "127.0.0.1:9501", hdr: map[string]string{"Origin": "http://127.0.0.1:8080"}, want: 403},
		{name: "csrf: sec-fetch cross-site", host: "127.0.0.1:9501", hdr: map[string]string{"Sec-Fetch-Site": "cross-site"}, want: 403},
		{name: "csrf: sec-fetch same-site", host: "127.0.0.1:9501", hdr: map[string]string{"Sec-Fetch-Site": "same-site"}, want: 403},
		{name: "dns rebinding", host: "evil.example:9501", hdr: map[string]string{"Origin": "http://evil.example:9501"}, want: 403},
		{name: "dns rebinding, no origin (GET)", host: "evil.example:9501", want: 403},
		{name: "token: origin does not matter", token: "t0ken", host: "evil.example:9501", hdr: map[string]string{"Origin": "http://evil.example", "Authorization": "Bearer t0ken"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g, err := NewAPIGuard(tt.token, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx := guardCtx("127.0.0.1:5000", "")
			ctx.Request.Header.SetHost(tt.host)
			for k, v := range tt.hdr {
				ctx.Request.Header.Set(k, v)
			}
			got := 0
			if !g.Check(ctx) {
				got = ctx.Response.StatusCode()
			}
			if got != tt.want {
				t.Fatalf("got %d %q, want %d", got, ctx.Response.Body(), tt.want)
			}
		})
	}
}
