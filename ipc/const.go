package ipc

import "errors"

// Version is the wire-format version. A worker announces it in its Hello
// frame; a master that speaks another version answers with an Error frame
// and closes the stream, so a new binary under an old master fails fast.
const Version uint16 = 5

// HeaderSize is the fixed size of every frame header.
//
// Layout (little endian):
//
//	offset size field
//	0      4    payload length (bytes after the header)
//	4      1    type
//	5      1    flags   (WebSocket opcode for message frames)
//	6      2    code    (outcome, close code or listener index)
//	8      8    conn    (connection id, 0 when not about a connection)
//	16     4    seq     (correlation id; 0 means "no reply wanted")
//	20     4    arg     (type-specific: routing worker, header length, ...)
const HeaderSize = 24

// MaxPayload is the largest payload a stream accepts. A header announcing
// more is a protocol error, detected before anything is allocated.
const MaxPayload = 64 << 20

// Type is a frame's type.
type Type uint8

// Frame types. The numbers are part of the wire format: never renumber.
const (
	// Handshake and lifecycle.
	TypeHello   Type = 1 // w->m: payload = version u16, pid u32, slot u16; arg = slot id
	TypeWelcome Type = 2 // m->w: version accepted; payload = JSON worker config
	TypeReady   Type = 3 // w->m: OnWorkerStart done, serving
	TypeError   Type = 4 // either way: fatal; payload = reason, stream closes after it
	TypeDrain   Type = 5 // m->w: stop taking work, finish, exit (code: 1 = reload, 2 = stop)
	TypeRetire  Type = 6 // w->m: max-request reached, please replace me
	TypeStats   Type = 7 // m->w query (seq), w->m reply (seq) with JSON payload
	TypeConns   Type = 8 // m->w query (seq), w->m reply (seq) with JSON payload

	// PROCESS mode: reactor <-> worker.
	TypeRequest  Type = 10 // m->w: HTTP request; code = listener; arg = header length; payload = remote addr field (u32 length, then AppendAddr or nothing) + header + body
	TypeResponse Type = 11 // w->m: HTTP response; seq = request seq; arg = header length; payload = header + body
	TypeOpen     Type = 12 // m->w: WebSocket opened; code = listener; payload = handshake (see EncodeHandshake)
	TypeMessage  Type = 13 // m->w: WebSocket message; flags = opcode
	TypeClosed   Type = 14 // m->w: WebSocket closed; code = close code; flags = ClosedReply or 0
	TypeResume   Type = 15 // m->w: WebSocket now served by this worker; payload = handshake
	TypeBuffer   Type = 16 // m->w: a WebSocket's send buffer filled (code 1) or drained (code 0)

	// The bus: any worker -> owner (master in PROCESS mode, the owning worker in BASE mode).
	TypePush      Type = 20 // push; flags = opcode; conn = target; seq != 0 wants a Result
	TypeClose     Type = 21 // close conn; code = close code; payload = reason
	TypeQuery     Type = 22 // exists/info about conn; seq wants a Result with JSON info
	TypeResult    Type = 23 // reply; seq = request seq; code = Outcome; arg = routing; payload = data
	TypeJoin      Type = 24 // conn joins room (payload)
	TypeLeave     Type = 25 // conn leaves room (payload)
	TypeBroadcast Type = 26 // payload = room len u16 + room + data; flags = opcode; conn = except
	TypePipe      Type = 27 // pipe message; arg = destination slot (m routes), code = source slot
	TypeOpened    Type = 28 // BASE w->m: a connection opened here; payload = JSON info
	TypeGone      Type = 29 // BASE w->m: a connection closed here
	TypeCount     Type = 30 // room member count query; payload = room

	// Task workers.
	TypeTask       Type = 40 // worker -> master -> task worker; arg = origin slot
	TypeTaskResult Type = 41 // task worker -> master -> origin; code = Outcome

	// Bounds and liveness.
	TypeCredit Type = 50 // PROCESS w->m: conn = id; arg = Message events of conn handled since the last Credit (the master may send that many more)
	TypePing   Type = 51 // m->w: liveness check; seq = ping number
	TypePong   Type = 52 // w->m: answer to Ping, sent from the worker's event loop; seq = the ping's

	// Operations.
	TypeMetrics    Type = 60 // m->w query (seq); w->m reply (seq), payload = Prometheus metric families, protobuf, length-delimited
	TypeReopenLogs Type = 61 // m->w (seq): reopen the log file; w->m reply (seq), code = Outcome, payload = error text

	// Security (70-74).
	TypeSecrets Type = 70 // m->w: payload = JSON Secrets; sent right after Welcome and again whenever they change (reload, ticket key rotation)

	// Connection ids (80-84).
	TypeIDLease Type = 80 // BASE w->m: seq wants a Result whose payload is the u64 (LE) first sequence of a new lease

	// Cluster (90-94).
	TypeClusterNode Type = 90 // m->w: arg = this server's cluster node number, for the ids issued from now on

	// Users, sessions, groups and history (95-99; see users.go for payloads).
	TypeUID     Type = 95 // bind conn (owner-routed) to the uid in payload; empty payload unbinds
	TypeSession Type = 96 // conn's session (owner-routed); flags = SessionGet/Set/Update; payload = JSON object; Result payload = the session
	TypeMembers Type = 97 // a room's members, paged; payload = MembersQuery; Result payload = JSON [Member]
	TypeRecover Type = 98 // w->m: conn joins a room, replaying history after a seq (payload = Recover); m->w (BASE): the replay for the owner
	TypeHistory Type = 99 // w->m: a room's history limits; payload = room u16 + room + max u32 + ttl ms u64

	// Conn.Send without a round trip (PROCESS mode, docs/ipc.md): the
	// master applies a Send in stream order and answers only failures
	// (SendFailed) and, in bulk, how many succeeded (SendAck).
	TypeSend       Type = 110 // w->m: conn = target; flags = opcode; payload = message; no answer per frame
	TypeSendFailed Type = 111 // m->w: one Send to conn failed; code = Outcome
	TypeSendAck    Type = 112 // m->w: arg = Sends applied with outcome OK since the last SendAck
	TypeSendFlush  Type = 113 // w->m: seq wants a Result (OK) once every earlier Send of this stream was applied

	// TypeSendCredit is a Send and the Credit that directly followed it,
	// for the same connection, in one frame (Writer.Fold): the worker's
	// echo, one frame back per message instead of two.
	TypeSendCredit Type = 120 // w->m: a Send (conn, flags, payload as Send), then a Credit of arg for conn
)

// BroadcastSkippedSize is the payload of a Broadcast's Result: the number
// of members skipped (send buffer full, or closing) as u32 little endian;
// the Result's arg carries the members reached.
const BroadcastSkippedSize = 4

// ClosedReply, in a Closed frame's flags, says that the peer closed and
// its close still waits for our reply: the worker answers with a Close
// frame (seq 0, code = the close code to reply with) once OnClose has run,
// so the reply follows whatever its callbacks sent for the messages that
// came before the peer's close.
const ClosedReply uint8 = 1

// Outcome is the result of a bus operation, carried in a Result frame's code.
type Outcome uint16

// Outcomes. Part of the wire format: never renumber.
const (
	OK           Outcome = 0
	NoConnection Outcome = 1
	Closed       Outcome = 2
	BufferFull   Outcome = 3
	Timeout      Outcome = 4
	TooLarge     Outcome = 5
	Unavailable  Outcome = 6
	Failed       Outcome = 7
)

// Errors of the codec.
var (
	ErrTooLarge = errors.New("ipc: frame payload exceeds maximum")
	ErrFull     = errors.New("ipc: send queue full")
	ErrClosed   = errors.New("ipc: stream closed")
)
