package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// embedded is a NATS server run inside the master (--cluster-embed), so one
// machine needs nothing else and other nodes can join it.
type embedded struct {
	srv      *server.Server
	url      string
	routeURL string   // where it accepts routes ("": no routes)
	routesTo []string // --cluster-routes, for the log
}

func startEmbedded(cfg Config, log zerolog.Logger) (*embedded, error) {
	addr := cfg.Embed
	host, p, err := splitPort(addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: --cluster-embed %q: %w", addr, err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	// A server name of its own: two routed servers of one name refuse
	// each other.
	o := &server.Options{Host: host, Port: p, NoSigs: true, NoLog: true,
		ServerName: "forkd-" + cfg.Name, MaxPayload: 8 << 20}
	if cfg.RouteAddr != "" || len(cfg.Routes) > 0 {
		rhost, rport, err := host, server.RANDOM_PORT, error(nil)
		if cfg.RouteAddr != "" {
			if rhost, rport, err = splitPort(cfg.RouteAddr); err != nil {
				return nil, fmt.Errorf("cluster: --cluster-route-addr %q: %w", cfg.RouteAddr, err)
			}
			if rhost == "" {
				rhost = "0.0.0.0"
			}
		}
		// No cluster name: the server takes its routes' (a NATS cluster
		// of any name, or other nodes' embedded servers). One route per
		// remote server (no pool): waitRoutes counts them.
		o.Cluster = server.ClusterOpts{Host: rhost, Port: rport, PoolSize: -1}
		for _, r := range cfg.Routes {
			u, err := url.Parse(routeURL(r))
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("cluster: --cluster-routes %q: want nats-route://HOST:PORT", r)
			}
			o.Routes = append(o.Routes, u)
		}
	}
	srv, err := server.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("cluster: embedded NATS: %w", err)
	}
	// The server reports a port it cannot listen on only through its
	// logger's Fatalf: without it the start waited 5 s and could only guess.
	fatal := make(chan string, 1)
	srv.SetLogger(fatalLogger(fatal), false, false)
	srv.Start()
	ready := make(chan bool, 1)
	go func() { ready <- srv.ReadyForConnections(5 * time.Second) }()
	var up bool
	select {
	case msg := <-fatal:
		srv.Shutdown()
		return nil, fmt.Errorf("cluster: embedded NATS on %s did not start: %s", addr, msg)
	case up = <-ready:
	}
	if !up {
		srv.Shutdown()
		if cfg.RouteAddr != "" {
			return nil, fmt.Errorf("cluster: embedded NATS on %s, routes on %s, did not start (are the ports free?)", addr, cfg.RouteAddr)
		}
		return nil, fmt.Errorf("cluster: embedded NATS on %s did not start (is the port free?)", addr)
	}
	a := srv.Addr().(*net.TCPAddr)
	e := &embedded{srv: srv, url: "nats://" + net.JoinHostPort(connectHost(host, a), strconv.Itoa(a.Port))}
	if o.Cluster.Port != 0 {
		ra := srv.ClusterAddr()
		if ra == nil {
			srv.Shutdown()
			return nil, fmt.Errorf("cluster: embedded NATS: no route listener on %s (is the port free?)", cfg.RouteAddr)
		}
		e.routeURL = "nats-route://" + net.JoinHostPort(connectHost(o.Cluster.Host, ra), strconv.Itoa(ra.Port))
		e.routesTo = cfg.Routes
	}
	e.logListening(log.Debug()) // at info once the node has started (a refused start logs nothing more)
	return e, nil
}

// logListening logs where the embedded server listens, on ev.
func (e *embedded) logListening(ev *zerolog.Event) {
	ev = ev.Str("addr", e.url)
	if e.routeURL != "" {
		ev = ev.Str("routes_at", e.routeURL).Strs("routes", e.routesTo)
	}
	ev.Msg("cluster: embedded NATS server listening")
}

// splitPort splits host:port (port 0: any free one).
func splitPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, errors.New("bad port")
	}
	if p == 0 {
		p = server.RANDOM_PORT
	}
	return host, p, nil
}

// routeURL accepts HOST:PORT for nats-route://HOST:PORT.
func routeURL(r string) string {
	if !strings.Contains(r, "://") {
		return "nats-route://" + r
	}
	return r
}

// Routes says how many routes to other NATS servers are up.
func (e *embedded) routes() int { return e.srv.NumRoutes() }

// waitRoutes waits, up to limit, until a route is up and the servers have
// told each other their subscriptions (routeSettle), so that the name and
// number claims that follow hear the nodes on the other servers. It
// reports whether a route came up.
func (e *embedded) waitRoutes(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for e.srv.NumRoutes() == 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(routeSettle)
	return true
}

// Route timing: how long a node with --cluster-routes waits for its first
// route before it joins (alone, if none came), and how long it then lets
// the servers exchange their subscriptions and the other nodes' heartbeats
// arrive.
const (
	routeWait   = 5 * time.Second
	routeSettle = heartbeat + 100*time.Millisecond
)

func connectHost(host string, a *net.TCPAddr) string {
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return "127.0.0.1"
	}
	if host == "" {
		return a.IP.String()
	}
	return host
}

func (e *embedded) close() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// fatalLogger passes the embedded server's fatal errors (a port it cannot
// listen on) to startEmbedded, and drops everything else (NoLog).
type fatalLogger chan string

func (f fatalLogger) Fatalf(format string, v ...any) {
	select {
	case f <- fmt.Sprintf(format, v...):
	default:
	}
}
func (fatalLogger) Noticef(string, ...any) {}
func (fatalLogger) Warnf(string, ...any)   {}
func (fatalLogger) Errorf(string, ...any)  {}
func (fatalLogger) Debugf(string, ...any)  {}
func (fatalLogger) Tracef(string, ...any)  {}
