package bench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// benchBroadcast: BroadcastMembers /chat members in one room; one POST
// /broadcast at a time, each waited for until the last member has it. One op
// is one member delivery; latency is the time until the last member.
func (s *session) benchBroadcast(ctx context.Context, t *target, m *meter, r *Result) error {
	n := s.o.Members
	if s.overBudget(n) {
		return s.broadcastFleet(ctx, t, m, r)
	}
	room := "bench-bcast-" + s.nonce
	ms, set, err := joinAll(ctx, t.wsAddr, n, true, func(int) string { return room })
	if err != nil {
		return err
	}
	// state is seq<<32 | members that have seq: one word, so a late delivery
	// of an earlier broadcast can never count toward the current one.
	var state atomic.Uint64
	var delivered atomic.Int64
	var want atomic.Int64  // receipts that complete the current broadcast
	var joins atomic.Int64 // join announcements and roster entries received, to wait out their storm
	done := make(chan uint64, 1)
	signal := func(seq uint64) {
		select {
		case done <- seq:
		default:
		}
	}
	var rwg sync.WaitGroup
	readMembers(ms, &rwg, func(msg []byte) {
		f, ok := markerFields(msg, bcastMarker)
		if !ok {
			joins.Add(1) // a join announcement or a roster entry
			return
		}
		for {
			v := state.Load()
			if v>>32 != f[0] {
				return
			}
			if state.CompareAndSwap(v, v+1) {
				delivered.Add(1)
				if int64(v&0xFFFFFFFF)+1 >= want.Load() {
					signal(f[0])
				}
				return
			}
		}
	})
	defer func() {
		set.closeAll()
		rwg.Wait()
	}()
	// The sender connects once the join storm is over (below): a
	// connection opened before it sat idle through it, past the server's
	// read timeout for a first request, and the warm-up got a 408.
	var hc *httpConn
	hset := new(closerSet)
	defer hset.closeAll()
	head := httpPostHead(t.httpAddr, "/broadcast?room="+url.QueryEscape(room), echoSize)
	var buf []byte
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	// One broadcast: it is complete when as many members as the server says
	// it sent to (normally n) have it. It returns that count and whether the
	// broadcast completed within timeout, giving up early when no member
	// received anything for stall.
	broadcast := func(seq uint64, timeout, stall time.Duration) (int, bool, error) {
		want.Store(int64(n))
		state.Store(seq << 32)
		buf = appendBroadcast(buf[:0], head, seq)
		st, err := hc.do(buf, true)
		if err != nil {
			return 0, false, err
		}
		if st != 200 {
			return 0, false, &statusError{what: "POST /broadcast", code: st, body: truncate(string(hc.body), 100)}
		}
		count := firstInt(hc.body)
		if count > 0 && count < n { // the server knows fewer members: wait for those
			want.Store(int64(count))
			if int(state.Load()&0xFFFFFFFF) >= count {
				signal(seq)
			}
		}
		deadline := time.Now().Add(timeout)
		progress, progressAt := state.Load(), time.Now()
		for {
			timer.Reset(min(time.Until(deadline), time.Second))
			select {
			case got := <-done:
				if got == seq {
					return count, true, nil
				}
			case now := <-timer.C:
				if now.After(deadline) {
					return count, false, nil
				}
				if v := state.Load(); v != progress {
					progress, progressAt = v, now
				} else if now.Sub(progressAt) > stall {
					return count, false, nil
				}
			case <-ctx.Done():
				return count, false, ctx.Err()
			}
		}
	}
	// Wait out the storm of join announcements (n joins, each to every
	// member present: up to n*n/2 messages) and of roster entries (each
	// newcomer is told of every member already in: as many again) until it
	// has been quiet for a moment; measured broadcasts would otherwise
	// compete with its tail.
	for quietSince, last, begin := time.Now(), int64(-1), time.Now(); time.Since(begin) < warmupTimeout; {
		if j := joins.Load(); j != last {
			last, quietSince = j, time.Now()
		} else if time.Since(quietSince) > 500*time.Millisecond {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	hc, err = dialHTTP(ctx, t.httpAddr)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	hset.add(hc)
	// The warm-up broadcast waits out whatever is still queued.
	if count, ok, err := broadcast(1, warmupTimeout, 10*time.Second); err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("warm-up broadcast reached %d of %d members (the server reported sending to %d)",
				state.Load()&0xFFFFFFFF, n, count)
		}
		return err
	}
	ctr := new(counter)
	bs := &BroadcastStats{Members: n, MembersPerWorker: perWorker(ms)}
	d0 := delivered.Load()
	m.begin(s.o.Duration, "delivery", func() int64 { return delivered.Load() - d0 })
	deadline := time.Now().Add(s.o.Duration)
	for seq := uint64(2); time.Now().Before(deadline) && ctx.Err() == nil; seq++ {
		t0 := time.Now()
		count, ok, err := broadcast(seq, deliveryTimeout, deliveryTimeout)
		switch {
		case err != nil && ctx.Err() == nil:
			ctr.errs.Add(1)
			bs.LastError = err.Error()
			var se *statusError
			if hc.close || !errors.As(err, &se) {
				hset.remove(hc)
				hc.Close()
				if hc, err = dialHTTP(ctx, t.httpAddr); err != nil {
					return fmt.Errorf("reconnect: %w", err)
				}
				hset.add(hc)
			}
		default:
			bs.count(ctr, ok, count, time.Since(t0))
		}
	}
	dEnd := delivered.Load()
	w := m.end()
	ctr.ops.Store(dEnd - d0)
	r.fill(w, []*counter{ctr})
	r.Broadcast = bs
	return nil
}

// appendBroadcast appends to dst the broadcast request numbered seq: head
// (the POST's request line and headers) and a body of echoSize bytes
// starting with the marker and the number.
func appendBroadcast(dst, head []byte, seq uint64) []byte {
	dst = append(dst, head...)
	body := len(dst)
	dst = append(dst, bcastMarker...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, ';')
	return padBody(dst, body+echoSize)
}
