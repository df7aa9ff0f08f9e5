// Package reactor holds client connections: it accepts on listeners, parses
// HTTP with fasthttp (plus the framing checks fasthttp does not make:
// httpcheck.go), answers the WebSocket handshake and reads and writes
// WebSocket frames itself (wsframe.go, wsframereader.go: strict RFC 6455, UTF-8 validated
// incrementally, nothing processed after a failing frame), absorbs slow and
// malformed clients, closes without resets (linger.go), queues output per
// connection within a bound, and hands complete requests and messages to a
// Handler. It runs no user code itself.
//
// The same reactor serves both modes: in PROCESS mode it lives in the master
// and its Handler forwards over ipc to the workers; in BASE mode each worker
// runs one on the SO_REUSEPORT sockets the master handed down and its Handler
// calls the user's callbacks directly. Rooms (groups of connections) live
// here too, since they are sets of the connections a reactor holds.
//
// It also reads the ipc pipes for both ends (PipeReader, pipewait_linux.go):
// the wait on the runtime's poller before a read is the one its keep-alive
// connections use.
package reactor
