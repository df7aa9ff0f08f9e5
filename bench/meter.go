package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// meter watches the server's processes for one scenario: a sampler goroutine
// reads every process's RSS (VmRSS) and CPU (utime+stime) every 100 ms, keeps
// the peak of the summed RSS, and remembers each pid's last CPU reading so a
// process that exits mid-window still counts up to its last sample. begin and
// end bracket the measured window.
type meter struct {
	t        *target
	label    string    // "[process] http"
	progress io.Writer // nil: no progress line
	unit     string
	ops      func() int64 // live count for the progress line
	phase    string       // shown outside the window

	mu       sync.Mutex
	procs    []proc
	lastCPU  map[int]time.Duration
	startCPU map[int]time.Duration
	peakKiB  uint64
	winStart time.Time
	winLen   time.Duration // 0: the window is a count of goal ops instead
	goal     int64
	self0    time.Duration

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// window is what a measured window produced.
type window struct {
	elapsed    time.Duration
	serverCPU  time.Duration
	loadgenCPU time.Duration
}

const sampleEvery = 100 * time.Millisecond

// newMeter starts sampling t's processes. When progress is not nil, a
// progress line is kept on it (rewritten with \r).
func newMeter(ctx context.Context, t *target, label string, progress io.Writer) *meter {
	m := &meter{t: t, label: label, progress: progress, lastCPU: map[int]time.Duration{}, phase: "setting up"}
	m.procs = t.procs(ctx)
	m.sample()
	sctx, cancel := context.WithCancel(ctx)
	m.cancel = cancel
	m.wg.Add(1)
	go m.loop(sctx)
	return m
}

func (m *meter) loop(ctx context.Context) {
	defer m.wg.Done()
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	var lastOps int64
	var lastAt, lastWin time.Time
	lastLen := 0
	if m.progress != nil {
		first := m.label + " " + m.phase
		fmt.Fprint(m.progress, "\r"+first)
		lastLen = len(first)
	}
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			if lastLen > 0 {
				fmt.Fprintf(m.progress, "\r%s\r", strings.Repeat(" ", lastLen))
			}
			return
		case <-tick.C:
			if n%10 == 0 && !m.t.inProcess { // a respawned worker joins
				m.mu.Lock()
				prev := m.procs
				m.mu.Unlock()
				ps := m.t.refreshProcs(ctx, prev)
				m.mu.Lock()
				m.procs = ps
				m.mu.Unlock()
			}
			m.sample()
			if n%5 != 0 || m.progress == nil {
				continue
			}
			m.mu.Lock()
			start, length, goal, opsf, unit, phase := m.winStart, m.winLen, m.goal, m.ops, m.unit, m.phase
			m.mu.Unlock()
			line := m.label + " " + phase
			if now := time.Now(); !start.IsZero() && opsf != nil && now.After(start) {
				if start != lastWin {
					lastWin, lastAt, lastOps = start, start, 0
				}
				ops := opsf()
				rate := float64(ops-lastOps) / now.Sub(lastAt).Seconds()
				lastOps, lastAt = ops, now
				if length > 0 {
					line = fmt.Sprintf("%s %.0f/%.0fs %.0f %s/s", m.label,
						min(now.Sub(start), length).Seconds(), length.Seconds(), rate, unit)
				} else {
					line = fmt.Sprintf("%s %d/%d %ss %.0f %s/s", m.label, ops, goal, unit, rate, unit)
				}
			}
			pad := ""
			if lastLen > len(line) {
				pad = strings.Repeat(" ", lastLen-len(line))
			}
			fmt.Fprintf(m.progress, "\r%s%s", line, pad)
			lastLen = len(line)
		}
	}
}

// sample reads every process once.
func (m *meter) sample() {
	m.mu.Lock()
	procs := m.procs
	m.mu.Unlock()
	var rss uint64
	cpu := make(map[int]time.Duration, len(procs))
	for _, p := range procs {
		if st, err := readProcStat(p.pid); err == nil {
			cpu[p.pid] = st.cpu
		}
		if kib, err := readRSS(p.pid); err == nil {
			rss += kib
		}
	}
	m.mu.Lock()
	for pid, c := range cpu {
		m.lastCPU[pid] = c
	}
	if rss > m.peakKiB {
		m.peakKiB = rss
	}
	m.mu.Unlock()
}

// begin starts the measured window of length d; ops feeds the progress line.
func (m *meter) begin(d time.Duration, unit string, ops func() int64) {
	m.beginGoal(d, 0, unit, ops)
}

// beginCount starts a measured window that ends when goal ops are done.
func (m *meter) beginCount(goal int, unit string, ops func() int64) {
	m.beginGoal(0, int64(goal), unit, ops)
}

