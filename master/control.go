package master

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/reactor"
)

// Files in the run dir.
const (
	PidName    = "server.pid"
	SocketName = "server.sock"
)

// refusedMsg is the master's answer to a peer SO_PEERCRED refuses.
const refusedMsg = "permission denied"

// maxControlRequest bounds what a control client may send.
const maxControlRequest = 64 << 10

// Request is a control-socket command (one JSON line).
type Request struct {
	Cmd       string `json:"cmd"` // status, connections, stop, reload, reopen-logs
	Graceful  bool   `json:"graceful,omitempty"`
	TasksOnly bool   `json:"tasks_only,omitempty"`
	TLSOnly   bool   `json:"tls_only,omitempty"` // reload: re-read the certificates, replace no worker
	// connections --cluster: one page of node Node's connections from
	// Offset on (the CLI asks page after page, node after node).
	Node   int `json:"node,omitempty"`
	Offset int `json:"offset,omitempty"`
}

// Response answers a Request (one JSON line).
type Response struct {
	Error       string       `json:"error,omitempty"`
	Code        string       `json:"code,omitempty"` // with Error: what failed (ctlerr.go)
	Status      *Status      `json:"status,omitempty"`
	Connections []ConnInfo   `json:"connections,omitempty"`
	Reload      []ReloadLine `json:"reload,omitempty"`
	// Page: connections --cluster, one page of a node's connections.
	Page []json.RawMessage `json:"page,omitempty"`
	// MissingWorkers: with Connections (or Page, that node's), the workers
	// that did not answer in time (BASE mode); their connections are not
	// listed.
	MissingWorkers []int `json:"missing_workers,omitempty"`
}

// ErrNoAnswer means the master took a request and closed without an
// answer (as a stopping master may).
var ErrNoAnswer = errors.New("control: no answer from master")

// ErrNotRunning means no master answers in the run dir.
var ErrNotRunning = errors.New("server is not running")

// takePidFile locks run/server.pid for the master's life. The lock, not the
// file's existence, says a master runs: a master that crashed (even by
// SIGKILL) leaves a file whose lock is free, and that never blocks a start.
func takePidFile(dir string) (func(), error) {
	path := filepath.Join(dir, PidName)
	f, err := OpenNoFollow("pid file", path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := flockRetry(f); err != nil {
		b, _ := io.ReadAll(f)
		f.Close()
		pid := strings.TrimSpace(string(b))
		if pid == "" {
			pid = "?"
		}
		return nil, fmt.Errorf("%w (pid %s, run dir %s)", ErrRunning, pid, dir)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("pid file: %w", err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("pid file: %w", err)
	}
	return func() {
		os.Remove(path)
		f.Close()
	}, nil
}

// flockRetry takes f's exclusive lock. A CLI command (ReadPid: status,
// stop, ...) holds the shared lock for an instant: a start at that instant
// was refused as "already running (pid ?)". A running master holds the lock
// for good, so the last try fails the same way after pidLockWait.
func flockRetry(f *os.File) error {
	deadline := time.Now().Add(pidLockWait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil || !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const pidLockWait = 200 * time.Millisecond

// ReadPid returns the pid of the master running in dir, or ErrNotRunning.
func ReadPid(dir string) (int, error) {
	path := filepath.Join(dir, PidName)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return 0, fmt.Errorf("%w (reading %s)", ErrPermission, path)
		}
		return 0, fmt.Errorf("%w (no pid file in %s)", ErrNotRunning, dir)
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB) == nil {
		return 0, fmt.Errorf("%w (stale pid file in %s)", ErrNotRunning, dir)
	}
	b, _ := io.ReadAll(f)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%w (unreadable pid file in %s)", ErrNotRunning, dir)
	}
	return pid, nil
}

type controlServer struct {
	ln *net.UnixListener
	m  *Master
	wg sync.WaitGroup
}

func listenControl(path string, m *Master) (*controlServer, error) {
	os.Remove(path) // stale from a crashed master: we hold the pid lock
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &controlServer{ln: ln, m: m}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *controlServer) Close() {
	s.ln.Close()
	s.wg.Wait()
}

func (s *controlServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.handle(c)
		}()
	}
}

