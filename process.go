package forkd

import (
	"context"
	"fmt"

	"github.com/forkd/forkd/worker"
)

// Process is a long-running function of yours in a process of its own
// (Swoole's addProcess, Workerman's extra workers): typically a consumer of
// a queue (Redis, NATS, a database poll) that pushes to the connections or
// rooms its messages name. The master supervises it like a worker: a crash
// (or Run returning while the server runs) restarts it, with a back-off
// when it keeps dying young; `reload` restarts it (the old one stops before
// the new one starts, so two never run at once); `stop` stops it last,
// after the workers and task workers. It holds no listener and takes no
// tasks; OnWorkerStart does not run in it.
//
// It has the whole bus through w: Push and Close to any connection id,
// Join, Leave, Broadcast to rooms, SendMessage to any worker (and to other
// processes, by ProcessID). Workers reach it with SendMessage(ProcessID(name)).
type Process struct {
	// Name identifies it: unique, shown in `status` and its process title
	// (`forkd: process NAME [SERVER]`).
	Name string
	// Run is the process's work. Threading: in the process's own goroutine;
	// it should run until ctx ends (stop, reload) and then return within
	// --reload-wait. A panic is logged and the process restarted.
	Run func(ctx context.Context, w *Worker) error
	// OnPipeMessage receives SendMessage data sent to this process.
	// Threading: a goroutine per message. Nil: the Server's OnPipeMessage.
	OnPipeMessage func(w *Worker, from int, data []byte)
}

// processNames checks s.Processes and returns their names in order.
func (s *Server) processNames() ([]string, error) {
	var names []string
	seen := map[string]bool{}
	for i, p := range s.Processes {
		switch {
		case p == nil || p.Run == nil:
			return nil, fmt.Errorf("Server.Processes[%d]: no Run function", i)
		case p.Name == "":
			return nil, fmt.Errorf("Server.Processes[%d]: no Name", i)
		case seen[p.Name]:
			return nil, fmt.Errorf("two processes are named %q", p.Name)
		}
		seen[p.Name] = true
		names = append(names, p.Name)
	}
	return names, nil
}

func (s *Server) process(name string) *Process {
	for _, p := range s.Processes {
		if p != nil && p.Name == name {
			return p
		}
	}
	return nil
}

// RunProcess runs the user process this worker process was started for.
func (a *app) RunProcess(ctx context.Context, w *worker.Worker) error {
	p := a.s.process(w.Config().Process)
	if p == nil {
		return fmt.Errorf("forkd: no process named %q in this binary", w.Config().Process)
	}
	return p.Run(ctx, a.w)
}

// IsProcess reports whether this is a user process (Server.Processes).
func (w *Worker) IsProcess() bool { return w.w.IsProcess() }

// ProcessName is the user process's name ("" in workers and task workers).
func (w *Worker) ProcessName() string { return w.w.Config().Process }

// ProcessID returns the id a user process is reached at with SendMessage,
// or -1 when no process has that name. User processes take the ids after
// the task workers, in the order of Server.Processes.
func (w *Worker) ProcessID(name string) int {
	cfg := w.w.Config()
	for i, p := range w.s.Processes {
		if p != nil && p.Name == name {
			return cfg.Workers + cfg.TaskWorkers + i
		}
	}
	return -1
}
