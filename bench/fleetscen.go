package bench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"
	"time"
)

// Runs larger than one process's open-file limit (see fleet.go). Where
// RLIMIT_NOFILE's hard limit can be raised as far as the run needs,
// nothing here applies: bench raises it, and every scenario runs in one
// load generator process against servers of --workers workers.
//
// Where it cannot (this session's s.fdLimit is below what the run needs):
//   - the load generator spreads the idle and broadcast connections over
//     helper processes, each under the limit;
//   - BASE mode's workers each hold their own connections, so bench runs
//     those scenarios against a server of as many workers as they need
//     (SO_REUSEPORT spreads the connections; a 15 % margin for its
//     unevenness), and says so in one line;
//   - PROCESS mode's master and the baseline hold every connection in one
//     process: bench says in one line that they cannot here, and runs the
//     rest.

// fileBudget is how many connections one process may hold here (0: as
// many as asked; the limit was raised).
func (s *session) fileBudget() int {
	if s.fdLimit == 0 {
		return 0
	}
	return int(s.fdLimit - fileReserve(s.fdLimit))
}

// scenarioConns is how many connections scenario sc holds at once, when it
// is one of those sized by a flag.
func (s *session) scenarioConns(sc string) int {
	switch sc {
	case ScenarioIdle:
		return s.o.IdleConns
	case ScenarioBroadcast:
		return s.o.Members
	}
	return 0
}

// overBudget reports whether n connections are more than one process may
// hold here.
func (s *session) overBudget(n int) bool {
	b := s.fileBudget()
	return b > 0 && n > b
}

// fitScenario says how scenario sc runs against a server in mode: the
// workers a BASE server needs for it (0: --workers), or why it cannot run
// here (skip).
func (s *session) fitScenario(sc, mode string) (workers int, note, skip string) {
	n := s.scenarioConns(sc)
	if !s.overBudget(n) {
		return 0, "", ""
	}
	b := s.fileBudget()
	switch mode {
	case "base":
		need := (n*100 + b*85 - 1) / (b * 85)
		w := max(need, s.o.Workers)
		note = fmt.Sprintf("%d connections, at most %d open files per process here: %d workers, each holding its own (--workers %d asked), and %d load generator processes",
			n, s.fdLimit, w, s.o.Workers, len(fleetShares(n, b)))
		return w, note, ""
	case modeBaseline:
		return 0, "", fmt.Sprintf("skipped: the baseline holds all %d connections in one process, and one process may open at most %d files here (%s)",
			n, s.fdLimit, s.fdWhy)
	default:
		return 0, "", fmt.Sprintf("skipped: PROCESS mode's master holds all %d connections, and one process may open at most %d files here (%s); "+
			"at most about %d connections in this mode here, or use base mode", n, s.fdLimit, s.fdWhy, b)
	}
}

// fleetConns starts a fleet for n connections to t (chat: quiet members
// of room).
func (s *session) fleetConns(ctx context.Context, t *target, n int, room string) (*fleet, error) {
	shares := fleetShares(n, s.fileBudget())
	par := max(4, (s.o.Conns+len(shares)-1)/len(shares))
	path := t.wsPath
	if room != "" {
		path = chatPath(room)
	}
	return startFleet(ctx, s.o.Exe, t.wsAddr, path, shares, par, n > spreadAbove, room != "")
}

// idleFleet opens the idle scenario's connections from a fleet. The
// returned fleet holds them until stopped.
func (s *session) idleFleet(ctx context.Context, t *target, m *meter, r *Result, n int) (*fleet, *held, error) {
	fl, err := s.fleetConns(ctx, t, n, "")
	if err != nil {
		return nil, nil, err
	}
	var running atomic.Int64
	m.beginCount(n, "conn", running.Load)
	cpu0 := fl.cpu()
	if err := fl.dial(); err != nil {
		m.end()
		return fl, nil, err
	}
	h, err := fl.waitHeld(ctx, running.Store)
	w := m.end()
	ctr := new(counter)
	if h != nil {
		ctr.h = h.h
		ctr.ops.Store(h.conns)
		ctr.errs.Store(h.errs)
	}
	r.fill(w, []*counter{ctr})
	r.LoadgenCPU += (fl.cpu() - cpu0).Seconds()
	return fl, h, err
}

