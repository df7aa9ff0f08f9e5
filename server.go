package forkd

import (
	"crypto/tls"
	"fmt"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd/reactor"
)

// Mode is the process model.
type Mode string

// Modes.
const (
	ModeProcess Mode = "process" // Swoole's SWOOLE_PROCESS: the master holds the connections
	ModeBase    Mode = "base"    // Swoole's SWOOLE_BASE: each worker accepts and owns its own
)

// Protocol is what a listener speaks.
type Protocol int

// Protocols.
const (
	HTTP      Protocol = iota // HTTP/1.1, and WebSocket by upgrade unless NoUpgrade
	WebSocket                 // WebSocket only
)

// MessageType is a WebSocket message's opcode.
type MessageType int

// Message types.
const (
	TextMessage   MessageType = 1
	BinaryMessage MessageType = 2
)

// Common WebSocket close codes.
const (
	CloseNormal       = 1000
	CloseGoingAway    = 1001
	CloseProtocol     = 1002
	CloseInvalidData  = 1007
	ClosePolicy       = 1008
	CloseTooBig       = 1009
	CloseInternal     = 1011
	CloseTryAgainLate = 1013
)

// ConnID identifies a connection across all processes of a server. It
// encodes the process holding the connection and a sequence, so a push
// goes straight to its holder and an id of a closed connection is never
// mistaken for a new one. It always fits in 53 bits (below 2^53): PHP's
// int, a signed SQL BIGINT and a JavaScript Number hold it exactly, so a
// backend or a browser may treat it as a number (docs/architecture.md has
// the layout).
type ConnID uint64

// String renders the id as users and the HTTP API see it.
func (id ConnID) String() string { return strconv.FormatUint(uint64(id), 10) }

// ParseConnID parses an id rendered by String.
func ParseConnID(s string) (ConnID, error) {
	v, err := reactor.ParseID(s)
	if err != nil {
		return 0, fmt.Errorf("forkd: bad connection id %q", s)
	}
	return ConnID(v), nil
}

// HTTPHandler serves one HTTP request. Threading: it runs in a worker
// process, in a goroutine of its own per request, and may block.
type HTTPHandler func(w *Worker, ctx *fasthttp.RequestCtx)

// Listener is one port with its protocol and callbacks (Swoole's
// addlistener, a Hyperf `servers` entry).
type Listener struct {
	Name     string   // "http", "ws", ...; flags --http and --ws set those two addresses
	Addr     string   // default address, e.g. "0.0.0.0:9501"
	Protocol Protocol // HTTP or WebSocket
	// NoUpgrade makes an HTTP listener refuse WebSocket upgrades (400),
	// Swoole's open_websocket_protocol=false.
	NoUpgrade bool
	// Label names the listener's root URL in the line `start` prints when
	// the server is ready, e.g. "chat page" prints
	// "chat page: http://127.0.0.1:9501/" (default: the listener's Name).
	Label string

	// TLS makes the listener speak https/wss. TLSCert and TLSKey name PEM
	// files: the master reads them (at start, and again on `reload`, so a
	// renewed certificate is used for new connections with none dropped)
	// and hands them to BASE-mode workers itself, so a worker never reads
	// a key file. TLS is a tls.Config of your own (GetCertificate, client
	// certificates, ciphers...); certificate files, when also set, are
	// served first. Unset fields get TLS 1.2 and up and ALPN http/1.1.
	// The flags --http-tls-cert/--http-tls-key, --ws-tls-cert/--ws-tls-key
	// and --listen-tls-cert/--listen-tls-key NAME=FILE override the files.
	// Note that code building a tls.Config runs in every process (see the
	// package doc); one that loads its own key files makes each worker
	// read them.
	TLS             *tls.Config
	TLSCert, TLSKey string

	// Handler serves HTTP requests (HTTP listeners).
	Handler HTTPHandler

	// WebSocket callbacks. On an HTTP listener that accepts upgrades and
	// sets none of them, the first WebSocket listener's callbacks serve
	// (as a Swoole WebSocket server's onMessage serves its HTTP ports).
	//
	// Threading: the callbacks of one connection run in a worker, one at a
	// time and in order; blocking one delays only that connection. data is
	// valid until the callback returns. A panic closes the connection
	// (1011) and is logged with its stack; the worker lives on.
	OnOpen    func(c *Conn)
	OnMessage func(c *Conn, t MessageType, data []byte)
	OnClose   func(c *Conn, code int, reason string)
	// OnResume (PROCESS mode) runs in a worker that takes over a live
	// connection from a worker that crashed or was reloaded: c carries the
	// original handshake (path, query, headers) and id, so per-connection
	// state (SetContext) can be rebuilt. The connection is not new: OnOpen
	// does not run again, and with OnResume nil nothing runs (the client
	// sees nothing; the connection keeps its rooms, which live in the
	// master). Threading: as OnOpen, before the connection's next message.
	OnResume func(c *Conn)
}

