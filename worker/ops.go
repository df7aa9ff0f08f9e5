package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/metrics"
)

// ops is what a worker keeps for operations: its metrics registry, built
// on the first scrape (a server without --metrics never pays for it).
type ops struct {
	once sync.Once
	reg  *prometheus.Registry
	user *userProc // a user process's function (Config.Process)
}

// Metrics returns the worker's counters.
func (w *Worker) Metrics() *metrics.Proc { return &w.m }

func (w *Worker) registry() *prometheus.Registry {
	w.ops.once.Do(func() {
		w.ops.reg = metrics.NewRegistry(&metrics.ProcCollector{P: &w.m, Reactor: w.r != nil, Bus: true, Extra: w.extraMetrics})
	})
	return w.ops.reg
}

// extraMetrics adds what is read on scrape: the request count, bus queue,
// timers, tasks.
func (w *Worker) extraMetrics(ch chan<- prometheus.Metric) {
	s := w.Stats()
	ch <- prometheus.MustNewConstMetric(metrics.DescRequests, prometheus.CounterValue, float64(s.Requests))
	ch <- prometheus.MustNewConstMetric(metrics.DescBusQueue, prometheus.GaugeValue, float64(s.BusPending), "to_master")
	ch <- prometheus.MustNewConstMetric(metrics.DescBusDropped, prometheus.CounterValue, float64(s.BusDropped), "to_master")
	ch <- prometheus.MustNewConstMetric(metrics.DescTimers, prometheus.GaugeValue, float64(s.Timers))
	if w.cfg.Task {
		fail := w.m.TasksFail.Load()
		ch <- prometheus.MustNewConstMetric(metrics.DescTasks, prometheus.CounterValue, float64(s.TasksDone-min(fail, s.TasksDone)), "ok")
		ch <- prometheus.MustNewConstMetric(metrics.DescTasks, prometheus.CounterValue, float64(fail), "failed")
	}
}

// sendMetrics answers the master's Metrics query with this process's
// metric families.
func (w *Worker) sendMetrics(seq uint32) {
	b, err := metrics.Encode(w.registry())
	if err != nil {
		w.log.Warn().Err(err).Msg("metrics not gathered")
	}
	w.out.Send(&ipc.Header{Type: ipc.TypeMetrics, Seq: seq}, b, nil)
}

// reopenLogs points the worker's stdout and stderr at a fresh open of its
// log file (logrotate has moved the old one away). dup3 swaps the file
// behind the descriptors at once: a line being written goes whole to the
// old file or whole to the new one, never split or lost.
func (w *Worker) reopenLogs(seq uint32) {
	out, msg := ipc.OK, ""
	if err := ReopenStdio(w.cfg.LogFile); err != nil {
		out, msg = ipc.Failed, err.Error()
		w.log.Error().Err(err).Str("file", w.cfg.LogFile).Msg("log file not reopened")
	} else if w.cfg.LogFile != "" {
		w.log.Info().Str("file", w.cfg.LogFile).Msg("log file reopened")
	}
	w.out.Send(&ipc.Header{Type: ipc.TypeReopenLogs, Seq: seq, Code: uint16(out)}, []byte(msg), nil)
}

// ReopenStdio opens path for appending (creating it) and puts it behind
// fds 1 and 2. An empty path (output is not a file) is a no-op.
func ReopenStdio(path string) error {
	if path == "" {
		return nil
	}
	f, err := OpenNoFollow("log file", path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("worker: reopen log: %w", err)
	}
	defer f.Close()
	for _, fd := range []int{1, 2} {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			return fmt.Errorf("worker: reopen log: dup onto fd %d: %w", fd, err)
		}
	}
	return nil
}

// userProc is a user process's running function.
type userProc struct {
	cancel context.CancelFunc
	done   chan error
}

// startProcess runs a user process's function (Config.Process) in its own
// goroutine; the channel gets its end (nil channel for other processes).
// A panic is recovered and reported as the end.
func (w *Worker) startProcess(ctx context.Context) <-chan error {
	if w.cfg.Process == "" {
		return nil
	}
	pctx, cancel := context.WithCancel(ctx)
	w.ops.user = &userProc{cancel: cancel, done: make(chan error, 1)}
	ended := make(chan error, 1)
	go func() {
		err := func() (err error) {
			defer func() {
				if p := recover(); p != nil {
					w.log.Error().Str("in", "Process.Run").Str("stack", stack()).Msgf("panic: %v", p)
					err = fmt.Errorf("panic: %v", p)
				}
			}()
			return w.app.RunProcess(pctx, w)
		}()
		if err == nil {
			err = errors.New("returned")
		}
		w.ops.user.done <- err
		if pctx.Err() == nil { // nobody asked it to stop
			ended <- err
		}
	}()
	return ended
}

// stopProcess ends a user process's function: its context is cancelled and
// it has wait to return.
func (w *Worker) stopProcess(wait time.Duration) {
	u := w.ops.user
	if u == nil {
		return
	}
	u.cancel()
	// Even a stop that does not wait for work (stop without -g) gives the
	// function a moment to return: it may be committing a consumed message.
	wait = max(wait, time.Second)
	select {
	case <-u.done:
	case <-time.After(wait):
		w.log.Warn().Str("process", w.cfg.Process).Dur("wait", wait).Msg("process function did not return in time")
	}
}

// IsProcess reports whether this is a user process (Server.Processes).
func (w *Worker) IsProcess() bool { return w.cfg.Process != "" }
