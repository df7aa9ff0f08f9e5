package forkd

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
)

// APIGuard protects operator endpoints (push, broadcast, anything that
// acts on other people's connections). Connection ids are not secrets: a
// client learns its own and can guess its neighbours', so the API, not the
// id, is the lock.
//
// The rules, in order:
//   - the client's address must be allowed: with no token, 127.0.0.1 and
//     ::1 (the addresses a client on this host connects from; the rest of
//     127.0.0.0/8 is not included, so a test can stand in for a remote
//     client from 127.0.0.2) plus the allow list (--api-allow widens);
//     with a token, any address, or, if an allow list is given, those two
//     and the list. Otherwise 403.
//   - with no token, the request must not come from a web page: an Origin
//     other than the Host, a cross-site Sec-Fetch-Site, or a Host that is
//     a name other than localhost (DNS rebinding) gets 403.
//   - with a token, the request must carry `Authorization: Bearer TOKEN`,
//     compared in constant time. Otherwise 401 with WWW-Authenticate.
//
// Behind a reverse proxy on the same host every client comes from
// loopback: set a token.
type APIGuard struct {
	hasToken bool
	token    [sha256.Size]byte // the token's hash: equal-length, constant-time compare
	allow    []netip.Prefix
}

// defaultAPIAllow is who may call the operator API when no token and no
// --api-allow are set.
var defaultAPIAllow = []string{"127.0.0.1/32", "::1/128"}

// NewAPIGuard returns a guard for token ("": none) and allow (CIDRs or
// single addresses, or comma-separated lists of them), which widens
// loopback (see APIGuard).
func NewAPIGuard(token string, allow []string) (*APIGuard, error) {
	g := &APIGuard{hasToken: token != ""}
	if g.hasToken {
		g.token = sha256.Sum256([]byte(token))
	}
	if len(allow) > 0 || !g.hasToken {
		allow = append(append([]string(nil), defaultAPIAllow...), allow...)
	}
	for _, a := range allow {
		for _, s := range strings.Split(a, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			p, err := parsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("forkd: --api-allow %q: want a CIDR (10.0.0.0/8) or an address", s)
			}
			g.allow = append(g.allow, p)
		}
	}
	return g, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// Check answers ctx with 403 or 401 and returns false when the request
// may not use the API; true when it may (ctx untouched).
func (g *APIGuard) Check(ctx *fasthttp.RequestCtx) bool {
	if !g.AllowedAddr(ctx.RemoteAddr()) {
		ctx.Error("Forbidden: the API is not open to this address", fasthttp.StatusForbidden)
		return false
	}
	if !g.hasToken {
		// The address is the only lock, and a browser on an allowed host
		// (the operator's own machine) is at that address too: any web page
		// it shows could POST here (CSRF) or, through a name of its own that
		// resolves to us, read the answers (DNS rebinding). A token is a
		// header no page can add without a CORS preflight we never grant.
		if reason := browserRequest(&ctx.Request.Header); reason != "" {
			ctx.Error("Forbidden: "+reason+"; set an API token to call the API from elsewhere", fasthttp.StatusForbidden)
			return false
		}
		return true
	}
	auth := ctx.Request.Header.Peek("Authorization")
	given, ok := bearer(auth)
	if !ok || !g.TokenOK(given) {
		ctx.Error("Unauthorized: send Authorization: Bearer TOKEN", fasthttp.StatusUnauthorized) // resets headers: first
		if len(auth) == 0 {
			ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="forkd"`)
		} else {
			ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="forkd", error="invalid_token"`)
		}
		return false
	}
	return true
}

// TokenOK reports whether given is the token, in constant time (hashes of
// both are compared, so not even the length leaks). False with no token.
func (g *APIGuard) TokenOK(given []byte) bool {
	if !g.hasToken {
		return false
	}
	h := sha256.Sum256(given)
	return subtle.ConstantTimeCompare(h[:], g.token[:]) == 1
}

// AllowedAddr reports whether a client at addr may use the API at all.
func (g *APIGuard) AllowedAddr(addr net.Addr) bool {
	if len(g.allow) == 0 {
		return true // a token and no --api-allow: the token decides
	}
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip = a.AddrPort().Addr()
	default:
		if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
			ip = ap.Addr()
		}
	}
	ip = ip.Unmap()
	for _, p := range g.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// HasToken reports whether a token is required.
func (g *APIGuard) HasToken() bool { return g.hasToken }

// browserRequest says why a request authorized by its address alone may
// come from a web page rather than from the operator ("": it cannot):
// a Host header naming a host name other than localhost (DNS rebinding:
// curl and scripts on an allowed host address it by IP or as localhost),
// an Origin other than the Host itself, or a Sec-Fetch-Site other than
// same-origin or none (a cross-site request).
func browserRequest(h *fasthttp.RequestHeader) string {
	host := string(h.Host())
	if host != "" {
		name := host
		if n, _, err := net.SplitHostPort(host); err == nil {
			name = n
		}
		name = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(name, "["), "]"))
		if _, err := netip.ParseAddr(name); err != nil && name != "localhost" && !strings.HasSuffix(name, ".localhost") {
			return "without a token the API answers only requests addressed to an IP address or localhost, not to " + strconv.Quote(name)
		}
	}
	if site := string(h.Peek("Sec-Fetch-Site")); site != "" && site != "same-origin" && site != "none" {
		return "a cross-site request (Sec-Fetch-Site " + strconv.Quote(site) + ")"
	}
	if origin := string(h.Peek("Origin")); origin != "" {
		u, err := url.Parse(origin)
		if err != nil || u.Host == "" || !strings.EqualFold(u.Host, host) && !strings.EqualFold(u.Host+":"+originPort(u.Scheme), host) {
			return "a request from another origin (" + strconv.Quote(origin) + ")"
		}
	}
	return ""
}

func originPort(scheme string) string {
	if strings.EqualFold(scheme, "https") {
		return "443"
	}
	return "80"
}

func bearer(h []byte) ([]byte, bool) {
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(string(h[:len(prefix)]), prefix) {
		return nil, false
	}
	return []byte(strings.TrimSpace(string(h[len(prefix):]))), true
}