func (s *controlServer) handle(c *net.UnixConn) {
	log := s.m.log
	uid, err := peerUID(c)
	if err != nil || !s.m.controlUID(uid) {
		log.Warn().Uint32("uid", uid).Err(err).Msg("control: peer refused")
		json.NewEncoder(c).Encode(Response{Error: refusedMsg, Code: CodePermission})
		return
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	// ReadBytes, not ReadSlice: a line may use the whole 64 KiB, not just
	// one buffer's worth; past the limit the LimitReader ends the line.
	line, err := bufio.NewReader(io.LimitReader(c, maxControlRequest)).ReadBytes('\n')
	if err != nil {
		log.Warn().Err(err).Int("limit", maxControlRequest).Msg("control: bad request")
		json.NewEncoder(c).Encode(Response{Error: "bad request: want one JSON line of at most 64 KiB", Code: CodeBadRequest})
		return
	}
	c.SetReadDeadline(time.Time{})
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		json.NewEncoder(c).Encode(Response{Error: "bad request: " + err.Error(), Code: CodeBadRequest})
		return
	}
	var resp Response
	switch req.Cmd {
	case "status":
		st := s.m.Status()
		resp.Status = &st
	case "connections":
		list, missing := s.m.ConnectionsJSON() // conns_json.go
		writeConnections(c, list, missing)
		return
	case "cluster-connections":
		resp.Page, resp.MissingWorkers, err = s.m.ClusterConnections(req.Node, req.Offset)
		if na := (*cluster.NoAnswerError)(nil); errors.As(err, &na) {
			// The node, not this master, failed: the CLI names the node it
			// asked about beside the reason, and goes on.
			resp.Error, resp.Code = na.Reason(), CodeNodeNoAnswer
		} else if err != nil {
			resp.Error = err.Error()
		}
	case "reload":
		if req.TLSOnly {
			resp.Reload, err = s.m.ReloadTLS()
		} else if req.TasksOnly && s.m.opts.TaskWorkers == 0 {
			// Not a silent success: the operator would think task code replaced.
			err = fmt.Errorf("master: reload --tasks-only: this server has no task workers (--task-workers)")
		} else {
			resp.Reload, err = s.m.Reload(req.TasksOnly)
		}
		if err != nil {
			resp.failed(req.Cmd, err)
		}
	case "reopen-logs":
		if err := s.m.ReopenLogs(); err != nil {
			resp.failed(req.Cmd, err)
		}
	case "stop":
		// Answer first: the master exits once stopped.
		json.NewEncoder(c).Encode(Response{})
		s.m.Stop(req.Graceful)
		return
	default:
		resp.refuse(CodeUnknownCommand, "unknown command %q", req.Cmd)
	}
	json.NewEncoder(c).Encode(resp)
}

// Call sends one request to the master running in dir and returns its
// response. A master that is not there is ErrNotRunning, said plainly.
func Call(dir string, req Request, timeout time.Duration) (*Response, error) {
	var resp Response
	err := callWith(dir, req, timeout, func(r io.Reader, resp *Response) error { return json.NewDecoder(r).Decode(resp) }, &resp)
	if err != nil && !errors.Is(err, ErrPermission) && !isControlError(err) {
		return nil, err
	}
	return &resp, err
}

func isControlError(err error) bool {
	var ce *ControlError
	return errors.As(err, &ce)
}

// callWith is Call reading the answer with read, which fills in r.
func callWith(dir string, req Request, timeout time.Duration, read func(io.Reader, *Response) error, r *Response) error {
	if _, err := ReadPid(dir); err != nil {
		return err
	}
	c, err := net.DialTimeout("unix", filepath.Join(dir, SocketName), 2*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("%w (control socket %s belongs to another user)", ErrPermission, filepath.Join(dir, SocketName))
		}
		return fmt.Errorf("%w (control socket: %v)", ErrNotRunning, err)
	}
	defer c.Close()
	if timeout > 0 {
		c.SetDeadline(time.Now().Add(timeout))
	}
	b, _ := json.Marshal(req)
	// A master that refuses the peer answers and closes without reading:
	// the write may then fail (EPIPE), and the answer is still there.
	_, werr := c.Write(append(b, '\n'))
	if err := read(c, r); err != nil {
		if werr != nil {
			return fmt.Errorf("control: %w", werr)
		}
		return fmt.Errorf("%w: %w", ErrNoAnswer, err)
	}
	if r.Error == refusedMsg {
		return fmt.Errorf("%w (the master runs as another user)", ErrPermission)
	}
	if r.Error != "" {
		return &ControlError{Code: r.Code, Text: r.Error}
	}
	return nil
}

// ConnInfo describes one connection in `server connections`.
type ConnInfo = reactor.Info
