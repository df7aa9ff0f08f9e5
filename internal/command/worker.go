package command

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/forkd/forkd/internal/sysmon"
	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/master"
	"github.com/forkd/forkd/worker"
)

// runWorker is Run in a worker process: it reads the configuration the
// master passed, sets the process up (logger, signals, limits, GOMAXPROCS)
// and serves until the master says stop.
func (s *Program) runWorker() error {
	cfg, _, err := worker.ConfigFromEnv()
	if err != nil {
		return err
	}
	role := "worker"
	if cfg.Task {
		role = "task"
	} else if cfg.Process != "" {
		role = "process"
	}
	log := newLogger(os.Stderr, cfg.LogFormat, cfg.LogLevel, role, cfg.Slot)
	// The master manages workers over ipc; a terminal's Ctrl-C (sent to the
	// whole process group) or a stray reload signal must not kill them.
	signal.Ignore(syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, SigReopenLogs)
	master.RaiseNoFile()
	sysmon.WorkerProcs(cfg.Workers)
	if cfg.Mode == worker.ModeProcess && !cfg.Task && cfg.Process == "" {
		// Woken by the master's batches: see sysmon.Batch.
		if err := sysmon.Batch(); err != nil {
			log.Warn().Err(err).Msg("scheduling policy unchanged")
		}
	}
	defer sysmon.StartProfile(role, &log)()
	var files []*os.File
	if cfg.Mode == worker.ModeBase && !cfg.Task && cfg.Process == "" {
		for i := range cfg.Listeners {
			files = append(files, os.NewFile(uintptr(5+i), "listener"))
		}
	}
	in, err := ipc.PipeFile(3, "ipc-in")
	if err != nil {
		return fmt.Errorf("worker: ipc pipe from the master (fd 3): %w", err)
	}
	out, err := ipc.PipeFile(4, "ipc-out")
	if err != nil {
		return fmt.Errorf("worker: ipc pipe to the master (fd 4): %w", err)
	}
	err = worker.Run(context.Background(), worker.Options{
		Config: cfg, IPCIn: in, IPCOut: out, Listeners: files, App: s.App, Log: log, TLSConfigs: s.tlsConfigs(),
	})
	if err != nil {
		log.Error().Err(err).Msg("worker failed")
	}
	return err
}
