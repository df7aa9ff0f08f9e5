package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

// EnvConfig carries a worker's Config (JSON) from master to worker.
const EnvConfig = "FORKD_WORKER_CONFIG"

// Modes.
const (
	ModeProcess = "process"
	ModeBase    = "base"
)

// Listener is one port as a worker sees it.
type Listener struct {
	Name     string `json:"name"`
	Addr     string `json:"addr"`
	Protocol string `json:"protocol"` // "http" or "websocket"
	Upgrade  bool   `json:"upgrade"`
	TLS      bool   `json:"tls,omitempty"` // terminated by the worker in BASE mode (keys: Secrets frame)
}

// Config is everything a worker process is told at spawn.
type Config struct {
	Mode           string        `json:"mode"`
	Slot           int           `json:"slot"` // worker id; task workers follow the workers
	Task           bool          `json:"task"`
	Workers        int           `json:"workers"`
	TaskWorkers    int           `json:"task_workers"`
	Listeners      []Listener    `json:"listeners"`
	MaxPackageSize int           `json:"max_package_size"`
	MaxSendBuffer  int           `json:"max_send_buffer"`
	MaxConns       int           `json:"max_conns"`
	MaxRequest     int           `json:"max_request"`
	HeartbeatIdle  time.Duration `json:"heartbeat_idle"`
	ReadTimeout    time.Duration `json:"read_timeout"`
	IdleTimeout    time.Duration `json:"idle_timeout"`
	ReloadWait     time.Duration `json:"reload_wait"`
	CallTimeout    time.Duration `json:"call_timeout"`
	LogFormat      string        `json:"log_format"`
	LogLevel       string        `json:"log_level"`
	// Security (docs/security.md); secrets come in the Secrets frame.
	APIAllow       []string `json:"api_allow,omitempty"`
	AllowedOrigins []string `json:"allowed_origins,omitempty"`
	MaxConnPerIP   int      `json:"max_conn_per_ip,omitempty"`
	PerIPFD        int      `json:"per_ip_fd"` // BASE: the shared per-address table's fd (-1: none)
	PerIPRow       int      `json:"per_ip_row"`
	PerIPRows      int      `json:"per_ip_rows,omitempty"`
	PerIPSeed      uint64   `json:"per_ip_seed,omitempty"`
	// LogFile is the file behind the worker's stderr (empty: not a file);
	// reopened on the master's ReopenLogs frame.
	LogFile string `json:"log_file,omitempty"`
	// Process names a user process (Server.Processes); empty for workers
	// and task workers. A user process holds no listener.
	Process string `json:"process,omitempty"`
	// Title is the process title (argv[0]), as ps shows it.
	Title   string `json:"title,omitempty"`
	IDNode  int    `json:"id_node"`  // node in connection ids (reactor.MakeID)
	IDStart uint64 `json:"id_start"` // BASE: first sequence of the first id lease
}

// Encode returns the environment entry for c.
func (c *Config) Encode() string {
	b, _ := json.Marshal(c)
	return EnvConfig + "=" + string(b)
}

// ConfigFromEnv reads the Config the master put in the environment.
func ConfigFromEnv() (Config, bool, error) {
	s, ok := os.LookupEnv(EnvConfig)
	if !ok {
		return Config{}, false, nil
	}
	var c Config
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		return c, true, fmt.Errorf("worker: bad %s: %w", EnvConfig, err)
	}
	return c, true, nil
}

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
