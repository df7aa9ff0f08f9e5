package master

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/metrics"
)

// opsState is the master's share of operations: its own counters (its
// reactor's, in PROCESS mode), the /metrics server, reload results.
type opsState struct {
	proc          metrics.Proc
	reg           *prometheus.Registry
	srv           *http.Server
	addr          string
	reloadsOK     atomic.Uint64
	reloadsFailed atomic.Uint64
	taskNoWorker  atomic.Uint64
	taskFull      atomic.Uint64
	logMu         sync.Mutex // one reopen at a time
}

// startMetrics serves /metrics on --metrics (or the socket systemd passed
// as "metrics"); nothing without one.
func (m *Master) startMetrics() error {
	m.ops.reg = metrics.NewRegistry(&metrics.ProcCollector{P: &m.ops.proc, Reactor: m.opts.Mode == ModeProcess, Extra: m.masterMetrics})
	var ln net.Listener
	var err error
	switch files := m.passed["metrics"]; {
	case len(files) == 1:
		ln, err = passedListener("metrics", files[0])
	case len(files) > 1:
		err = fmt.Errorf("systemd passed %d sockets named \"metrics\"; want one", len(files))
	case m.opts.MetricsAddr != "":
		ln, err = net.Listen("tcp", m.opts.MetricsAddr)
	default:
		return nil
	}
	if err != nil {
		return fmt.Errorf("master: --metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m, promhttp.HandlerOpts{
		EnableOpenMetrics: true, ErrorHandling: promhttp.ContinueOnError, Timeout: 10 * time.Second,
	}))
	m.ops.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	m.ops.addr = ln.Addr().String()
	go m.ops.srv.Serve(ln)
	m.log.Info().Str("addr", m.ops.addr).Str("path", "/metrics").Msg("metrics listening")
	return nil
}

func (m *Master) stopMetrics() {
	if m.ops.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		m.ops.srv.Shutdown(ctx)
	}
}

// MetricsAddr is where /metrics is served ("" when off).
func (m *Master) MetricsAddr() string { return m.ops.addr }

// masterMetrics adds what the master knows of each slot and of itself.
func (m *Master) masterMetrics(ch chan<- prometheus.Metric) {
	o := &m.opts
	ch <- prometheus.MustNewConstMetric(metrics.DescInfo, prometheus.GaugeValue, 1, o.Mode,
		strconv.Itoa(o.Workers), strconv.Itoa(o.TaskWorkers), strconv.Itoa(len(o.Processes)))
	ch <- prometheus.MustNewConstMetric(metrics.DescReloads, prometheus.CounterValue, float64(m.ops.reloadsOK.Load()), "ok")
	ch <- prometheus.MustNewConstMetric(metrics.DescReloads, prometheus.CounterValue, float64(m.ops.reloadsFailed.Load()), "failed")
	ch <- prometheus.MustNewConstMetric(metrics.DescTaskRefused, prometheus.CounterValue, float64(m.ops.taskNoWorker.Load()), "no_task_worker")
	ch <- prometheus.MustNewConstMetric(metrics.DescTaskRefused, prometheus.CounterValue, float64(m.ops.taskFull.Load()), "queue_full")
	m.clusterMetrics(ch)
	type row struct {
		id, restarts int
		kind         string
		backoff      time.Duration
		p            *proc
	}
	var rows []row
	m.mu.Lock()
	for _, sl := range m.slots {
		r := row{id: sl.id, restarts: sl.restarts, kind: sl.kind(), p: sl.cur}
		if sl.failing != "" {
			r.backoff = sl.backoff
		}
		rows = append(rows, r)
	}
	m.mu.Unlock()
	for _, r := range rows {
		id := strconv.Itoa(r.id)
		up := 0.0
		if r.p != nil && r.p.State() == StateReady {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(metrics.DescUp, prometheus.GaugeValue, up, r.kind, id)
		ch <- prometheus.MustNewConstMetric(metrics.DescRestarts, prometheus.CounterValue, float64(r.restarts), id)
		ch <- prometheus.MustNewConstMetric(metrics.DescBackoff, prometheus.GaugeValue, r.backoff.Seconds(), id)
		if r.p == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(metrics.DescBusQueueSlot, prometheus.GaugeValue, float64(r.p.out.Pending()), "to_worker", id)
		ch <- prometheus.MustNewConstMetric(metrics.DescBusDroppedSlot, prometheus.CounterValue, float64(r.p.out.Dropped()), "to_worker", id)
		if r.kind == "task" {
			r.p.mu.Lock()
			n := len(r.p.tasks)
			r.p.mu.Unlock()
			ch <- prometheus.MustNewConstMetric(metrics.DescTaskQueue, prometheus.GaugeValue, float64(n), id)
		}
	}
}

// Gather is the master's one view for /metrics: its own families and every
// serving process's, asked for over ipc at once, each labelled with its
// worker id ("master" for the master). A process that does not answer in
// time is left out of this scrape.
func (m *Master) Gather() ([]*dto.MetricFamily, error) {
	own, err := m.ops.reg.Gather()
	srcs := []metrics.Source{{Worker: "master", Families: own}}
	var procs []*proc
	m.mu.Lock()
	for _, sl := range m.slots {
		if p := sl.cur; p != nil && p.State() == StateReady {
			procs = append(procs, p)
		}
	}
	m.mu.Unlock()
	got := make([]metrics.Source, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := p.query(ipc.TypeMetrics, 3*time.Second)
			if err != nil {
				m.log.Debug().Err(err).Int("worker", p.slot.id).Msg("metrics: no answer")
				return
			}
			fams, err := metrics.Decode(b)
			if err != nil {
				m.log.Warn().Err(err).Int("worker", p.slot.id).Msg("metrics: bad answer")
			}
			got[i] = metrics.Source{Worker: strconv.Itoa(p.slot.id), Families: fams}
		}()
	}
	wg.Wait()
	srcs = append(srcs, got...)
	return metrics.Merge(srcs), err
}

