package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// The push and broadcast scenarios use the built-in chat: members join
// /chat?room=R&name=N, learn their connection id and worker from the welcome
// message, and are then reached by POST /push?conn=ID or POST /broadcast?room=R.
// Bodies carry a marker ("PUSH:..." or "BCAST:...") found anywhere in the
// delivered frame, so it does not matter whether the server forwards the body
// as is or wraps it in JSON.

const (
	welcomeTimeout  = 10 * time.Second
	deliveryTimeout = 5 * time.Second
	warmupTimeout   = 60 * time.Second
	pushMarker      = "PUSH:"
	bcastMarker     = "BCAST:"
)

// member is one /chat connection.
type member struct {
	ws     *wsConn
	conn   string // the server's connection id
	worker int
}

// welcome is the first message on /chat.
type welcome struct {
	Type   string          `json:"type"`
	Conn   json.RawMessage `json:"conn"`
	Worker int             `json:"worker"`
	Room   string          `json:"room"`
}

// joinChat connects to /chat and reads the welcome message.
func joinChat(ctx context.Context, addr, room, name string) (*member, error) {
	return joinChatPath(ctx, addr, "/chat?room="+url.QueryEscape(room)+"&name="+url.QueryEscape(name))
}

// joinChatPath connects to a /chat path and reads the welcome message.
func joinChatPath(ctx context.Context, addr, path string) (*member, error) {
	ws, err := dialWS(ctx, addr, path)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(welcomeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = ws.c.SetReadDeadline(deadline)
	for {
		if _, err := ws.readMessage(); err != nil {
			ws.Close()
			return nil, fmt.Errorf("waiting for the welcome message: %w", err)
		}
		var w welcome
		if json.Unmarshal(ws.msg, &w) != nil || w.Type != "welcome" {
			continue // a join announcement or the like
		}
		id := string(w.Conn)
		if s, err := strconv.Unquote(id); err == nil {
			id = s
		}
		if id == "" {
			ws.Close()
			return nil, fmt.Errorf("welcome without a conn id: %q", ws.msg)
		}
		_ = ws.c.SetReadDeadline(time.Time{})
		return &member{ws: ws, conn: id, worker: w.Worker}, nil
	}
}

// joinAll joins n members; name(i) gives room and name. quiet members
// (/chat?quiet=1) join without announcements or rosters.
func joinAll(ctx context.Context, addr string, n int, quiet bool, room func(i int) string) ([]*member, *closerSet, error) {
	ms, err := dialAll(ctx, n, 32, func(ctx context.Context, i int) (*member, error) {
		path := "/chat?room=" + url.QueryEscape(room(i)) + "&name=bench" + strconv.Itoa(i)
		if quiet {
			path += "&quiet=1"
		}
		return joinChatPath(ctx, addr, path)
	})
	set := new(closerSet)
	for _, m := range ms {
		if m != nil {
			set.add(m.ws)
		}
	}
	if err != nil {
		set.closeAll()
		return nil, nil, fmt.Errorf("join chat: %w", err)
	}
	return ms, set, nil
}

func perWorker(ms []*member) map[string]int {
	out := map[string]int{}
	for _, m := range ms {
		out[strconv.Itoa(m.worker)]++
	}
	return out
}

// markerFields parses "MARKER:a:b:c;" somewhere in msg into up to 3 numbers.
func markerFields(msg []byte, marker string) (f [3]uint64, ok bool) {
	i := bytes.Index(msg, []byte(marker))
	if i < 0 {
		return f, false
	}
	k := 0
	for _, c := range msg[i+len(marker):] {
		switch {
		case c >= '0' && c <= '9':
			f[k] = f[k]*10 + uint64(c-'0')
		case c == ':' && k < 2:
			k++
		case c == ';':
			return f, true
		default:
			return f, false
		}
	}
	return f, false
}

// padBody pads b with 'x' to n bytes.
func padBody(b []byte, n int) []byte {
	for len(b) < n {
		b = append(b, 'x')
	}
	return b
}

// note tells a push sender that its message arrived.
type note struct {
	seq uint64
	lat time.Duration
}

// markedPost builds into buf a POST of head whose echoSize-byte body
// starts with marker, sender i, seq and the send time (read back by
// markerFields on the receiving side).
func (s *session) markedPost(buf, head []byte, marker string, i int, seq uint64, t0 time.Time) []byte {
	buf = append(buf[:0], head...)
	body := len(buf)
	buf = append(buf, marker...)
	buf = strconv.AppendInt(buf, int64(i), 10)
	buf = append(buf, ':')
	buf = strconv.AppendUint(buf, seq, 10)
	buf = append(buf, ':')
	buf = strconv.AppendInt(buf, int64(t0.Sub(s.epoch)), 10)
	buf = append(buf, ';')
	return padBody(buf, body+echoSize)
}

// pushSender is the load of sender i in the push scenarios: a marked POST
// of head(i, k) (k counts the sender's posts from 0), then a wait until
// want notes of it have arrived (each an op) or deliveryTimeout (an error).
func (s *session) pushSender(ctx context.Context, t *target, hset *closerSet, senders []*httpConn, notes []chan note,
	marker string, want int, head func(i int, k uint64) []byte) func(i int, ctr *lane, stop <-chan struct{}) {
	return func(i int, ctr *lane, stop <-chan struct{}) {
		c := senders[i]
		timer := time.NewTimer(time.Hour)
		defer timer.Stop()
		var buf []byte
		for seq := uint64(1); !stopped(stop); seq++ {
			t0 := time.Now()
			buf = s.markedPost(buf, head(i, seq-1), marker, i, seq, t0)
			ok, end := s.roundTrip(ctx, t, hset, ctr, stop, &c, buf)
			if end {
				return
			}
			if !ok {
				continue
			}
			timer.Reset(deliveryTimeout)
			for got := 0; got < want; {
				select {
				case nt := <-notes[i]:
					if nt.seq != seq {
						continue // a late one that timed out before
					}
					if stopped(stop) {
						return
					}
					ctr.done(t0, nt.lat)
					got++
				case <-timer.C:
					ctr.errs.Add(1)
					got = want
				case <-stop:
					return
				}
			}
		}
	}
}

// readNotes reads every member of ms (readMembers) and hands each message
// carrying marker for sender i < n to the i-th channel (of depth), as a
// note of its sequence and latency; a full channel drops the note.
func (s *session) readNotes(ms []*member, wg *sync.WaitGroup, marker string, n, depth int) []chan note {
	notes := make([]chan note, n)
	for i := range notes {
		notes[i] = make(chan note, depth)
	}
	readMembers(ms, wg, func(msg []byte) {
		f, ok := markerFields(msg, marker)
		if !ok || f[0] >= uint64(n) {
			return
		}
		select {
		case notes[f[0]] <- note{seq: f[1], lat: time.Since(s.epoch) - time.Duration(f[2])}:
		default:
		}
	})
	return notes
}

// benchPush: Conns /chat members each in their own room; Conns HTTP senders
// POST /push?conn=ID (64-byte body) round-robin over the members, each
// waiting until its message is delivered before sending the next. One op is
// one delivery; latency is from the POST's send to the frame's receipt.
func (s *session) benchPush(ctx context.Context, t *target, m *meter, r *Result) error {
	n := s.o.Conns
	ms, set, err := joinAll(ctx, t.wsAddr, n, false, func(i int) string { return "bench-push-" + s.nonce + "-" + strconv.Itoa(i) })
	if err != nil {
		return err
	}
	heads := make([][]byte, n)
	for i, mb := range ms {
		heads[i] = httpPostHead(t.httpAddr, "/push?conn="+url.QueryEscape(mb.conn), echoSize)
	}
	var rwg sync.WaitGroup
	notes := s.readNotes(ms, &rwg, pushMarker, n, 4)
	defer func() {
		set.closeAll()
		rwg.Wait()
	}()
	senders, hset, err := dialSet(ctx, n, 16, func(ctx context.Context, _ int) (*httpConn, error) { return dialHTTP(ctx, t.httpAddr) })
	if err != nil {
		return err
	}
	w, cs := drive(ctx, m, s.o.Duration, "msg", n, hset, s.pushSender(ctx, t, hset, senders, notes, pushMarker, 1,
		func(i int, k uint64) []byte { return heads[(i+int(k))%n] }))
	r.fill(w, cs)
	r.Push = &PushStats{Targets: n, TargetsPerWorker: perWorker(ms)}
	return nil
}

// firstInt returns the first decimal number in b ("1000", "1000\n" or
// `{"members":1000}`), or -1.
func firstInt(b []byte) int {
	i := bytes.IndexAny(b, "0123456789")
	if i < 0 {
		return -1
	}
	n := 0
	for _, c := range b[i:] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// statusError is an unexpected HTTP status.
type statusError struct {
	what string
	code int
	body string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s: status %d: %q", e.what, e.code, e.body)
}

// readMembers runs one reader per member, handing on every message it
// receives (valid until on returns) until its connection ends; wg counts
// the readers.
func readMembers(ms []*member, wg *sync.WaitGroup, on func(msg []byte)) {
	for _, mb := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := mb.ws.readMessage(); err != nil {
					return
				}
				on(mb.ws.msg)
			}
		}()
	}
}
