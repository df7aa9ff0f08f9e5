package reactor

import (
	"sync"

	"github.com/forkd/forkd/ipc"
)

// rooms maps a room name to the connections of this reactor in it.
type rooms struct {
	mu sync.Mutex
	m  map[string]map[*Conn]struct{}
	// report serializes RoomChanged: each report reads the count under it,
	// so reports cannot overtake each other and the last one is current.
	report sync.Mutex
}

// changed reports room's current member count to the handler.
func (r *Reactor) changed(room string) {
	r.rooms.report.Lock()
	defer r.rooms.report.Unlock()
	r.h.RoomChanged(room, r.Count(room))
}

// Join adds connection id to room. Outcome NoConnection if it is not here.
func (r *Reactor) Join(id uint64, room string) ipc.Outcome {
	c := r.Conn(id)
	if c == nil || !c.ws.Load() {
		return ipc.NoConnection
	}
	had := r.addMember(c, room)
	if r.closedDuringJoin(c, room, nil) {
		return ipc.NoConnection
	}
	if !had {
		r.changed(room)
	}
	return ipc.OK
}

// addMember puts c in room's member set and room in c's list; had says
// it was a member already.
func (r *Reactor) addMember(c *Conn, room string) (had bool) {
	r.rooms.mu.Lock()
	defer r.rooms.mu.Unlock()
	set := r.rooms.m[room]
	if set == nil {
		set = make(map[*Conn]struct{})
		r.rooms.m[room] = set
	}
	_, had = set[c]
	set[c] = struct{}{}
	if !had {
		c.mu.Lock()
		c.rooms = append(c.rooms, room)
		c.mu.Unlock()
	}
	return had
}

// Leave removes connection id from room.
func (r *Reactor) Leave(id uint64, room string) ipc.Outcome {
	c := r.Conn(id)
	if c == nil {
		return ipc.NoConnection
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
		r.changed(room)
	}
	return ipc.OK
}

func (r *Reactor) leave(c *Conn, room string) (int, bool) {
	r.rooms.mu.Lock()
	defer r.rooms.mu.Unlock()
	set := r.rooms.m[room]
	if _, ok := set[c]; !ok {
		return 0, false
	}
	delete(set, c)
	if len(set) == 0 {
		delete(r.rooms.m, room)
	}
	return len(set), true
}

// leaveAll takes a closing connection out of all its rooms.
func (r *Reactor) leaveAll(c *Conn) {
	c.mu.Lock()
	names := c.rooms
	c.rooms = nil
	c.mu.Unlock()
	for _, room := range names {
		if _, ok := r.leave(c, room); ok {
			r.changed(room)
		}
	}
}

// Broadcast queues data to every member of room but except, and returns how
// many accepted it (reached) and how many did not (skipped: send buffer
// full, or closing).
func (r *Reactor) Broadcast(room string, op int, data []byte, except uint64) (reached, skipped int) {
	return r.BroadcastExcept(room, op, data, except, nil)
}

// BroadcastTo queues data to the listed connections of this reactor (the
// members of a room held here, as the master computed them).
func (r *Reactor) BroadcastTo(ids []uint64, op int, data []byte) int {
	n := 0
	for _, id := range ids {
		if r.Push(id, op, data) == ipc.OK {
			n++
		}
	}
	return n
}

// Count returns the number of members of room held here.
func (r *Reactor) Count(room string) int {
	r.rooms.mu.Lock()
	defer r.rooms.mu.Unlock()
	return len(r.rooms.m[room])
}
