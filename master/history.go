package master

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// history is every room's sequence numbers and kept messages. It has one
// owner, the process every broadcast already crosses: the master (its hub
// in BASE mode, its reactor in PROCESS mode). A broadcast is numbered,
// kept and fanned out under its room's lock, and a recovering connection
// is replayed to and joined under the same lock, so it gets what it missed
// in order, then the live messages, with no duplicate and no gap.
type history struct {
	mu        sync.Mutex
	max       int           // --room-history: messages kept per room (0: none)
	ttl       time.Duration // --room-history-ttl: none kept longer (0: no limit)
	rooms     map[string]*roomLog
	limits    map[string]ipc.History // per-room limits set through the API
	lastSweep time.Time
	total     atomic.Int64 // bytes kept by every room together
	budget    int64        // bound of total (0: maxTotalHistoryBytes)
	// members reports whether room has members anywhere (a room log
	// without members or kept messages is dropped by the sweep).
	members func(room string) bool
}

// roomLog is one room's numbering and kept messages.
type roomLog struct {
	mu      sync.Mutex
	dead    bool // dropped by the sweep: fetch the room's log again
	epoch   uint32
	seq     uint64
	max     int
	ttl     time.Duration
	entries []entry // oldest first
	bytes   int
	total   *atomic.Int64 // the history's total, which bytes is part of
	recs    []*recording  // paced recoveries: what the room broadcasts meanwhile
}

type entry struct {
	seq  uint64
	op   uint8
	data []byte
	at   time.Time
}

// maxHistoryBytes bounds one room's kept messages, whatever --room-history
// says: the oldest go first.
const maxHistoryBytes = 16 << 20

// maxTotalHistoryBytes bounds what every room keeps together. Room names
// are often the clients' to choose (the built-in chat's are), so the
// per-room bound times the rooms would be no bound: over it, the sweep
// runs at once, drops the logs of rooms without members (a new epoch:
// their clients get a gap) and then halves every other room's.
const maxTotalHistoryBytes = 1 << 30

func (h *history) maxTotal() int64 {
	if h.budget > 0 {
		return h.budget
	}
	return maxTotalHistoryBytes
}

// addBytes changes what lg keeps by d bytes (lg.mu held).
func (lg *roomLog) addBytes(d int) {
	lg.bytes += d
	if lg.total != nil {
		lg.total.Add(int64(d))
	}
}

// historySweep is how often idle room logs are dropped and old messages
// expired.
const historySweep = 10 * time.Second

// newEpoch is a room log's epoch: a fresh one tells a recovering client
// that the numbering it holds is from a lost history.
func newEpoch() uint32 {
	for {
		if e := rand.Uint32() >> 1; e != 0 { // 31 bits: plain in JSON
			return e
		}
	}
}

// log returns room's log, made on first use.
func (h *history) log(room string) *roomLog {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	if now.Sub(h.lastSweep) > historySweep || h.total.Load() > h.maxTotal() {
		h.lastSweep = now
		h.sweepLocked(now)
	}
	if h.rooms == nil {
		h.rooms = make(map[string]*roomLog)
	}
	lg := h.rooms[room]
	if lg == nil {
		lg = &roomLog{epoch: newEpoch(), max: h.max, ttl: h.ttl, total: &h.total}
		if l, ok := h.limits[room]; ok {
			lg.max, lg.ttl = int(l.Max), time.Duration(l.TTLMillis)*time.Millisecond
		}
		h.rooms[room] = lg
	}
	return lg
}

// lock returns room's log, locked.
func (h *history) lock(room string) *roomLog {
	for {
		lg := h.log(room)
		lg.mu.Lock()
		if !lg.dead {
			return lg
		}
		lg.mu.Unlock()
	}
}

// sweepLocked expires old messages and drops the logs of rooms with
// neither members nor kept messages (a room that comes back gets a new
// epoch: its clients see a gap, never a wrong replay). Busy logs wait for
// the next sweep.
func (h *history) sweepLocked(now time.Time) {
	over := h.total.Load() > h.maxTotal()
	for room, lg := range h.rooms {
		if !lg.mu.TryLock() {
			continue
		}
		lg.expire(now)
		if (len(lg.entries) == 0 || over) && (h.members == nil || !h.members(room)) {
			lg.addBytes(-lg.bytes)
			lg.drop(len(lg.entries))
			lg.dead = true
			delete(h.rooms, room)
		}
		lg.mu.Unlock()
	}
	if h.total.Load() <= h.maxTotal() {
		return
	}
	for _, lg := range h.rooms { // over the bound with members: the older half of each goes
		if !lg.mu.TryLock() {
			continue
		}
		n, b := 0, lg.bytes
		for n < len(lg.entries) && b > lg.bytes/2 {
			b -= len(lg.entries[n].data)
			n++
		}
		lg.addBytes(b - lg.bytes)
		lg.drop(n)
		lg.mu.Unlock()
	}
}