func (l *Listener) hasWS() bool {
	return l.OnOpen != nil || l.OnMessage != nil || l.OnClose != nil || l.OnResume != nil
}

// Server is a whole program: its listeners and process-level callbacks.
// Fill it in, then call Run.
type Server struct {
	Listeners []*Listener

	// OnWorkerStart runs in each worker (and task worker) before it takes
	// work; open per-process resources here. An error stops that worker
	// from starting (at start: the server fails; at reload: the reload
	// stops and the old worker keeps serving).
	OnWorkerStart func(w *Worker) error
	// OnWorkerStop runs in a worker after it has drained, on stop and reload.
	OnWorkerStop func(w *Worker)
	// OnWorkerReload runs in a worker that is being replaced by a reload,
	// before OnWorkerStop.
	OnWorkerReload func(w *Worker)
	// OnPipeMessage receives Worker.SendMessage data (Swoole's
	// onPipeMessage). Threading: a goroutine per message.
	OnPipeMessage func(w *Worker, from int, data []byte)
	// OnTask runs a task in a task worker (Swoole's onTask); its result or
	// error goes back to the worker that sent it; from is the sending
	// worker's id. Threading: in a task worker process, one task at a time
	// (as a Swoole task worker), in a goroutine of its own; it may block,
	// which delays only the tasks queued behind it on that task worker (the
	// master hands new tasks to an idle task worker first). A panic fails
	// that task (ErrTaskFailed); the task worker lives on.
	OnTask func(w *Worker, from int, data []byte) ([]byte, error)
	// OnBufferFull runs when a push to c failed because its send buffer is
	// full (the pusher also gets ErrBufferFull); OnBufferDrain when the
	// buffer has emptied again. Threading: in the worker serving c, in order
	// with c's other callbacks in PROCESS mode; must not block long.
	OnBufferFull  func(c *Conn)
	OnBufferDrain func(c *Conn)

	// Processes are long-running functions, each in a process of its own,
	// supervised like workers (Swoole's addProcess); see Process.
	Processes []*Process

	// NoReload keeps the workers through `server reload` (Workerman's
	// reloadable = false); task workers still reload.
	NoReload bool

	// Name shows in the CLI's help (default: the binary's base name).
	Name string
	// Usage is the one line the CLI's help shows under Name, saying what
	// the program is (default: "a forkd server").
	Usage string
}

func (s *Server) wsListener() *Listener {
	for _, l := range s.Listeners {
		if l.Protocol == WebSocket {
			return l
		}
	}
	return nil
}

// callbacks returns the listener whose WebSocket callbacks serve l.
func (s *Server) callbacks(l *Listener) *Listener {
	if l.Protocol == HTTP && !l.hasWS() {
		if ws := s.wsListener(); ws != nil {
			return ws
		}
	}
	return l
}
