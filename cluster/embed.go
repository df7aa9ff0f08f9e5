package cluster

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// embedded is a NATS server run inside the master (--cluster-embed), so one
// machine needs nothing else and other nodes can join it.
type embedded struct {
	srv *server.Server
	url string
}

func startEmbedded(addr string, log zerolog.Logger) (*embedded, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: --cluster-embed %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return nil, fmt.Errorf("cluster: --cluster-embed %q: bad port", addr)
	}
	if p == 0 {
		p = server.RANDOM_PORT
	}
	if host == "" {
		host = "0.0.0.0"
	}
	srv, err := server.NewServer(&server.Options{Host: host, Port: p, NoSigs: true, NoLog: true,
		ServerName: "forkd-embedded", MaxPayload: 8 << 20})
	if err != nil {
		return nil, fmt.Errorf("cluster: embedded NATS: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(5 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("cluster: embedded NATS on %s did not start (is the port free?)", addr)
	}
	a := srv.Addr().(*net.TCPAddr)
	url := "nats://" + net.JoinHostPort(connectHost(host, a), strconv.Itoa(a.Port))
	log.Info().Str("addr", url).Msg("cluster: embedded NATS server listening")
	return &embedded{srv: srv, url: url}, nil
}

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
