package reactor

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"

	"github.com/forkd/forkd/ipc"
)

// userState is what a connection carries for the users layer: the uid
// bound to it and its session. It lives with the connection in the process
// holding it (the master's reactor in PROCESS mode), so it survives the
// worker that serves the connection.
type userState struct {
	mu      sync.Mutex
	uid     string
	session map[string]string
	size    int // the session's size as JSON
}

// uidPrefix starts the name of the room that holds a uid's connections: a
// user is a room of its own (so a push to a user is a broadcast: one bus
// hop per process holding its connections). Application rooms may not
// start with a NUL byte (the root package refuses them).
const uidPrefix = "\x00uid:"

// UIDRoom is the room holding uid's connections.
func UIDRoom(uid string) string { return uidPrefix + uid }

// IsUIDRoom reports whether room is a uid's room.
func IsUIDRoom(room string) bool { return strings.HasPrefix(room, uidPrefix) }

// UID returns the uid bound to c ("" when none).
func (c *Conn) UID() string {
	c.user.mu.Lock()
	defer c.user.mu.Unlock()
	return c.user.uid
}

// BindUID binds connection id to uid, replacing any uid bound before; ""
// unbinds. A closing connection leaves its uid's room with its other rooms.
func (r *Reactor) BindUID(id uint64, uid string) ipc.Outcome {
	c := r.Conn(id)
	if c == nil || !c.ws.Load() {
		return ipc.NoConnection
	}
	c.user.mu.Lock()
	old := c.user.uid
	c.user.uid = uid
	c.user.mu.Unlock()
	if old == uid {
		return ipc.OK
	}
	if old != "" {
		r.Leave(id, UIDRoom(old))
	}
	if uid == "" {
		return ipc.OK
	}
	out := r.Join(id, UIDRoom(uid))
	if out != ipc.OK {
		c.user.mu.Lock()
		if c.user.uid == uid {
			c.user.uid = ""
		}
		c.user.mu.Unlock()
	}
	return out
}

// Session applies a session operation (ipc.SessionGet/Set/Update) to
// connection id and returns the session as JSON. A session over
// ipc.MaxSession is refused with TooLarge and left as it was.
func (r *Reactor) Session(id uint64, op uint8, payload []byte) (ipc.Outcome, []byte) {
	c := r.Conn(id)
	if c == nil || !c.ws.Load() {
		return ipc.NoConnection, nil
	}
	return c.user.apply(op, payload)
}

func (u *userState) apply(op uint8, payload []byte) (ipc.Outcome, []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if op == ipc.SessionGet {
		b, _ := json.Marshal(u.session)
		return ipc.OK, b
	}
	if len(payload) > ipc.MaxSession {
		return ipc.TooLarge, nil
	}
	var in map[string]string
	if err := json.Unmarshal(payload, &in); err != nil {
		return ipc.Failed, nil
	}
	next := in
	if op == ipc.SessionUpdate {
		next = make(map[string]string, len(u.session)+len(in))
		for k, v := range u.session {
			next[k] = v
		}
		for k, v := range in {
			next[k] = v
		}
	} else if op != ipc.SessionSet {
		return ipc.Failed, nil
	}
	b, _ := json.Marshal(next)
	if len(b) > ipc.MaxSession {
		return ipc.TooLarge, nil
	}
	u.session, u.size = next, len(b)
	return ipc.OK, b
}

// Members returns up to q.Limit members of q.Room held here whose id is
// above q.After, by id.
func (r *Reactor) Members(q ipc.MembersQuery) []ipc.Member {
	r.rooms.mu.Lock()
	set := r.rooms.m[q.Room]
	conns := make([]*Conn, 0, len(set))
	for c := range set {
		if c.id > q.After {
			conns = append(conns, c)
		}
	}
	r.rooms.mu.Unlock()
	slices.SortFunc(conns, func(a, b *Conn) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	if q.Limit > 0 && len(conns) > int(q.Limit) {
		conns = conns[:q.Limit]
	}
	out := make([]ipc.Member, len(conns))
	for i, c := range conns {
		out[i] = ipc.Member{Conn: c.id, UID: c.UID()}
	}
	return out
}

// BroadcastExcept is Broadcast skipping every connection in exclude too.
func (r *Reactor) BroadcastExcept(room string, op int, data []byte, except uint64, exclude []uint64) (reached, skipped int) {
	r.rooms.mu.Lock()
	set := r.rooms.m[room]
	members := make([]*Conn, 0, len(set))
	for c := range set {
		if c.id != except && !slices.Contains(exclude, c.id) {
			members = append(members, c)
		}
	}
	r.rooms.mu.Unlock()
	for _, c := range members {
		if c.Send(op, data) == ipc.OK {
			reached++
		} else {
			skipped++
		}
	}
	return reached, skipped
}

// JoinQuiet is Join without reporting the room's new count: for a caller
// that must not wait (the BASE-mode replay, run on the worker's ipc read
// loop, through which the answer to a report would have to come, while
// another goroutine may hold the report lock waiting for its own). The
// caller reports with ReportRoom from another goroutine.
func (r *Reactor) JoinQuiet(id uint64, room string) ipc.Outcome {
	c := r.Conn(id)
	if c == nil || !c.ws.Load() {
		return ipc.NoConnection
	}
	r.addMember(c, room)
	if r.closedDuringJoin(c, room, func(int) {}) {
		return ipc.NoConnection
	}
	return ipc.OK
}

// closedDuringJoin undoes a join that raced the connection's close: forget
// removes a connection from the table before it leaves its rooms, so a
// connection still in the table after it was added to room will be taken
// out by that leave; one no longer there may have left before the join,
// and is taken out here (else a closed connection would stay a member,
// and its user online, for ever). The new count goes to report (under
// the report lock, so not from JoinQuiet's caller), or the handler's
// RoomChanged when nil.
func (r *Reactor) closedDuringJoin(c *Conn, room string, report func(int)) bool {
	if r.Conn(c.id) == c {
		return false
	}
	if _, ok := r.leave(c, room); ok {
		c.mu.Lock()
		for i, name := range c.rooms {
			if name == room {
				c.rooms = append(c.rooms[:i], c.rooms[i+1:]...)
				break
			}
		}
		c.mu.Unlock()
		if report == nil {
			r.changed(room)
		}
	}
	return true
}

// ReportRoom gives room's current local count to report, in order with
// the reactor's other reports.
func (r *Reactor) ReportRoom(room string, report func(members int)) {
	r.rooms.report.Lock()
	defer r.rooms.report.Unlock()
	report(r.Count(room))
}
