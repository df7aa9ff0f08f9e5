// Package ipc is the wire format between the master and its workers: a
// fixed 24-byte header (const.go) followed by a payload, over two pipes per
// worker (pipe_linux.go says why not a socket pair). Writer batches frames from many goroutines into
// few syscalls with no allocation per frame; Reader decodes frames in place.
// The package imports nothing of this module and takes any io.Reader or
// io.Writer, so codec tests run over net.Pipe, socketpairs and unix sockets.
// It also owns every other value that crosses a process boundary: the
// worker's start-up configuration (config.go), drain codes and payload
// layouts (layout.go, payload.go, http.go).
package ipc
