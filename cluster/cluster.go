// Package cluster joins servers into one on NATS: push, close and query a
// connection held by another node, broadcast to rooms spread over nodes,
// pipe messages to another node's workers, and cluster-wide presence.
//
// Only the master of each server talks to NATS; workers reach the cluster
// through the master's bus as they reach each other. Delivery is at most
// once: an operation that cannot reach its node within Config.Timeout fails
// with ipc.Unavailable, never hangs and is never retried.
package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// MaxNode is the highest node number (connection ids carry it in 6 bits;
// 0 means "this server" and is never a cluster node's number).
const MaxNode = 63

// Config says how to join.
type Config struct {
	URLs        []string      // nats://host:port servers to connect to
	Name        string        // this node's name, unique in the cluster; default the hostname
	Embed       string        // host:port: run a NATS server in this process there ("": none)
	RouteAddr   string        // host:port: the embedded server accepts routes from other NATS servers there ("": none)
	Routes      []string      // the embedded server routes to these NATS servers' route ports (nats-route://host:port)
	Timeout     time.Duration // bound of one cross-node operation; default 1s
	Token       string        // NATS auth token
	User        string        // NATS user
	Password    string        // NATS password
	Creds       string        // NATS credentials file
	CAFile      string        // TLS: CA to verify the NATS servers
	CertFile    string        // TLS: client certificate
	KeyFile     string        // TLS: client key
	MaxInflight int           // cross-node calls waiting at once; default 4096
	Log         zerolog.Logger
}

// NodeInfo is one node as presence shows it.
type NodeInfo struct {
	Name    string `json:"name"`
	Node    int    `json:"node"`
	Mode    string `json:"mode"`
	Workers int    `json:"workers"`
	Conns   int    `json:"connections"`
	// Uncounted are the BASE workers that did not answer the count in
	// time (stopped, hung): their connections are not in Conns.
	Uncounted []int     `json:"uncounted_workers,omitempty"`
	Pid       int       `json:"pid"`
	Since     time.Time `json:"since"`
	Dropped   uint64    `json:"dropped"`           // cluster messages this node dropped (slow consumer, full)
	Leaving   bool      `json:"leaving,omitempty"` // a goodbye
	LastSeen  time.Time `json:"last_seen"`
}

// Local is what this node offers the cluster (the master implements it).
// No method may block.
type Local interface {
	// Apply runs op (Push, Close, Query, Join, Leave, Pipe) here and calls
	// done once with the outcome, from any goroutine.
	Apply(op Op, done func(Result))
	// Broadcast delivers another node's room message to the members here
	// (one room's messages one at a time, in the order they were sent).
	Broadcast(room string, c Cast)
	// Count returns the members of room here.
	Count(room string) int
	// Info fills mode, workers and connections.
	Info() NodeInfo
	// Conns returns the connections here from offset on, at most limit,
	// each one JSON object, and the ids of the workers that did not answer
	// in time (BASE mode): their connections are not in the page.
	Conns(offset, limit int) ([]json.RawMessage, []int)
	// SetNode tells the local side its node number (ids issued from now
	// on carry it).
	SetNode(n int)
	// PeersChanged says the set of nodes up (or this node's link to NATS)
	// changed: rooms' history owners may have moved (see n.Owner). It may
	// come before Start returns.
	PeersChanged(n *Node)
}

// ErrNameTaken means another running node has this node's name.
var ErrNameTaken = errors.New("cluster: node name is taken")

// Node is this server's membership.
type Node struct {
	cfg   Config
	local Local
	log   zerolog.Logger
	nc    *nats.Conn
	embed *embedded
	urls  []string // the NATS servers it connects to (credentials redacted)

	num atomic.Int32 // 0 until joined
	// announced: the server this node belongs to has started (Announce).
	// Until then what the node logs belongs to a start that may still be
	// refused (a taken name here, a port in use later): it is logged at
	// debug, a refusal is Start's error, and Announce logs the summary at
	// info.
	announced atomic.Bool
	joining   sync.Mutex
	refused   atomic.Value // string: why joining was refused
	nodeSub   *nats.Subscription
	nameMu    sync.Mutex
	name      nameClaim // the claim of this node's name (name.go)

	mu      sync.Mutex
	peers   map[int]NodeInfo
	rooms   map[string]*nats.Subscription
	members map[string]bool // rooms with members here
	holds   map[string]int  // rooms held subscribed (HoldRoom)
	view    string          // the nodes up, as last told to PeersChanged

	inflight chan struct{}
	dropped  atomic.Uint64
	calls    [8]atomic.Uint64 // by ipc.Outcome
	casts    atomic.Uint64
	since    time.Time
	stop     chan struct{}
	wg       sync.WaitGroup
}

// Heartbeat timing: a node not heard of for peerTTL is gone.
const (
	heartbeat = time.Second
	peerTTL   = 3500 * time.Millisecond
	// closeFlush bounds Close's flush of the leaving notice.
	closeFlush = time.Second
)

