package forkd

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/worker"
)

// Users, sessions, groups and history (GatewayWorker's Gateway API; see
// docs/guide.md for the mapping). All of it is on the bus: it works the
// same from any worker, in both modes, and whichever process holds the
// connections.

// Errors of the users API.
var (
	// ErrInvalid is an argument the API refuses (an empty uid, a room
	// name starting with a NUL byte, a session that is not a flat JSON
	// object of strings).
	ErrInvalid = errors.New("forkd: invalid argument")
	// ErrSessionTooLarge is a session over MaxSessionSize.
	ErrSessionTooLarge = fmt.Errorf("forkd: session over %d bytes as JSON: %w", MaxSessionSize, ErrTooLarge)
)

// MaxSessionSize is the largest session a connection keeps, as JSON. A
// SetSession or UpdateSession that would make it larger fails with
// ErrSessionTooLarge and leaves the session as it was.
const MaxSessionSize = ipc.MaxSession

// PartialError says some cluster nodes did not answer within
// --cluster-timeout: the result that comes with it holds every other
// node's share (their members counted or listed), not theirs. It wraps
// ErrUnavailable; a caller that can use a partial answer tests for it
// with errors.As.
type PartialError struct {
	Nodes []int // the node numbers that did not answer
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("forkd: cluster nodes %v did not answer in time: %v", e.Nodes, ErrUnavailable)
}

func (e *PartialError) Unwrap() error { return ErrUnavailable }

func partial(missing []int) error {
	if len(missing) == 0 {
		return nil
	}
	return &PartialError{Nodes: missing}
}

func usersErr(out ipc.Outcome) error {
	if out == ipc.Failed {
		return ErrInvalid
	}
	return outcomeErr(out)
}

func checkRoom(room string) error {
	if room == "" || strings.HasPrefix(room, "\x00") || len(room) > 0xFFFF {
		return fmt.Errorf("forkd: room %q: empty, over 65535 bytes, or starting with NUL (reserved): %w", room, ErrInvalid)
	}
	return nil
}

func ids(in []ConnID) []uint64 {
	out := make([]uint64, len(in))
	for i, id := range in {
		out[i] = uint64(id)
	}
	return out
}

func (w *Worker) publish(room string, t MessageType, data []byte, except ConnID, exclude []ConnID, stamp bool) (BroadcastResult, error) {
	p, out := w.w.Publish(room, int(t), data, uint64(except), ids(exclude), stamp)
	return BroadcastResult{Reached: p.Reached, Skipped: p.Skipped, Seq: p.Seq, Epoch: p.Epoch}, outcomeErr(out)
}

// BroadcastExcept sends to every member of room but the connections in
// exclude (the sender, typically), wherever they are held, and reports
// the members reached and skipped and the message's seq in the room
// (GatewayWorker's sendToGroup with exclude_client_id).
func (w *Worker) BroadcastExcept(room string, t MessageType, data []byte, exclude ...ConnID) (BroadcastResult, error) {
	if err := checkRoom(room); err != nil {
		return BroadcastResult{}, err
	}
	return w.publish(room, t, data, 0, exclude, false)
}

// BroadcastJSON is BroadcastExcept for a JSON object, into which the
// history owner writes the message's "seq" and the room's "epoch" (first,
// before your fields) before it is kept and sent: every member, and every
// connection that recovers it later, sees the same numbered message. A
// value that is not an object is sent as it is.
func (w *Worker) BroadcastJSON(room string, obj []byte, exclude ...ConnID) (BroadcastResult, error) {
	if err := checkRoom(room); err != nil {
		return BroadcastResult{}, err
	}
	return w.publish(room, TextMessage, obj, 0, exclude, true)
}

// BindUID binds a connection to a user id (GatewayWorker's bindUid): a
// connection has at most one uid (binding again replaces it), a uid any
// number of connections, on any workers. A connection's uid goes when it
// closes; the user is offline once its last connection has. Bind after
// you have authenticated the user: the uid is what SendToUID trusts.
func (w *Worker) BindUID(id ConnID, uid string) error {
	if uid == "" {
		return fmt.Errorf("forkd: BindUID: empty uid: %w", ErrInvalid)
	}
	return usersErr(w.w.BindUID(uint64(id), uid))
}

// UnbindUID removes a connection's uid (GatewayWorker's unbindUid).
func (w *Worker) UnbindUID(id ConnID) error {
	return usersErr(w.w.BindUID(uint64(id), ""))
}

// SendToUID sends to every connection of uid, wherever they are held: one
// bus hop per process holding them, not per connection. The result says
// how many connections it reached (and skipped: send buffer full);
// ErrNoConnection when the user has none (GatewayWorker's sendToUid).
func (w *Worker) SendToUID(uid string, t MessageType, data []byte) (BroadcastResult, error) {
	if uid == "" {
		return BroadcastResult{}, fmt.Errorf("forkd: SendToUID: empty uid: %w", ErrInvalid)
	}
	r, err := w.publish(worker.UIDRoom(uid), t, data, 0, nil, false)
	if err == nil && r.Reached+r.Skipped == 0 {
		err = ErrNoConnection
	}
	return r, err
}

