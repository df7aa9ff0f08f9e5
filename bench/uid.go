package bench

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// The uid-push scenario: users with three /chat connections each, spread
// over the workers, reached by POST /push?uid=U (SendToUID: one bus hop per
// process holding the user's connections). It sits next to push (one
// connection per POST /push?conn=ID) so the two compare per delivery.

const (
	uidConnsPerUser = 3
	uidMarker       = "UIDPUSH:"
)

// UIDPushStats describes the uid-push scenario's users.
type UIDPushStats struct {
	Users          int            `json:"users"`
	ConnsPerUser   int            `json:"conns_per_user"`
	ConnsPerWorker map[string]int `json:"conns_per_worker"`
	UsersSpanning  int            `json:"users_spanning_workers"` // users whose connections are on more than one worker
}

// joinUser connects a user's connections, redialling (bounded) so that
// they are not all on one worker when there are several.
func joinUser(ctx context.Context, addr, uid string, workers int) ([]*member, error) {
	path := "/chat?room=" + url.QueryEscape(uid) + "&name=" + url.QueryEscape(uid) + "&uid=" + url.QueryEscape(uid)
	var ms []*member
	for try := 0; len(ms) < uidConnsPerUser; try++ {
		m, err := joinChatPath(ctx, addr, path)
		if err != nil {
			for _, o := range ms {
				o.ws.Close()
			}
			return nil, err
		}
		last := len(ms) == uidConnsPerUser-1
		if last && workers > 1 && try < 8 && ms[0].worker == ms[1].worker && m.worker == ms[0].worker {
			m.ws.Close()
			continue
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// benchUIDPush: Conns/3 users (rounded up) of three connections each;
// one HTTP sender per user POSTs /push?uid=U (64-byte body) and waits
// until all three connections have it before the next. One op is one
// delivery to one connection; latency is from the POST's send to that
// connection's receipt.
func (s *session) benchUIDPush(ctx context.Context, t *target, m *meter, r *Result) error {
	n := (s.o.Conns + uidConnsPerUser - 1) / uidConnsPerUser
	users, err := dialAll(ctx, n, 16, func(ctx context.Context, i int) ([]*member, error) {
		return joinUser(ctx, t.wsAddr, "bench-uid-"+s.nonce+"-"+strconv.Itoa(i), s.o.Workers)
	})
	set := new(closerSet)
	var all []*member
	for _, u := range users {
		for _, mb := range u {
			set.add(mb.ws)
			all = append(all, mb)
		}
	}
	if err != nil {
		set.closeAll()
		return fmt.Errorf("join chat with uids: %w", err)
	}
	stats := &UIDPushStats{Users: n, ConnsPerUser: uidConnsPerUser, ConnsPerWorker: perWorker(all)}
	heads := make([][]byte, n)
	for i, u := range users {
		if len(perWorker(u)) > 1 {
			stats.UsersSpanning++
		}
		heads[i] = httpPostHead(t.httpAddr, "/push?uid="+url.QueryEscape("bench-uid-"+s.nonce+"-"+strconv.Itoa(i)), echoSize)
	}
	var rwg sync.WaitGroup
	notes := s.readNotes(all, &rwg, uidMarker, n, 4*uidConnsPerUser)
	defer func() {
		set.closeAll()
		rwg.Wait()
	}()
	senders, hset, err := dialSet(ctx, n, 16, func(ctx context.Context, _ int) (*httpConn, error) { return dialHTTP(ctx, t.httpAddr) })
	if err != nil {
		return err
	}
	// A connection's uid is bound after its welcome: wait until the server
	// counts all of each user's connections (a push answers how many it
	// reached) before measuring.
	if err := s.awaitUsers(ctx, senders, heads); err != nil {
		return err
	}
	w, cs := drive(ctx, m, s.o.Duration, "delivery", n, hset, s.pushSender(ctx, t, hset, senders, notes, uidMarker, uidConnsPerUser,
		func(i int, _ uint64) []byte { return heads[i] }))
	r.fill(w, cs)
	r.UIDPush = stats
	return nil
}

// awaitUsers pushes an unmarked message to each user until the server
// reports it reached all the user's connections (bounded by warmupTimeout).
func (s *session) awaitUsers(ctx context.Context, senders []*httpConn, heads [][]byte) error {
	deadline := time.Now().Add(warmupTimeout)
	for i, head := range heads {
		req := padBody(append([]byte(nil), head...), len(head)+echoSize)
		for {
			st, err := senders[i].do(req, true)
			if err != nil {
				return fmt.Errorf("uid-push warm-up: %w", err)
			}
			if st == 200 && firstInt(senders[i].body) == uidConnsPerUser {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("uid-push warm-up: user %d: the server reports %q (status %d), want all %d connections reached",
					i, truncate(string(senders[i].body), 100), st, uidConnsPerUser)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}