// Start joins the cluster. It waits up to joinWait for the first
// connection: a node that cannot reach NATS starts anyway (serving locally)
// and joins when NATS comes back. A duplicate name is an error.
func Start(cfg Config, local Local) (*Node, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = 4096
	}
	if cfg.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("cluster: node name: %w", err)
		}
		cfg.Name = h
	}
	n := &Node{cfg: cfg, local: local, log: cfg.Log.With().Str("node", cfg.Name).Logger(),
		peers: make(map[int]NodeInfo), rooms: make(map[string]*nats.Subscription),
		members: make(map[string]bool), holds: make(map[string]int),
		inflight: make(chan struct{}, cfg.MaxInflight), since: time.Now(), stop: make(chan struct{})}
	n.refused.Store("")
	urls := append([]string(nil), cfg.URLs...)
	if cfg.Embed != "" {
		e, err := startEmbedded(cfg, n.log)
		if err != nil {
			return nil, err
		}
		n.embed = e
		urls = append([]string{e.url}, urls...)
	}
	if len(urls) == 0 {
		n.Close()
		return nil, errors.New("cluster: no NATS server (--cluster or --cluster-embed)")
	}
	n.urls = redact(urls)
	connected := make(chan struct{}, 1)
	wake := make(chan struct{}, 1) // (re)connected: join if not joined yet
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	opts := []nats.Option{
		nats.Name("forkd " + cfg.Name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, 100*time.Millisecond),
		nats.Timeout(cfg.Timeout),
		nats.PingInterval(2 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.NoEcho(),
		// Nothing is buffered while disconnected: an operation fails at
		// once (at most once), rather than firing late.
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(*nats.Conn) {
			select {
			case connected <- struct{}{}:
			default:
			}
			n.event(zerolog.InfoLevel).Msg("cluster: connected to NATS")
			poke()
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			n.log.Info().Str("server", c.ConnectedUrlRedacted()).Msg("cluster: reconnected to NATS")
			poke()
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			select {
			case <-n.stop:
				return // leaving
			default:
			}
			n.log.Warn().Err(err).Msg("cluster: lost NATS; cross-node operations fail until it is back")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				n.dropped.Add(1)
			}
			n.log.Warn().Err(err).Msg("cluster: NATS error")
		}),
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n.nc = nc
	// Listen before joining: every node answers counts and heartbeats.
	if _, err := nc.Subscribe(subjPresence, n.onPresence); err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if _, err := nc.Subscribe(subjCount, n.onCount); err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	up := nc.IsConnected()
	if !up {
		select {
		case <-connected:
			up = true
		case <-time.After(2 * time.Second):
		}
	}
	if up && n.embed != nil && len(cfg.Routes) > 0 && !n.embed.waitRoutes(routeWait) {
		n.log.Warn().Strs("routes", cfg.Routes).Msg("cluster: no route to another NATS server yet; joining alone")
	}
	if up {
		n.join()
		if why := n.refused.Load().(string); why != "" {
			n.Close()
			return nil, fmt.Errorf("%w: %s", ErrNameTaken, why)
		}
	} else {
		// At debug until Announce: a start refused later (a port in use)
		// prints its one line, not this one first.
		n.event(zerolog.WarnLevel).Strs("servers", redact(urls)).Msg("cluster: NATS unreachable; serving locally, joining when it is back")
	}
	n.wg.Add(2)
	go n.beat()
	go func() {
		defer n.wg.Done()
		for {
			select {
			case <-n.stop:
				return
			case <-wake:
				n.join()
			}
		}
	}()
	return n, nil
}

// Announce logs, at info, what Start did (the embedded server's address,
// the connection, the node number), once the server this node belongs to
// is ready; from then on the node logs at the levels it names. Before,
// those lines are at debug: a server whose start fails never ran, and its
// one line is the reason.
func (n *Node) Announce() {
	if n.announced.Swap(true) {
		return
	}
	if n.embed != nil {
		n.embed.logListening(n.log.Info())
	}
	if n.nc.IsConnected() {
		n.log.Info().Str("server", n.nc.ConnectedUrlRedacted()).Msg("cluster: connected to NATS")
	} else {
		n.log.Warn().Strs("servers", n.urls).Msg("cluster: NATS unreachable; serving locally, joining when it is back")
	}
	if num := n.num.Load(); num != 0 {
		n.log.Info().Int("node_number", int(num)).Msg("cluster: joined")
	}
}

// event is a log event at level once the node is announced, at debug
// before (see Announce).
func (n *Node) event(level zerolog.Level) *zerolog.Event {
	if !n.announced.Load() {
		return n.log.Debug()
	}
	return n.log.WithLevel(level)
}

func redact(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		if at := strings.LastIndex(u, "@"); at >= 0 {
			if s := strings.Index(u, "://"); s >= 0 && s < at {
				u = u[:s+3] + "***" + u[at:]
			}
		}
		out[i] = u
	}
	return out
}

// Number returns this node's number (0: not joined).
func (n *Node) Number() int { return int(n.num.Load()) }

// Name returns this node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Connected reports whether NATS is reachable now.
func (n *Node) Connected() bool { return n.nc != nil && n.nc.IsConnected() }

// Dropped counts cluster messages this node dropped or refused.
func (n *Node) Dropped() uint64 { return n.dropped.Load() }

// Close leaves the cluster: a goodbye, then the connection and any
// embedded server.
func (n *Node) Close() {
	select {
	case <-n.stop:
		return
	default:
		close(n.stop)
	}
	n.wg.Wait()
	if n.nc != nil {
		// The leaving notice is flushed only to a NATS that is there, and
		// briefly: while NATS is down, Flush would wait its default 10 s,
		// and a stop (or a start refused for a port in use) with it.
		if n.nc.IsConnected() {
			n.publishInfo(true)
			n.nc.FlushTimeout(closeFlush)
		}
		n.nc.Close()
	}
	if n.embed != nil {
		n.embed.close()
	}
}