// UIDCount returns how many connections uid has, on every node of a
// cluster; a *PartialError (with the count of the others) when some node
// did not answer in time.
func (w *Worker) UIDCount(uid string) (int, error) {
	n, missing, out := w.w.CountNodes(worker.UIDRoom(uid))
	if out != ipc.OK {
		return 0, outcomeErr(out)
	}
	return n, partial(missing)
}

// UIDOnline reports whether uid has a connection (GatewayWorker's
// isUidOnline): true whenever one answering node has one, even with a
// *PartialError.
func (w *Worker) UIDOnline(uid string) (bool, error) {
	n, err := w.UIDCount(uid)
	if n > 0 {
		return true, nil
	}
	return false, err
}

// UIDConns lists uid's connections on every node, by id
// (GatewayWorker's getClientIdByUid); with a *PartialError, those of the
// nodes that answered.
func (w *Worker) UIDConns(uid string) ([]ConnID, error) {
	var out []ConnID
	err := w.eachMember(worker.UIDRoom(uid), func(m Member) { out = append(out, m.Conn) })
	return out, err
}

// Member is a member of a room: its connection and the uid bound to it
// ("" when none).
type Member struct {
	Conn ConnID `json:"conn"`
	UID  string `json:"uid,omitempty"`
}

// RoomMembers returns a page of room's members, by connection id: at most
// limit (0: 1000) with an id above after (0: from the start). Pass the
// last one's Conn as after for the next page; a page shorter than limit
// is the last (GatewayWorker's getClientSessionsByGroup, paged). In a
// cluster the page gathers every node's members (ids start with their
// node, so pages run node by node); a node that does not answer within
// --cluster-timeout is named in a *PartialError that comes with the
// others' members.
func (w *Worker) RoomMembers(room string, after ConnID, limit int) ([]Member, error) {
	if err := checkRoom(room); err != nil {
		return nil, err
	}
	return w.members(room, after, limit)
}

func (w *Worker) members(room string, after ConnID, limit int) ([]Member, error) {
	if limit <= 0 {
		limit = 1000
	}
	ms, missing, out := w.w.Members(room, uint64(after), limit)
	if out != ipc.OK {
		return nil, usersErr(out)
	}
	res := make([]Member, len(ms))
	for i, m := range ms {
		res[i] = Member{Conn: ConnID(m.Conn), UID: m.UID}
	}
	return res, partial(missing)
}

// eachMember calls f with every member of room, page by page; a node
// missing from any page is reported once, in one *PartialError.
func (w *Worker) eachMember(room string, f func(Member)) error {
	const page = 1000
	var after ConnID
	missing := map[int]bool{}
	for {
		ms, err := w.members(room, after, page)
		var pe *PartialError
		if errors.As(err, &pe) {
			for _, n := range pe.Nodes {
				missing[n] = true
			}
		} else if err != nil {
			return err
		}
		for _, m := range ms {
			f(m)
		}
		if len(ms) < page {
			break
		}
		after = ms[len(ms)-1].Conn
	}
	var nodes []int
	for n := range missing {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	return partial(nodes)
}

// UIDsInRoom lists the distinct uids bound to room's members
// (GatewayWorker's getUidListByGroup).
func (w *Worker) UIDsInRoom(room string) ([]string, error) {
	if err := checkRoom(room); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	err := w.eachMember(room, func(m Member) {
		if m.UID != "" && !seen[m.UID] {
			seen[m.UID] = true
			out = append(out, m.UID)
		}
	})
	return out, err
}

// Session is a connection's key/value session (GatewayWorker's
// $_SESSION): kept by the process holding the connection (the master in
// PROCESS mode, so it outlives a worker crash or reload and is there in
// OnResume), readable and writable from any worker. At most
// MaxSessionSize as JSON.
type Session map[string]string

// GetSession returns a connection's session (an empty one when none was
// set); ErrNoConnection when it is gone.
func (w *Worker) GetSession(id ConnID) (Session, error) {
	return w.session(id, ipc.SessionGet, nil)
}

// SetSession replaces a connection's session.
func (w *Worker) SetSession(id ConnID, s Session) error {
	_, err := w.session(id, ipc.SessionSet, s)
	return err
}

// UpdateSession merges s into a connection's session (its keys replace
// the same keys; the others stay) and returns the result.
func (w *Worker) UpdateSession(id ConnID, s Session) (Session, error) {
	return w.session(id, ipc.SessionUpdate, s)
}

func (w *Worker) session(id ConnID, op uint8, s Session) (Session, error) {
	var in []byte
	if op != ipc.SessionGet {
		if s == nil {
			s = Session{}
		}
		in, _ = json.Marshal(s)
		if len(in) > MaxSessionSize {
			return nil, ErrSessionTooLarge
		}
	}
	b, out := w.w.Session(uint64(id), op, in)
	switch out {
	case ipc.OK:
	case ipc.TooLarge:
		return nil, ErrSessionTooLarge
	default:
		return nil, usersErr(out)
	}
	res := Session{}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &res); err != nil {
			return nil, fmt.Errorf("forkd: session: %w", err)
		}
		if res == nil {
			res = Session{}
		}
	}
	return res, nil
}

