package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/forkd/forkd/ipc"
)

// Pages of another node's connections (`connections --cluster`). A BASE
// node gathers a page by asking each of its workers; a worker that does
// not answer in time is named in the page (Missing), so the listing says
// whose connections it lacks instead of leaving them out in silence.

// ConnsWait bounds one page from another node: that node asks its BASE
// workers first (each within 2 s, all at once).
const ConnsWait = 10 * time.Second

// ConnsPage is one page of a node's connections.
type ConnsPage struct {
	Page []json.RawMessage `json:"page"`
	// Missing: the node's workers that did not answer in time (BASE mode);
	// their connections are not in Page.
	Missing []int `json:"missing_workers,omitempty"`
}

// NoAnswerError: node Node gave no page of its connections, within
// ConnsWait (Err nil) or for Err.
type NoAnswerError struct {
	Node int
	Err  error
}

// Reason says why, without naming the node: "did not answer within 10s".
func (e *NoAnswerError) Reason() string {
	if e.Err == nil {
		return "did not answer within " + ConnsWait.String()
	}
	return "did not answer: " + e.Err.Error()
}

func (e *NoAnswerError) Error() string {
	return "cluster: node " + strconv.Itoa(e.Node) + " " + e.Reason()
}
func (e *NoAnswerError) Unwrap() error { return e.Err }

var errNATSDown = errors.New("NATS unreachable")

// answerConns answers another node's opConns request with one page of the
// connections here.
func (n *Node) answerConns(m *nats.Msg, op Op) {
	page, missing := n.local.Conns(int(op.Arg), int(op.Code))
	var b []byte
	if op.Flags&connsMissing != 0 {
		b, _ = json.Marshal(ConnsPage{Page: page, Missing: missing})
	} else {
		b, _ = json.Marshal(page)
	}
	m.Respond((&Result{Outcome: ipc.OK, Data: b}).encode())
}

// Conns fetches one page of node num's connections, and the workers there
// that did not answer. The error is a *NoAnswerError.
func (n *Node) Conns(num, offset, limit int) (ConnsPage, error) {
	if !n.Connected() {
		return ConnsPage{}, &NoAnswerError{Node: num, Err: errNATSDown}
	}
	op := Op{Type: opConns, Flags: connsMissing, Arg: uint32(offset), Code: uint16(limit)}
	msg, err := n.nc.Request(subjNode+strconv.Itoa(num), op.encode(), ConnsWait)
	if errors.Is(err, nats.ErrTimeout) {
		return ConnsPage{}, &NoAnswerError{Node: num}
	}
	if err != nil {
		return ConnsPage{}, &NoAnswerError{Node: num, Err: err}
	}
	r, err := decodeResult(msg.Data)
	if err == nil && r.Outcome != ipc.OK {
		err = fmt.Errorf("outcome %d", r.Outcome)
	}
	if err != nil {
		return ConnsPage{}, &NoAnswerError{Node: num, Err: err}
	}
	return parseConnsPage(num, r.Data)
}

// parseConnsPage reads an opConns answer: the object connsMissing asks
// for, or the bare array of a node of an older build.
func parseConnsPage(num int, b []byte) (ConnsPage, error) {
	var p ConnsPage
	var err error
	if len(b) > 0 && b[0] == '{' {
		err = json.Unmarshal(b, &p)
	} else {
		err = json.Unmarshal(b, &p.Page)
	}
	if err != nil {
		return ConnsPage{}, &NoAnswerError{Node: num, Err: fmt.Errorf("its page: %w", err)}
	}
	return p, nil
}
