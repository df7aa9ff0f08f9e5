package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A fleet is the load generator spread over helper processes
// (fleetclient.go), for runs that hold more connections than one process
// may open here. bench starts it, reads every child's lines as events, and
// ends every child by its pid.

// fileReserve is what a process keeps of its open-file limit for other
// than connections (listeners, pipes, logs, the runtime).
func fileReserve(limit uint64) uint64 { return min(1024, limit/4) }

// kid is one helper process.
type kid struct {
	i     int
	share int // connections it holds
	cmd   *exec.Cmd
	stdin io.WriteCloser
	errf  *os.File // its stderr
	done  chan struct{}
	err   error // cmd.Wait's, once done
}

// kidEvent is one line of a child's, or its end (ended: its stdout closed
// and the process was reaped; err says how it exited).
type kidEvent struct {
	kid   int
	m     clientMsg
	ended bool
	err   error
}

type fleet struct {
	exitWait time.Duration // how long stop waits for a child to exit by itself

	n    int // children
	kids []*kid
	ev   chan kidEvent
	quit chan struct{}
	once sync.Once
}

// fleetShares splits n connections into the fewest near-equal shares of
// at most per each.
func fleetShares(n, per int) []int {
	k := max((n+per-1)/max(per, 1), 1)
	out := make([]int, k)
	for i := range out {
		out[i] = n / k
		if i < n%k {
			out[i]++
		}
	}
	return out
}

// startFleet starts len(shares) children of exe, child i holding shares[i]
// connections to addr path (chat: quiet /chat members), par dials at a
// time, and waits until each is up. On error nothing is left running.
func startFleet(ctx context.Context, exe, addr, path string, shares []int, par int, spread, chat bool) (*fleet, error) {
	f := &fleet{ev: make(chan kidEvent, 256), quit: make(chan struct{}), n: len(shares), exitWait: 10 * time.Second}
	for i, n := range shares {
		args := []string{clientCommandName, "--addr", addr, "--path", path, "--conns", strconv.Itoa(n),
			"--par", strconv.Itoa(par), "--source", strconv.Itoa(i * 7)}
		if spread {
			args = append(args, "--spread")
		}
		if chat {
			args = append(args, "--chat")
		}
		k, err := f.start(exe, i, n, args)
		if err != nil {
			f.stop()
			return nil, err
		}
		f.kids = append(f.kids, k)
	}
	up := 0
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	for up < len(f.kids) {
		select {
		case e := <-f.ev:
			if e.ended {
				f.stop()
				return nil, f.kidError(e)
			}
			if e.m.T == "up" {
				up++
			}
		case <-timer.C:
			f.stop()
			return nil, fmt.Errorf("bench: %d of %d load generator processes did not start within %s", len(f.kids)-up, len(f.kids), readyTimeout)
		case <-ctx.Done():
			f.stop()
			return nil, ctx.Err()
		}
	}
	return f, nil
}

func (f *fleet) start(exe string, i, n int, args []string) (*kid, error) {
	errf, err := os.CreateTemp("", "forkd-bench-client-*.log")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	os.Remove(errf.Name()) // kept open, read back on failure
	k := &kid{i: i, share: n, errf: errf, done: make(chan struct{})}
	k.cmd = exec.Command(exe, args...)
	k.cmd.Stderr = errf
	if os.Getenv("GOMAXPROCS") == "" {
		// Its share of the CPUs, as a server's workers get theirs: Ps
		// beyond it spin looking for work the other processes need the
		// CPUs for.
		k.cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(max(1, runtime.NumCPU()/f.n)))
	}
	out, err := k.cmd.StdoutPipe()
	if err == nil {
		k.stdin, err = k.cmd.StdinPipe()
	}
	if err == nil {
		err = k.cmd.Start()
	}
	if err != nil {
		errf.Close()
		return nil, fmt.Errorf("bench: start load generator process: %s %s: %w", exe, strings.Join(args, " "), err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var m clientMsg
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			select {
			case f.ev <- kidEvent{kid: i, m: m}:
			case <-f.quit:
			}
		}
		k.err = k.cmd.Wait()
		close(k.done)
		select {
		case f.ev <- kidEvent{kid: i, ended: true, err: k.err}:
		case <-f.quit:
		}
	}()
	return k, nil
}

// dial tells every child to open its connections.
func (f *fleet) dial() error {
	for _, k := range f.kids {
		if _, err := io.WriteString(k.stdin, "dial\n"); err != nil {
			return fmt.Errorf("bench: load generator process %d (pid %d): %w", k.i, k.cmd.Process.Pid, err)
		}
	}
	return nil
}

