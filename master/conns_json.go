package master

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"sync"
	"time"
)

// `server connections` at 100,000 connections. The listing used to be
// decoded from each worker's JSON into structs, sorted, encoded again for
// the answer, and decoded and encoded once more by the CLI: four passes of
// encoding/json over every connection, about 1.5 s at 100,000 on a 2-core
// machine. Now the master asks the workers at once rather than one after
// the other, cuts their JSON arrays into elements without decoding them
// (each element is one connection, as the worker encoded it), sorts the
// elements by their "since" field as before, and sends them on as they
// are; `connections --json` prints the array as it arrives.

// connsWait is how long `connections` waits for each worker's list (BASE
// mode); a worker that does not answer in it is named, not waited for.
const connsWait = 2 * time.Second

// ConnectionsJSON is every open connection as one JSON array (oldest
// first, as Connections), encoded as each connection's holder encoded it,
// and the ids of the workers that did not answer within connsWait (BASE
// mode): their connections are not in the array.
func (m *Master) ConnectionsJSON() ([]byte, []int) {
	if infos, mine := m.mode.list(); mine {
		sort.Slice(infos, func(i, j int) bool { return infos[i].Since < infos[j].Since })
		b, err := json.Marshal(infos)
		if err != nil {
			return []byte("[]"), nil
		}
		return b, nil
	}
	type elem struct{ since, b []byte }
	var elems []elem
	n := 2
	lists, missing := m.queryConns()
	for _, b := range lists {
		es, err := splitJSONArray(b)
		if err != nil {
			m.log.Warn().Err(err).Msg("connections: a worker's list is not a JSON array; left out")
			continue
		}
		for _, e := range es {
			elems = append(elems, elem{since: sinceOf(e), b: e})
			n += len(e) + 1
		}
	}
	slices.SortStableFunc(elems, func(a, b elem) int { return bytes.Compare(a.since, b.since) })
	out := make([]byte, 0, n)
	out = append(out, '[')
	for i, e := range elems {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, e.b...)
	}
	return append(out, ']'), missing
}

// queryConns asks every running worker (and any being replaced) for its
// connections, all at once, and returns the answers that came, and the
// ids of the workers that did not answer within connsWait (sorted, once
// each; a worker still starting holds none and is not asked).
func (m *Master) queryConns() ([][]byte, []int) {
	m.mu.Lock()
	var procs []*proc
	for _, sl := range m.slots {
		if sl.cur != nil && sl.worker() {
			procs = append(procs, sl.cur)
		}
		procs = append(procs, sl.old...)
	}
	m.mu.Unlock()
	out := make([][]byte, len(procs))
	failed := make([]bool, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		if p.State() == StateStarting {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := p.query(ipcConns, connsWait)
			if err != nil {
				failed[i] = true
				m.log.Warn().Int("worker", p.slot.id).Int("pid", p.pid).Err(err).Msg("connections: a worker did not answer; its connections are not listed")
				return
			}
			out[i] = b
		}()
	}
	wg.Wait()
	var missing []int
	for i, f := range failed {
		if f && !slices.Contains(missing, procs[i].slot.id) {
			missing = append(missing, procs[i].slot.id)
		}
	}
	slices.Sort(missing)
	return out, missing
}

var errNotArray = errors.New("master: not a JSON array of objects")

// splitJSONArray cuts a JSON array of objects (or null) into its elements,
// without decoding them: it tracks only strings and nesting.
func splitJSONArray(b []byte) ([][]byte, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		return nil, nil
	}
	if b[0] != '[' || b[len(b)-1] != ']' {
		return nil, errNotArray
	}
	var out [][]byte
	depth, start := 0, -1
	inStr, esc := false, false
	for i := 1; i < len(b)-1; i++ {
		c := b[i]
		if inStr {
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			if depth == 0 {
				return nil, errNotArray
			}
			inStr = true
		case '{', '[':
			if depth == 0 {
				if c != '{' {
					return nil, errNotArray
				}
				start = i
			}
			depth++
		case '}', ']':
			depth--
			if depth < 0 {
				return nil, errNotArray
			}
			if depth == 0 {
				out = append(out, b[start:i+1])
			}
		case ',', ' ', '\t', '\r', '\n':
		default:
			if depth == 0 {
				return nil, errNotArray
			}
		}
	}
	if depth != 0 || inStr {
		return nil, errNotArray
	}
	return out, nil
}

var sinceKey = []byte(`"since":"`)

// sinceOf is the value of an element's "since" field (nil if none),
// compared as a string, as Connections compares Info.Since.
func sinceOf(e []byte) []byte {
	i := bytes.Index(e, sinceKey)
	if i < 0 {
		return nil
	}
	v := e[i+len(sinceKey):]
	if j := bytes.IndexByte(v, '"'); j >= 0 {
		return v[:j]
	}
	return nil
}

var (
	connectionsHead = []byte(`{"connections":`)
	missingKey      = []byte(`,"missing_workers":`)
)

// writeConnections answers `connections`: {"connections":[...]}, the
// shape Response has, with the array as ConnectionsJSON made it, and
// "missing_workers":[ID,...] after it when workers did not answer.
func writeConnections(c net.Conn, list []byte, missing []int) {
	buf := make([]byte, 0, len(list)+24)
	buf = append(buf, connectionsHead...)
	buf = append(buf, list...)
	if len(missing) > 0 {
		ids, _ := json.Marshal(missing)
		buf = append(buf, missingKey...)
		buf = append(buf, ids...)
	}
	buf = append(buf, "}\n"...)
	_, _ = c.Write(buf)
}

// CallConnectionsJSON asks the master in dir for its connections and
// returns them as the JSON array it sent ([] when there are none), and the
// ids of the workers that did not answer (their connections are not in
// it). The answer is taken apart only as far as writeConnections put it
// together: at 100,000 connections, decoding it (even into a
// json.RawMessage, which validates) took longer than all the rest.
func CallConnectionsJSON(dir string, timeout time.Duration) ([]byte, []int, error) {
	var list []byte
	var missing []int
	var resp Response
	err := callWith(dir, Request{Cmd: "connections"}, timeout, func(r io.Reader, resp *Response) error {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		var ok bool
		if list, missing, ok, err = cutConnections(b); ok || err != nil {
			return err
		}
		return json.Unmarshal(b, resp) // an error, or a master of another version
	}, &resp)
	if err != nil {
		return nil, nil, err
	}
	if len(list) == 0 || string(list) == "null" {
		return []byte("[]"), missing, nil
	}
	return list, missing, nil
}

// cutConnections takes writeConnections' answer apart: the array as it
// was sent and the missing workers; ok is false for another answer.
func cutConnections(b []byte) (list []byte, missing []int, ok bool, err error) {
	v, ok := bytes.CutPrefix(b, connectionsHead)
	if !ok || !bytes.HasSuffix(v, []byte("}\n")) {
		return nil, nil, false, nil
	}
	v = v[:len(v)-2]
	// The key can only be the trailer's: inside a JSON string a quote is
	// escaped, so `,"` never appears there.
	if i := bytes.LastIndex(v, missingKey); i >= 0 {
		if err := json.Unmarshal(v[i+len(missingKey):], &missing); err != nil {
			return nil, nil, true, fmt.Errorf("master: connections: missing_workers: %w", err)
		}
		v = v[:i]
	}
	return v, missing, true, nil
}