// broadcastFleet is the broadcast scenario with its members in a fleet:
// one POST /broadcast at a time, each complete when the children have
// seen it on every member; its latency is from the POST's send to the
// last member's receipt (wall clock, the same machine).
func (s *session) broadcastFleet(ctx context.Context, t *target, m *meter, r *Result) error {
	n := s.o.Members
	room := "bench-bcast-" + s.nonce
	fl, err := s.fleetConns(ctx, t, n, room)
	if err != nil {
		return err
	}
	defer func() {
		if err := fl.stop(); err != nil {
			s.logf("[%s] broadcast: %v", t.mode, err)
		}
	}()
	if err := fl.dial(); err != nil {
		return err
	}
	h, err := fl.waitHeld(ctx, nil)
	if err != nil {
		return err
	}
	if h.conns < int64(n) {
		return fmt.Errorf("join chat: %d of %d failed, first: %s", int64(n)-h.conns, n, h.first)
	}
	hc, err := dialHTTP(ctx, t.httpAddr)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() { hc.Close() }()
	head := httpPostHead(t.httpAddr, "/broadcast?room="+url.QueryEscape(room), echoSize)
	got := make([]int, len(fl.kids))
	last := make([]int64, len(fl.kids))
	var delivered atomic.Int64
	var buf []byte
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	// broadcast sends seq and waits until the members the server counted
	// (normally n) have it, or timeout, or stall without progress.
	broadcast := func(seq uint64, timeout, stall time.Duration) (count int, lat time.Duration, ok bool, err error) {
		clear(got)
		clear(last)
		buf = appendBroadcast(buf[:0], head, seq)
		t0 := time.Now()
		st, err := hc.do(buf, true)
		if err != nil {
			return 0, 0, false, err
		}
		if st != 200 {
			return 0, 0, false, &statusError{what: "POST /broadcast", code: st, body: truncate(string(hc.body), 100)}
		}
		want := n
		if count = firstInt(hc.body); count > 0 && count < n {
			want = count
		}
		deadline := t0.Add(timeout)
		sum, progressAt := 0, time.Now()
		for sum < want {
			timer.Reset(min(time.Until(deadline), 100*time.Millisecond))
			select {
			case e := <-fl.ev:
				if e.ended {
					return count, 0, false, fl.kidError(e)
				}
				if e.m.T != "bc" || e.m.Seq != seq || e.m.Got <= got[e.kid] {
					continue
				}
				delivered.Add(int64(e.m.Got - got[e.kid]))
				sum += e.m.Got - got[e.kid]
				got[e.kid], last[e.kid] = e.m.Got, max(last[e.kid], e.m.Last)
				progressAt = time.Now()
			case now := <-timer.C:
				if now.After(deadline) || now.Sub(progressAt) > stall {
					return count, 0, false, nil
				}
			case <-ctx.Done():
				return count, 0, false, ctx.Err()
			}
		}
		return count, time.Duration(maxOf(last) - t0.UnixNano()), true, nil
	}
	if count, _, ok, err := broadcast(1, warmupTimeout, 10*time.Second); err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("warm-up broadcast did not reach every member (the server reported sending to %d)", count)
		}
		return err
	}
	ctr := new(counter)
	bs := &BroadcastStats{Members: n, MembersPerWorker: h.workers}
	d0 := delivered.Load()
	m.begin(s.o.Duration, "delivery", func() int64 { return delivered.Load() - d0 })
	cpu0 := fl.cpu()
	deadline := time.Now().Add(s.o.Duration)
	for seq := uint64(2); (time.Now().Before(deadline) || bs.Broadcasts+bs.Incomplete < 5) && ctx.Err() == nil; seq++ {
		count, lat, ok, err := broadcast(seq, deliveryTimeout, deliveryTimeout)
		switch {
		case err != nil && ctx.Err() == nil:
			var fe *fleetError
			if errors.As(err, &fe) {
				return err // a load generator process is gone with its members
			}
			ctr.errs.Add(1)
			bs.LastError = err.Error()
			hc.Close()
			if hc, err = dialHTTP(ctx, t.httpAddr); err != nil {
				return fmt.Errorf("reconnect: %w", err)
			}
		default:
			bs.count(ctr, ok, count, lat)
		}
	}
	w := m.end()
	ctr.ops.Store(delivered.Load() - d0)
	r.fill(w, []*counter{ctr})
	r.LoadgenCPU += (fl.cpu() - cpu0).Seconds()
	r.Broadcast = bs
	return nil
}

func maxOf(v []int64) int64 {
	var m int64
	for _, x := range v {
		m = max(m, x)
	}
	return m
}
