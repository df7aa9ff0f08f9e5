package forkd

import (
	"encoding/json"
	"time"

	"github.com/rs/zerolog"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/worker"
)

// Worker is the process running your callbacks: a worker (id 0..N-1) or a
// task worker (id N..N+T-1). Ids are stable across restarts and reloads.
type Worker struct {
	w   *worker.Worker
	s   *Server
	api *APIGuard
}

// API is the guard for operator endpoints, as the server was started
// (--api-token, FORKD_API_TOKEN or --api-token-file; --api-allow). Call
// it first in every handler that acts on other connections:
//
//	if !w.API().Check(ctx) { return } // answered 401 or 403
func (w *Worker) API() *APIGuard { return w.api }

// ID is the worker's stable id.
func (w *Worker) ID() int { return w.w.ID() }

// Pid is the worker process's pid.
func (w *Worker) Pid() int { return w.w.Pid() }

// Mode is the server's mode.
func (w *Worker) Mode() Mode { return Mode(w.w.Config().Mode) }

// Workers is the number of workers (not counting task workers).
func (w *Worker) Workers() int { return w.w.Config().Workers }

// IsTask reports whether this is a task worker.
func (w *Worker) IsTask() bool { return w.w.IsTask() }

// Log is the worker's logger; its lines carry role, worker id and pid.
func (w *Worker) Log() *zerolog.Logger { return w.w.Log() }

// Push sends a message to any connection, held by any process, and reports
// the real outcome: nil once the holder has queued it, ErrNoConnection,
// ErrClosed, ErrBufferFull, ErrTooLarge or ErrTimeout.
func (w *Worker) Push(id ConnID, t MessageType, data []byte) error {
	return outcomeErr(w.w.Push(uint64(id), int(t), data))
}

// Close closes any connection.
func (w *Worker) Close(id ConnID, code int, reason string) error {
	return outcomeErr(w.w.CloseConn(uint64(id), code, reason))
}

// ConnInfo describes a connection, as `server connections --json` lists
// it (same fields and JSON names).
type ConnInfo struct {
	ID       string `json:"id"`       // the ConnID in decimal
	Worker   int    `json:"worker"`   // the worker serving it
	Listener string `json:"listener"` // the listener's Name
	Remote   string `json:"remote"`   // the client's address
	Protocol string `json:"protocol"` // "http" or "websocket"
	Path     string `json:"path,omitempty"`
	Since    string `json:"since"` // when it was accepted, RFC 3339 (UTC, nanoseconds)
	BytesIn  uint64 `json:"bytes_in"`
	BytesOut uint64 `json:"bytes_out"`
	Queued   int    `json:"queued,omitempty"` // bytes waiting in its send buffer
	UID      string `json:"uid,omitempty"`    // the user bound to it (BindUID), GatewayWorker's getUidByClientId
}

// Info describes any connection; ErrNoConnection once it is gone.
func (w *Worker) Info(id ConnID) (ConnInfo, error) {
	i, out := w.w.Info(uint64(id))
	return ConnInfo{ID: i.ID, Worker: i.Worker, Listener: i.Listener, Remote: i.Remote, Protocol: i.Protocol,
		Path: i.Path, Since: i.Since, BytesIn: i.BytesIn, BytesOut: i.BytesOut, Queued: i.Queued, UID: i.UID}, outcomeErr(out)
}

// Exists reports whether a connection is open.
func (w *Worker) Exists(id ConnID) bool {
	_, err := w.Info(id)
	return err == nil
}

// Join puts any connection in a room. When it returns nil the connection
// is a member everywhere: a Broadcast sent afterwards, from any process,
// reaches it.
func (w *Worker) Join(id ConnID, room string) error {
	if err := checkRoom(room); err != nil {
		return err
	}
	return outcomeErr(w.w.Join(uint64(id), room))
}

// Leave takes any connection out of a room. Closed connections leave
// their rooms by themselves.
func (w *Worker) Leave(id ConnID, room string) error {
	return outcomeErr(w.w.Leave(uint64(id), room))
}

// Broadcast sends to every member of room, except one connection (0 for
// none), wherever they are held; each process boundary is crossed once, and
// only towards processes holding members. It returns how many members the
// message was queued to; members it skipped (send buffer full, see
// OnBufferFull, or closing) are not counted: BroadcastReport says how many.
func (w *Worker) Broadcast(room string, t MessageType, data []byte, except ConnID) (int, error) {
	r, err := w.BroadcastReport(room, t, data, except)
	return r.Reached, err
}