// setLimits sets room's history limits (max 0 and ttl 0: none kept).
func (h *history) setLimits(l ipc.History) {
	h.mu.Lock()
	if h.limits == nil {
		h.limits = make(map[string]ipc.History)
	}
	h.limits[l.Room] = l
	h.mu.Unlock()
	lg := h.lock(l.Room)
	lg.max, lg.ttl = int(l.Max), time.Duration(l.TTLMillis)*time.Millisecond
	lg.trim()
	lg.mu.Unlock()
}

func (lg *roomLog) expire(now time.Time) {
	if lg.ttl <= 0 {
		return
	}
	i := 0
	for i < len(lg.entries) && now.Sub(lg.entries[i].at) > lg.ttl {
		lg.addBytes(-len(lg.entries[i].data))
		i++
	}
	lg.drop(i)
}

func (lg *roomLog) drop(n int) {
	if n == 0 {
		return
	}
	clear(lg.entries[:n])
	lg.entries = lg.entries[n:]
}

func (lg *roomLog) trim() {
	n := 0
	if lg.max <= 0 && lg.ttl <= 0 {
		n = len(lg.entries)
	} else if lg.max > 0 && len(lg.entries) > lg.max {
		n = len(lg.entries) - lg.max
	}
	bytes := lg.bytes
	for _, e := range lg.entries[:n] {
		bytes -= len(e.data)
	}
	for n < len(lg.entries) && bytes > maxHistoryBytes {
		bytes -= len(lg.entries[n].data)
		n++
	}
	lg.addBytes(bytes - lg.bytes)
	lg.drop(n)
	lg.expire(time.Now())
}

// publish numbers a broadcast to room, stamps it (a JSON object gets
// "seq" and "epoch" when stamp is set), keeps it and calls fan with what
// to send, all under the room's lock. A uid's room is neither numbered nor
// kept.
func (h *history) publish(room string, op uint8, data []byte, stamp bool, fan func(data []byte, seq uint64, epoch uint32)) (uint64, uint32) {
	if reactor.IsUIDRoom(room) {
		fan(data, 0, 0)
		return 0, 0
	}
	lg := h.lock(room)
	defer lg.mu.Unlock()
	lg.seq++
	if stamp {
		data = stampJSON(data, lg.seq, lg.epoch)
	}
	if lg.max > 0 || lg.ttl > 0 {
		kept := append([]byte(nil), data...)
		lg.entries = append(lg.entries, entry{seq: lg.seq, op: op, data: kept, at: time.Now()})
		lg.addBytes(len(kept))
		lg.trim()
		data = kept
	}
	fan(data, lg.seq, lg.epoch)
	for _, r := range lg.recs {
		kept := data
		if lg.max <= 0 && lg.ttl <= 0 {
			kept = append([]byte(nil), data...) // the caller's buffer
		}
		r.casts = append(r.casts, cluster.Cast{Flags: op, Seq: lg.seq, Epoch: lg.epoch, Data: kept})
	}
	return lg.seq, lg.epoch
}

// recover works out what a connection rejoining room after seq since (of
// epoch, 0: unknown) missed, and calls deliver with it under the room's
// lock: gap when it cannot all be replayed (then the kept messages follow
// the gap notice); deliver joins the connection before returning. A
// replay over limit bytes (0: no limit) does not fit the connection's
// send buffer at once: then rec, registered on the room's log, records
// every message the room broadcasts from now on, and big is called
// instead of deliver; the caller paces the replay out (page, replay.go)
// and joins through finish.
func (h *history) recover(rc ipc.Recover, limit int, deliver func(res ipc.RecoverResult, replay []entry), big func(lg *roomLog, rec *recording)) ipc.RecoverResult {
	lg := h.lock(rc.Room)
	defer lg.mu.Unlock()
	res, replay := lg.missed(rc)
	if limit > 0 && big != nil && replaySize(replay) > limit {
		rec := &recording{}
		lg.recs = append(lg.recs, rec)
		big(lg, rec)
		return res
	}
	res.Replayed = uint32(len(replay))
	deliver(res, replay)
	return res
}