func (m *meter) beginGoal(d time.Duration, goal int64, unit string, ops func() int64) {
	m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.goal = goal
	m.startCPU = make(map[int]time.Duration, len(m.lastCPU))
	for pid, c := range m.lastCPU {
		m.startCPU[pid] = c
	}
	m.winStart, m.winLen, m.unit, m.ops = time.Now(), d, unit, ops
	m.self0 = selfCPU()
}

// end closes the measured window.
func (m *meter) end() window {
	self := selfCPU()
	now := time.Now()
	m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	var cpu time.Duration
	for pid, c := range m.lastCPU {
		cpu += c - m.startCPU[pid] // a pid born in the window counts whole
	}
	m.ops, m.phase = nil, "finishing"
	return window{elapsed: now.Sub(m.winStart), serverCPU: cpu, loadgenCPU: self - m.self0}
}

// rssByProc reads each process's RSS now, in KiB.
func (m *meter) rssByProc() map[int]uint64 {
	m.mu.Lock()
	procs := m.procs
	m.mu.Unlock()
	out := make(map[int]uint64, len(procs))
	for _, p := range procs {
		if kib, err := readRSS(p.pid); err == nil {
			out[p.pid] = kib
		}
	}
	return out
}

// peakMiB is the highest summed RSS seen, in MiB.
func (m *meter) peakMiB() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return float64(m.peakKiB) / 1024
}

// close stops the sampler and clears the progress line.
func (m *meter) close() {
	m.cancel()
	m.wg.Wait()
}

// counter is a per-goroutine load tally. Each load goroutine owns one and is
// the only writer of h; ops and errs are atomic for the progress line.
type counter struct {
	ops  atomic.Int64
	errs atomic.Int64
	h    histogram
}

// sumOps returns a func totalling cs' ops, for the progress line.
func sumOps(cs []*counter) func() int64 {
	return func() int64 {
		var n int64
		for _, c := range cs {
			n += c.ops.Load()
		}
		return n
	}
}

// closerSet holds the connections of a scenario so that a stuck load
// goroutine can be unblocked by closing its connection.
type closerSet struct {
	mu     sync.Mutex
	m      map[io.Closer]struct{}
	closed bool
}

// add registers c; when the set is already closed it closes c and reports
// false.
func (s *closerSet) add(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	if s.m == nil {
		s.m = map[io.Closer]struct{}{}
	}
	s.m[c] = struct{}{}
	return true
}

func (s *closerSet) remove(c io.Closer) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

// closeAll closes every registered connection, now and from now on.
func (s *closerSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.m {
		c.Close()
	}
	s.m = nil
}

// lane is one load goroutine's view of a measured run: its counter, and the
// start of the window, before which completed operations are not counted
// (the warm-up).
type lane struct {
	*counter
	base time.Time
	win  *atomic.Int64 // window start in ns since base; MaxInt64 during warm-up
}

// done records an operation that started at t0 and took lat, if it started
// inside the window.
func (l *lane) done(t0 time.Time, lat time.Duration) {
	if int64(t0.Sub(l.base)) >= l.win.Load() {
		l.h.record(lat)
		l.ops.Add(1)
	}
}

// warmup is how long load runs before the window opens: long enough for
// connections, goroutine pools and caches to reach their steady state.
func warmup(d time.Duration) time.Duration { return min(d/5, time.Second) }

// drive runs n load goroutines, each calling loop(i, lane, stop) until stop
// is closed. After a warm-up, a window of length d is measured. After the
// window the goroutines get a grace period to finish their current
// operation, then their connections are closed. It returns the window and
// the counters.
func drive(ctx context.Context, m *meter, d time.Duration, unit string, n int, conns *closerSet,
	loop func(i int, l *lane, stop <-chan struct{})) (window, []*counter) {
	cs := make([]*counter, n)
	var win atomic.Int64
	win.Store(math.MaxInt64)
	base := time.Now()
	lanes := make([]*lane, n)
	for i := range cs {
		cs[i] = new(counter)
		lanes[i] = &lane{counter: cs[i], base: base, win: &win}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(i, lanes[i], stop)
		}()
	}
	timer := time.NewTimer(warmup(d))
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	m.begin(d, unit, sumOps(cs))
	win.Store(int64(time.Since(base)))
	timer.Reset(d)
	select {
	case <-timer.C:
	case <-ctx.Done():
		timer.Stop()
	}
	w := m.end()
	close(stop)
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(2 * time.Second):
		conns.closeAll()
		<-finished
	}
	conns.closeAll()
	return w, cs
}

// stopped reports whether stop is closed, without blocking.
func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}