// cpu is the CPU time the children have used so far.
func (f *fleet) cpu() time.Duration {
	var d time.Duration
	for _, k := range f.kids {
		if st, err := readProcStat(k.cmd.Process.Pid); err == nil {
			d += st.cpu
		}
	}
	return d
}

// kidError says how a child ended before its time, with the end of its
// stderr.
func (f *fleet) kidError(e kidEvent) error {
	k := f.kids[e.kid]
	why := "exit status 0"
	if e.err != nil {
		why = e.err.Error()
	}
	tail := ""
	if b, err := io.ReadAll(io.NewSectionReader(k.errf, 0, 1<<20)); err == nil {
		if b = []byte(strings.TrimSpace(string(b))); len(b) > 0 {
			if len(b) > 400 {
				b = b[len(b)-400:]
			}
			tail = ": " + string(b)
		}
	}
	return &fleetError{msg: fmt.Sprintf("bench: load generator process %d of %d (pid %d, %d connections) ended: %s%s",
		k.i+1, len(f.kids), k.cmd.Process.Pid, k.share, why, tail)}
}

// fleetError is a helper process's untimely end.
type fleetError struct{ msg string }

func (e *fleetError) Error() string { return e.msg }

// stop ends every child: its stdin is closed (it closes its connections
// and exits), and one that has not exited within 10 s (exitWait) is
// killed by its pid. It returns how any child failed.
func (f *fleet) stop() error {
	var errs []error
	f.once.Do(func() {
		close(f.quit) // events are dropped from now on
		for _, k := range f.kids {
			k.stdin.Close()
		}
		deadline := time.After(f.exitWait)
		for _, k := range f.kids {
			select {
			case <-k.done:
			case <-deadline:
			}
		}
		for _, k := range f.kids {
			select {
			case <-k.done:
			default:
				_ = k.cmd.Process.Kill() // by pid: it is our child, not yet reaped
				<-k.done
				errs = append(errs, fmt.Errorf("bench: load generator process %d (pid %d) did not exit within %s of its stdin's end; killed", k.i+1, k.cmd.Process.Pid, f.exitWait))
				k.errf.Close()
				continue
			}
			if k.err != nil && !errors.Is(k.err, syscall.ECHILD) {
				var xe *exec.ExitError
				if !errors.As(k.err, &xe) || !xe.Exited() || xe.ExitCode() != 0 {
					errs = append(errs, f.kidError(kidEvent{kid: k.i, err: k.err}))
				}
			}
			k.errf.Close()
		}
	})
	return errors.Join(errs...)
}

// pids are the children's process ids.
func (f *fleet) pids() []int {
	var out []int
	for _, k := range f.kids {
		out = append(out, k.cmd.Process.Pid)
	}
	return out
}

// held is what the children said once their connections were open.
type held struct {
	conns, errs, retries int64
	first                string
	workers              map[string]int
	h                    histogram
}

// waitHeld waits until every child has opened its share (progress, if
// set, gets the running total), and sums what they say.
func (f *fleet) waitHeld(ctx context.Context, progress func(int64)) (*held, error) {
	out := &held{workers: map[string]int{}}
	got := make([]bool, len(f.kids))
	running := make([]int64, len(f.kids))
	for n := 0; n < len(f.kids); {
		var e kidEvent
		select {
		case e = <-f.ev:
		case <-ctx.Done():
			return out, ctx.Err()
		}
		if e.ended {
			return out, f.kidError(e)
		}
		switch e.m.T {
		case "progress":
			running[e.kid] = int64(e.m.Held)
		case "held":
			running[e.kid] = int64(e.m.Held)
			got[e.kid] = true
			n++
			out.conns += int64(e.m.Held)
			out.errs += e.m.Errs
			out.retries += e.m.Retries
			if out.first == "" && e.m.First != "" {
				out.first = fmt.Sprintf("process %d: %s", e.kid+1, e.m.First)
			}
			for w, c := range e.m.Workers {
				out.workers[w] += c
			}
			for b, c := range e.m.Hist {
				if b >= 0 && b < histBuckets {
					out.h.counts[b] += c
					out.h.n += c
				}
			}
			out.h.max = max(out.h.max, e.m.Max)
		}
		if progress != nil {
			var sum int64
			for _, v := range running {
				sum += v
			}
			progress(sum)
		}
	}
	return out, nil
}
