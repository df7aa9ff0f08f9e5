package reactor

import (
	"net"
	"net/url"
	"strings"

	"github.com/valyala/fasthttp"
)

// originPolicy decides which browser origins may open a WebSocket
// (cross-site WebSocket hijacking: a page elsewhere opening a socket to us
// with its visitor's cookies). A request with no Origin header is not from
// a browser page and is served. Otherwise the origin must be this server
// itself (the request's Host, or the same host name on another port this
// reactor serves, so the chat page on the HTTP port may use the WebSocket
// port), or match the allowed list: "*" (any), an exact origin
// ("https://a.example", "http://a.example:8080"), or a pattern with a
// leading wildcard label ("https://*.b.example", which matches
// "https://x.b.example" and "https://y.x.b.example", not "https://b.example").
type originPolicy struct {
	any   bool
	exact map[string]bool
	wild  []wildOrigin
}

type wildOrigin struct {
	scheme, suffix, port string
}

func newOriginPolicy(list []string) originPolicy {
	p := originPolicy{exact: map[string]bool{}}
	for _, o := range list {
		o = strings.TrimSpace(o)
		switch {
		case o == "":
		case o == "*":
			p.any = true
		case o == "null":
			p.exact["null"] = true
		default:
			scheme, host, port, ok := splitOrigin(o)
			if !ok {
				continue // CheckOrigins rejects these at start
			}
			if suffix, ok := strings.CutPrefix(host, "*."); ok {
				p.wild = append(p.wild, wildOrigin{scheme: scheme, suffix: "." + suffix, port: port})
				continue
			}
			p.exact[scheme+"://"+host+":"+port] = true
		}
	}
	return p
}

// CheckOrigins validates an --allowed-origins list; the error names the
// first entry that is not "*", "null" or scheme://host[:port].
func CheckOrigins(list []string) error {
	for _, o := range list {
		o = strings.TrimSpace(o)
		if o == "" || o == "*" || o == "null" {
			continue
		}
		if _, host, _, ok := splitOrigin(o); !ok || strings.Contains(strings.TrimPrefix(host, "*."), "*") {
			return &OriginError{Origin: o}
		}
	}
	return nil
}

// OriginError is an unusable --allowed-origins entry.
type OriginError struct{ Origin string }

func (e *OriginError) Error() string {
	return "reactor: allowed origin " + e.Origin + ": want *, null or scheme://host[:port] (host may start with *.)"
}

// splitOrigin parses scheme://host[:port] into lower-case parts, filling
// in the scheme's default port.
func splitOrigin(o string) (scheme, host, port string, ok bool) {
	u, err := url.Parse(strings.ToLower(o))
	if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", "", "", false
	}
	host, port = u.Hostname(), u.Port()
	if port == "" {
		port = defaultPort(u.Scheme)
	}
	return u.Scheme, host, port, host != ""
}

func defaultPort(scheme string) string {
	switch scheme {
	case "https", "wss":
		return "443"
	default:
		return "80"
	}
}

// allowed reports whether a browser at origin may open a WebSocket on a
// request for host (the Host header).
func (p *originPolicy) allowed(origin, host string, ownPort func(string) bool) bool {
	if p.any {
		return true
	}
	if origin == "null" {
		return p.exact["null"]
	}
	scheme, oh, op, ok := splitOrigin(origin)
	if !ok {
		return false
	}
	if hh, hp, err := net.SplitHostPort(strings.ToLower(host)); err == nil {
		if oh == hh && (op == hp || ownPort(op)) {
			return true
		}
	} else if oh == strings.Trim(strings.ToLower(host), "[]") && op == defaultPort(scheme) {
		return true
	}
	if p.exact[scheme+"://"+oh+":"+op] {
		return true
	}
	for _, w := range p.wild {
		if w.scheme == scheme && w.port == op && strings.HasSuffix(oh, w.suffix) {
			return true
		}
	}
	return false
}

// checkOrigin checks a valid upgrade request's Origin (see accept, which
// answers a refusal with 403); a refusal is logged here, once.
func (r *Reactor) checkOrigin(ctx *fasthttp.RequestCtx) bool {
	origin := ctx.Request.Header.Peek("Origin")
	if len(origin) == 0 {
		return true
	}
	host := string(ctx.Host())
	if r.origins.allowed(string(origin), host, r.ownPort) {
		return true
	}
	r.log.Warn().Str("origin", string(origin)).Str("host", host).Str("remote", ctx.RemoteAddr().String()).
		Msg("websocket upgrade refused: origin not allowed")
	return false
}

func (r *Reactor) ownPort(port string) bool {
	_, ok := r.ports.Load(port)
	return ok
}