// ReopenLogs reopens the log file in the master and in every process, for
// logrotate's postrotate (the old file has been moved away). Each process
// swaps the file behind its descriptors with dup3, so a line goes whole to
// one file or the other. It returns once every process has answered.
func (m *Master) ReopenLogs() error {
	m.ops.logMu.Lock()
	defer m.ops.logMu.Unlock()
	path := m.opts.LogFile
	if path == "" {
		return errors.New("no log file to reopen: the server logs to stderr (start it with --log-file, or -d)")
	}
	if err := m.reopenOwn(path); err != nil {
		return err
	}
	m.log.Info().Str("file", path).Msg("log file reopened")
	var procs []*proc
	m.mu.Lock()
	for _, sl := range m.slots {
		for _, p := range append([]*proc{sl.cur, sl.next}, sl.old...) {
			if p != nil && p.State() != StateStopped {
				procs = append(procs, p)
			}
		}
	}
	m.mu.Unlock()
	var errs []error
	for _, p := range procs {
		b, err := p.query(ipc.TypeReopenLogs, 5*time.Second)
		if err == nil && len(b) > 0 {
			err = errors.New(string(b))
		}
		if err != nil && p.State() != StateStopped {
			errs = append(errs, fmt.Errorf("%s %d (pid %d): %w", p.slot.kind(), p.slot.id, p.pid, err))
		}
	}
	return errors.Join(errs...)
}

// reopenOwn puts a fresh open of path behind the master's log descriptor,
// and behind stdout and stderr when they were the same file (daemon mode).
func (m *Master) reopenOwn(path string) error {
	out, ok := m.opts.Output.(*os.File)
	if !ok {
		return errors.New("master: reopen log: output is not a file")
	}
	var old unix.Stat_t
	if err := unix.Fstat(int(out.Fd()), &old); err != nil {
		return fmt.Errorf("master: reopen log: %w", err)
	}
	fds := []int{int(out.Fd())}
	for _, fd := range []int{1, 2} {
		var st unix.Stat_t
		if fd != fds[0] && unix.Fstat(fd, &st) == nil && st.Dev == old.Dev && st.Ino == old.Ino {
			fds = append(fds, fd)
		}
	}
	f, err := OpenNoFollow("log file", path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("master: reopen log: %w", err)
	}
	defer f.Close()
	if c := m.opts.Credential; c != nil {
		// Workers run as another user (--user, --group) and reopen the
		// file by path after this: their group may write it (the file
		// stays root's, so they cannot chmod it; others get nothing).
		if err := f.Chown(-1, int(c.Gid)); err != nil {
			return fmt.Errorf("master: reopen log: group of the workers: %w", err)
		}
		if err := f.Chmod(0o660); err != nil {
			return fmt.Errorf("master: reopen log: %w", err)
		}
	}
	for _, fd := range fds {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			return fmt.Errorf("master: reopen log: dup onto fd %d: %w", fd, err)
		}
	}
	return nil
}
