package cluster

import (
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// TestConnsWire pins what a page request and its answer carry.
func TestConnsWire(t *testing.T) {
	if opConns != 255 || connsMissing != 1 {
		t.Fatalf("opConns %d, connsMissing %d: renumbered (want 255, 1)", opConns, connsMissing)
	}
	for _, tc := range []struct {
		name, data string
		page       int
		missing    []int
	}{
		{"new", `{"page":[{"id":"1"},{"id":"2"}],"missing_workers":[1,3]}`, 2, []int{1, 3}},
		{"new_none_missing", `{"page":[{"id":"1"}]}`, 1, nil},
		{"older_node_array", `[{"id":"1"}]`, 1, nil},
		{"older_node_empty", `[]`, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parseConnsPage(2, []byte(tc.data))
			if err != nil || len(p.Page) != tc.page || !slices.Equal(p.Missing, tc.missing) {
				t.Fatalf("parseConnsPage(%s): got %d connections, missing %v, %v; want %d, %v", tc.data, len(p.Page), p.Missing, err, tc.page, tc.missing)
			}
		})
	}
	var na *NoAnswerError
	if _, err := parseConnsPage(2, []byte(`{"page":`)); !errors.As(err, &na) || na.Node != 2 {
		t.Fatalf("a cut page: got %v, want a *NoAnswerError for node 2", err)
	}
}

// TestConns: one node fetches another's page over a real NATS server and
// learns which of its workers did not answer; a node of an older build
// (asking without connsMissing) still gets the bare array; a node nobody
// holds is a *NoAnswerError at once.
func TestConns(t *testing.T) {
	url := natsForTest(t)
	la := &fakeLocal{}
	lb := &fakeLocal{conns: []json.RawMessage{json.RawMessage(`{"id":"7","worker":0}`)}, missing: []int{1}}
	a, err := Start(Config{URLs: []string{url}, Name: "ca", Log: zerolog.Nop()}, la)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	b, err := Start(Config{URLs: []string{url}, Name: "cb", Log: zerolog.Nop()}, lb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)

	p, err := a.Conns(b.Number(), 0, 10)
	if err != nil || len(p.Page) != 1 || string(p.Page[0]) != `{"id":"7","worker":0}` || !slices.Equal(p.Missing, []int{1}) {
		t.Fatalf("a.Conns(b): %+v, %v; want b's connection and worker 1 missing", p, err)
	}

	old := Op{Type: opConns, Code: 10} // no connsMissing flag
	msg, err := a.nc.Request(subjNode+strconv.Itoa(b.Number()), old.encode(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeResult(msg.Data)
	var page []json.RawMessage
	if err != nil || json.Unmarshal(r.Data, &page) != nil || len(page) != 1 {
		t.Fatalf("an older node's request: got %q, %v; want the bare array", r.Data, err)
	}

	start := time.Now()
	_, err = a.Conns(MaxNode, 0, 10)
	var na *NoAnswerError
	if !errors.As(err, &na) || na.Node != MaxNode || !errors.Is(err, nats.ErrNoResponders) || time.Since(start) > 5*time.Second {
		t.Fatalf("a.Conns(a node nobody holds): %v after %v; want a *NoAnswerError (no responders) at once", err, time.Since(start))
	}
}