// Recovery is what a JoinSince did.
type Recovery struct {
	// Gap: what the connection missed could not all be replayed (it was
	// older than the room's history, or from another epoch); it was sent
	// {"type":"gap","room":R} first, then every message still kept.
	Gap bool `json:"gap"`
	// Replayed is how many kept messages it was sent before the live ones.
	Replayed int `json:"replayed"`
	// Seq and Epoch are the room's at the join: the last message the
	// connection has (replayed) before the live ones.
	Seq   uint64 `json:"seq"`
	Epoch uint32 `json:"epoch"`
}

// JoinSince puts a connection in a room, first sending it every message
// the room broadcast after seq since (of epoch; 0: not known), in order;
// the room's live messages follow, with no duplicate and no gap. When that
// cannot be done it sends {"type":"gap","room":R} first (see Recovery).
// The room's history is kept by --room-history / --room-history-ttl or
// SetRoomHistory.
func (w *Worker) JoinSince(id ConnID, room string, since uint64, epoch uint32) (Recovery, error) {
	if err := checkRoom(room); err != nil {
		return Recovery{}, err
	}
	res, out := w.w.Recover(uint64(id), ipc.Recover{Room: room, Since: since, Epoch: epoch, HasSince: true})
	return Recovery{Gap: res.Gap, Replayed: int(res.Replayed), Seq: res.Seq, Epoch: res.Epoch}, usersErr(out)
}

// SetRoomHistory sets how much history room keeps: the last max messages,
// none older than ttl (0: no age limit); both 0: none. It overrides
// --room-history and --room-history-ttl for that room.
func (w *Worker) SetRoomHistory(room string, max int, ttl time.Duration) error {
	if err := checkRoom(room); err != nil {
		return err
	}
	if max < 0 || ttl < 0 {
		return fmt.Errorf("forkd: SetRoomHistory: negative limit: %w", ErrInvalid)
	}
	return usersErr(w.w.SetHistory(room, max, ttl))
}

// BindUID binds this connection to uid (see Worker.BindUID).
func (c *Conn) BindUID(uid string) error { return c.w.BindUID(c.ID(), uid) }

// UnbindUID removes this connection's uid.
func (c *Conn) UnbindUID() error { return c.w.UnbindUID(c.ID()) }

// Session returns this connection's session (see Worker.GetSession).
func (c *Conn) Session() (Session, error) { return c.w.GetSession(c.ID()) }

// SetSession replaces this connection's session.
func (c *Conn) SetSession(s Session) error { return c.w.SetSession(c.ID(), s) }

// UpdateSession merges s into this connection's session.
func (c *Conn) UpdateSession(s Session) (Session, error) { return c.w.UpdateSession(c.ID(), s) }

// JoinSince puts this connection in room, replaying what it missed (see
// Worker.JoinSince).
func (c *Conn) JoinSince(room string, since uint64, epoch uint32) (Recovery, error) {
	return c.w.JoinSince(c.ID(), room, since, epoch)
}

// SinceSeq is where a reconnecting client says it left off: the upgrade
// request's `since` (and `epoch`) query parameters; ok is false when it
// sent no `since` (or an empty one). A `since` or `epoch` that is not a
// number (not a non-negative integer, or out of range) gives SinceInvalid
// with ok true, logged once: the client asked for a recovery from a point
// no room can place, and JoinSince answers it with a gap, as it answers a
// `since` ahead of the room.
func (c *Conn) SinceSeq() (since uint64, epoch uint32, ok bool) {
	s := c.Query("since")
	if s == "" {
		return 0, 0, false
	}
	since, err := strconv.ParseUint(s, 10, 64)
	if err == nil && since == SinceInvalid {
		err = strconv.ErrRange
	}
	if e := c.Query("epoch"); e != "" && err == nil {
		var n uint64
		if n, err = strconv.ParseUint(e, 10, 32); err == nil {
			epoch = uint32(n)
		}
	}
	if err != nil {
		c.w.Log().Warn().Str("conn", c.ID().String()).Str("since", clip(s, 32)).Str("epoch", clip(c.Query("epoch"), 32)).
			Msg("bad request: since/epoch not a non-negative integer; the recovering join gets a gap")
		return SinceInvalid, 0, true
	}
	return since, epoch, true
}

// SinceInvalid is the `since` SinceSeq gives for one the client sent
// malformed: ahead of every room's numbering, so JoinSince sends the
// connection {"type":"gap","room":R} first, then every message still kept
// (Recovery.Gap is true).
const SinceInvalid = ^uint64(0)

// clip is s cut to at most n bytes, for a log line.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