// missed is what a connection rejoining after rc.Since missed (lg.mu held).
func (lg *roomLog) missed(rc ipc.Recover) (ipc.RecoverResult, []entry) {
	lg.expire(time.Now())
	res := ipc.RecoverResult{Seq: lg.seq, Epoch: lg.epoch}
	var replay []entry
	if !rc.HasSince {
		return res, nil
	}
	missed := rc.Since < lg.seq
	oldest := lg.seq + 1 // the first seq still kept
	if len(lg.entries) > 0 {
		oldest = lg.entries[0].seq
	}
	switch {
	case rc.Epoch != 0 && rc.Epoch != lg.epoch, rc.Since > lg.seq, missed && oldest > rc.Since+1:
		res.Gap = true
		replay = lg.entries
	default:
		for i, e := range lg.entries {
			if e.seq > rc.Since {
				replay = lg.entries[i:]
				break
			}
		}
	}
	return res, replay
}

// page is what a connection rejoining room after rc.Since missed, from
// the oldest on, at most limit bytes (at least one message), and whether
// more follows (ask again after the last one's seq).
func (h *history) page(rc ipc.Recover, limit int) (ipc.RecoverResult, []entry, bool) {
	lg := h.lock(rc.Room)
	defer lg.mu.Unlock()
	res, replay := lg.missed(rc)
	n, size := 0, 0
	for n < len(replay) && (n == 0 || limit <= 0 || size+len(replay[n].data)+replayOverhead <= limit) {
		size += len(replay[n].data) + replayOverhead
		n++
	}
	res.Replayed = uint32(n)
	return res, slices.Clone(replay[:n]), n < len(replay)
}

// finish ends a paced recovery: under the room's lock, rec stops
// recording and fn gets what it recorded since the last drain, and
// whether the log was dropped meanwhile (its numbering is lost: a gap).
func (lg *roomLog) finish(rec *recording, fn func(casts []cluster.Cast, lost bool)) {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	lg.recs = slices.DeleteFunc(lg.recs, func(r *recording) bool { return r == rec })
	casts := rec.casts
	rec.casts = nil
	fn(casts, lg.dead)
}

// drain takes what rec recorded so far.
func (lg *roomLog) drain(rec *recording) []cluster.Cast {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	casts := rec.casts
	rec.casts = nil
	return casts
}

func replaySize(replay []entry) int {
	n := 0
	for _, e := range replay {
		n += len(e.data) + replayOverhead
	}
	return n
}

// replayOverhead is what one replayed message costs besides its data (its
// WebSocket frame header, its op and length in a replay frame).
const replayOverhead = 16

// dropNotOwned drops the logs of the rooms this node no longer owns (the
// cluster's nodes changed): a room that comes back here later starts a
// new epoch, so a client never gets a replay with a hole where another
// owner numbered the room's messages.
func (h *history) dropNotOwned(owned func(room string) bool) {
	var gone []*roomLog
	h.mu.Lock()
	for room, lg := range h.rooms {
		if !reactor.IsUIDRoom(room) && !owned(room) {
			gone = append(gone, lg)
			delete(h.rooms, room)
		}
	}
	h.mu.Unlock()
	for _, lg := range gone { // not under h.mu: a log's lock is held while it fans out
		lg.mu.Lock()
		lg.addBytes(-lg.bytes)
		lg.drop(len(lg.entries))
		lg.dead = true
		lg.mu.Unlock()
	}
}

// storeLimits records room's limits for when this node owns it.
func (h *history) storeLimits(l ipc.History) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.limits == nil {
		h.limits = make(map[string]ipc.History)
	}
	h.limits[l.Room] = l
}

// GapMessage is what a recovering connection is sent first when what it
// missed cannot be replayed.
func GapMessage(room string) []byte {
	b, _ := json.Marshal(struct {
		Type string `json:"type"`
		Room string `json:"room"`
	}{"gap", room})
	return b
}

// stampJSON writes "seq" and "epoch" first into the JSON object data; data
// that is not an object is returned as it is.
func stampJSON(data []byte, seq uint64, epoch uint32) []byte {
	t := bytes.TrimLeft(data, " \t\r\n")
	if len(t) == 0 || t[0] != '{' {
		return data
	}
	rest := bytes.TrimLeft(t[1:], " \t\r\n")
	out := make([]byte, 0, len(data)+40)
	out = append(out, `{"seq":`...)
	out = strconv.AppendUint(out, seq, 10)
	out = append(out, `,"epoch":`...)
	out = strconv.AppendUint(out, uint64(epoch), 10)
	if len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, rest...)
}
