package master

import (
	"bytes"
	"encoding/json"
	"errors"
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

// ConnectionsJSON is every open connection as one JSON array (oldest
// first, as Connections), encoded as each connection's holder encoded it.
func (m *Master) ConnectionsJSON() []byte {
	if infos, mine := m.mode.list(); mine {
		sort.Slice(infos, func(i, j int) bool { return infos[i].Since < infos[j].Since })
		b, err := json.Marshal(infos)
		if err != nil {
			return []byte("[]")
		}
		return b
	}
	type elem struct{ since, b []byte }
	var elems []elem
	n := 2
	for _, b := range m.queryConns() {
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
	return append(out, ']')
}

// queryConns asks every running worker (and any being replaced) for its
// connections, all at once, and returns the answers that came.
func (m *Master) queryConns() [][]byte {
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
	var wg sync.WaitGroup
	for i, p := range procs {
		if p.State() == StateStarting {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if b, err := p.query(ipcConns, 2*time.Second); err == nil {
				out[i] = b
			}
		}()
	}
	wg.Wait()
	return out
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

var connectionsHead = []byte(`{"connections":`)

// writeConnections answers `connections`: {"connections":[...]}, the
// shape Response has, with the array as ConnectionsJSON made it.
func writeConnections(c net.Conn, list []byte) {
	buf := make([]byte, 0, len(list)+24)
	buf = append(buf, connectionsHead...)
	buf = append(buf, list...)
	buf = append(buf, "}\n"...)
	_, _ = c.Write(buf)
}

// CallConnectionsJSON asks the master in dir for its connections and
// returns them as the JSON array it sent ([] when there are none). The
// answer is taken apart only as far as writeConnections put it together:
// at 100,000 connections, decoding it (even into a json.RawMessage, which
// validates) took longer than all the rest.
func CallConnectionsJSON(dir string, timeout time.Duration) ([]byte, error) {
	var list []byte
	var resp Response
	err := callWith(dir, Request{Cmd: "connections"}, timeout, func(r io.Reader, resp *Response) error {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if v, ok := bytes.CutPrefix(b, connectionsHead); ok && bytes.HasSuffix(v, []byte("}\n")) {
			list = v[:len(v)-2]
			return nil
		}
		return json.Unmarshal(b, resp) // an error, or a master of another version
	}, &resp)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 || string(list) == "null" {
		return []byte("[]"), nil
	}
	return list, nil
}
