package ipc

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// EnvWorkerConfig carries a worker's WorkerConfig (JSON) from master to
// worker: the one value that crosses at exec rather than in a frame.
const EnvWorkerConfig = "FORKD_WORKER_CONFIG"

// Modes, in WorkerConfig.Mode (the --mode values).
const (
	ModeProcess = "process"
	ModeBase    = "base"
)

// WorkerListener is one port as a worker sees it.
type WorkerListener struct {
	Name     string `json:"name"`
	Addr     string `json:"addr"`
	Protocol string `json:"protocol"` // "http" or "websocket"
	Upgrade  bool   `json:"upgrade"`
	TLS      bool   `json:"tls,omitempty"` // terminated by the worker in BASE mode (keys: Secrets frame)
}

// WorkerConfig is everything a worker process is told at spawn.
type WorkerConfig struct {
	Mode           string           `json:"mode"`
	Slot           int              `json:"slot"` // worker id; task workers follow the workers
	Task           bool             `json:"task"`
	Workers        int              `json:"workers"`
	TaskWorkers    int              `json:"task_workers"`
	Listeners      []WorkerListener `json:"listeners"`
	MaxPackageSize int              `json:"max_package_size"`
	MaxSendBuffer  int              `json:"max_send_buffer"`
	MaxConns       int              `json:"max_conns"`
	MaxRequest     int              `json:"max_request"`
	HeartbeatIdle  time.Duration    `json:"heartbeat_idle"`
	ReadTimeout    time.Duration    `json:"read_timeout"`
	IdleTimeout    time.Duration    `json:"idle_timeout"`
	ReloadWait     time.Duration    `json:"reload_wait"`
	CallTimeout    time.Duration    `json:"call_timeout"`
	LogFormat      string           `json:"log_format"`
	LogLevel       string           `json:"log_level"`
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
func (c *WorkerConfig) Encode() string {
	b, _ := json.Marshal(c)
	return EnvWorkerConfig + "=" + string(b)
}

// WorkerConfigFromEnv reads the WorkerConfig the master put in the
// environment; false when there is none (not a worker).
func WorkerConfigFromEnv() (WorkerConfig, bool, error) {
	s, ok := os.LookupEnv(EnvWorkerConfig)
	if !ok {
		return WorkerConfig{}, false, nil
	}
	var c WorkerConfig
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		return c, true, fmt.Errorf("worker: bad %s: %w", EnvWorkerConfig, err)
	}
	return c, true, nil
}

// WorkerStats is a worker's answer to a Stats frame (JSON), as `status`
// shows it.
type WorkerStats struct {
	Connections int    `json:"connections"`
	Requests    uint64 `json:"requests"`
	Timers      int    `json:"timers"`
	TasksDone   uint64 `json:"tasks_done,omitempty"`
	BusPending  int    `json:"bus_pending_bytes"`
	BusDropped  uint64 `json:"bus_dropped"`
	Calls       int    `json:"calls_waiting"`
}