// BroadcastResult is what a broadcast did: the members of the room it was
// queued to, and those it skipped because their send buffer was full (or
// they were closing). Reached + Skipped is the member count.
type BroadcastResult struct {
	Reached int `json:"reached"`
	Skipped int `json:"skipped"`
	// Seq numbers the message in its room (monotonic per room; 0 for a
	// push to a uid) and Epoch is the room's history epoch (users.go).
	Seq   uint64 `json:"seq,omitempty"`
	Epoch uint32 `json:"epoch,omitempty"`
}

// BroadcastReport is Broadcast, reporting members reached and skipped.
func (w *Worker) BroadcastReport(room string, t MessageType, data []byte, except ConnID) (BroadcastResult, error) {
	return w.publish(room, t, data, except, nil, false)
}

// RoomCount returns how many connections are in room, across all workers.
func (w *Worker) RoomCount(room string) (int, error) {
	n, out := w.w.Count(room)
	return n, outcomeErr(out)
}

// SendMessage sends data to worker `to`'s OnPipeMessage (Swoole's
// sendMessage); nil once it is queued to that worker.
func (w *Worker) SendMessage(to int, data []byte) error {
	return outcomeErr(w.w.SendMessage(to, data))
}

// SendMessageNode sends data to OnPipeMessage of worker `to` on cluster
// node `node` (see Node; 0 is this server). ErrUnavailable when that node
// is not reachable within the cluster's bound (docs/cluster.md).
func (w *Worker) SendMessageNode(node, to int, data []byte) error {
	return outcomeErr(w.w.SendMessageNode(node, to, data))
}

// Node returns this server's cluster node number, the one its connection
// ids carry (0: no cluster, or not joined yet).
func (w *Worker) Node() int { return w.w.Node() }

// TaskWait runs data through OnTask in a task worker and waits for the
// result (Swoole's taskwait). ErrTimeout after timeout (0: 5s);
// ErrUnavailable without task workers; ErrBufferFull when their queues are
// full; ErrTaskFailed wrapping the task's error otherwise.
func (w *Worker) TaskWait(data []byte, timeout time.Duration) ([]byte, error) {
	res, out := w.w.TaskWait(data, timeout)
	return res, taskErr(res, out)
}

// Task runs data through OnTask without waiting (Swoole's task); done, if
// not nil, gets the result in a goroutine of this worker (onFinish).
func (w *Worker) Task(data []byte, timeout time.Duration, done func(result []byte, err error)) {
	w.w.Task(data, timeout, func(res []byte, out ipc.Outcome) {
		if done != nil {
			done(res, taskErr(res, out))
		}
	})
}

// TaskWaitMulti runs several tasks at once and waits for all (Swoole's
// taskWaitMulti); results and errors are in the order of datas.
func (w *Worker) TaskWaitMulti(datas [][]byte, timeout time.Duration) ([][]byte, []error) {
	res, outs := w.w.TaskWaitMulti(datas, timeout)
	errs := make([]error, len(outs))
	for i, o := range outs {
		errs[i] = taskErr(res[i], o)
	}
	return res, errs
}

// Tick runs f every interval in this process until ClearTimer or the
// worker stops (Workerman's Timer::add). Each timer has its own goroutine:
// a slow callback delays only its own timer, and missed ticks are skipped.
// Timers keep running while the worker drains and are cleared before
// OnWorkerStop; a panic in f is logged and the timer goes on.
func (w *Worker) Tick(interval time.Duration, f func()) int { return w.w.Tick(interval, f) }

// After runs f once after delay (Timer::add with persistent=false).
func (w *Worker) After(delay time.Duration, f func()) int { return w.w.After(delay, f) }

// ClearTimer stops a timer (Timer::del); false if it was already gone (or
// was an After that has fired). It never waits for a running callback, so a
// callback may clear its own timer; once it returns no new run starts.
func (w *Worker) ClearTimer(id int) bool { return w.w.Clear(id) }

// Stats is the worker's counters, as JSON for a status page.
func (w *Worker) Stats() json.RawMessage {
	b, _ := json.Marshal(w.w.Stats())
	return b
}
