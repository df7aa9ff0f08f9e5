package worker

import (
	"context"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"

	"github.com/forkd/forkd/ipc"
)

// The start-up configuration crosses the exec boundary: ipc owns it.
type (
	Config   = ipc.WorkerConfig
	Listener = ipc.WorkerListener
)

// EnvConfig carries a worker's Config (see ipc.EnvWorkerConfig).
const EnvConfig = ipc.EnvWorkerConfig

// Modes (see ipc.ModeProcess).
const (
	ModeProcess = ipc.ModeProcess
	ModeBase    = ipc.ModeBase
)

// ConfigFromEnv reads the Config the master put in the environment.
func ConfigFromEnv() (Config, bool, error) { return ipc.WorkerConfigFromEnv() }

// App is what the worker calls: the user's program, as the root package
// adapts it. Threading: HTTP runs in a goroutine per request and may block;
// Open, Message, Resume and Close of one connection run in order, one at a
// time, and blocking them delays only that connection; PipeMessage runs in
// its own goroutine; Task runs in a goroutine per task (task workers only).
// A panic in any of them is recovered by the worker.
type App interface {
	WorkerStart(w *Worker) error
	WorkerStop(w *Worker, reload bool)
	HTTP(w *Worker, listener int, ctx *fasthttp.RequestCtx)
	Open(c *Conn)
	Message(c *Conn, op int, data []byte)
	Resume(c *Conn)
	Close(c *Conn, code int, reason string)
	BufferFull(c *Conn)
	BufferDrain(c *Conn)
	PipeMessage(w *Worker, from int, data []byte)
	Task(w *Worker, from int, data []byte) ([]byte, error)
	// RunProcess runs a user process's function (Config.Process) until ctx
	// ends; its return while ctx is live means the process must restart.
	RunProcess(ctx context.Context, w *Worker) error
}

// Close codes used by the worker.
const (
	closeInternal = websocket.CloseInternalServerErr
)
