package master

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"

	"github.com/forkd/forkd/reactor"
)

// TestSplitJSONArray: a worker's connection list cut into its elements
// without decoding gives back exactly the connections encoded, whatever
// their strings hold (quotes, braces, brackets, commas, escapes); what is
// not an array of objects is refused.
func TestSplitJSONArray(t *testing.T) {
	infos := []reactor.Info{
		{ID: "a", Path: `/chat?room={x},[y]&n="q"`, Since: "2026-11-28T05:00:00.1Z"},
		{ID: "b", Path: `/p\"}]`, UID: `u\\`, Since: "2026-11-28T05:00:00.2Z", BytesIn: 7},
		{ID: "c", Path: "/\u2028<&>", Since: "2026-11-28T05:00:00.3Z"},
	}
	for i := range 50 {
		infos = append(infos, reactor.Info{ID: strconv.Itoa(i), Remote: "127.0.0.2:" + strconv.Itoa(i), Since: "2026-11-28T05:00:01Z"})
	}
	b, err := json.Marshal(infos)
	if err != nil {
		t.Fatal(err)
	}
	es, err := splitJSONArray(b)
	if err != nil || len(es) != len(infos) {
		t.Fatalf("split: %d elements, %v; want %d", len(es), err, len(infos))
	}
	for i, e := range es {
		var got reactor.Info
		if err := json.Unmarshal(e, &got); err != nil || !reflect.DeepEqual(got, infos[i]) {
			t.Errorf("element %d: %s -> %+v, %v; want %+v", i, e, got, err, infos[i])
		}
		if string(sinceOf(e)) != infos[i].Since {
			t.Errorf("element %d: since %q, want %q", i, sinceOf(e), infos[i].Since)
		}
	}
	for _, ok := range []string{"null", "[]", " [ ] ", ""} {
		if es, err := splitJSONArray([]byte(ok)); err != nil || len(es) != 0 {
			t.Errorf("split(%q): %v, %v; want nothing", ok, es, err)
		}
	}
	for _, bad := range []string{"{}", "[1]", `["x"]`, "[{}", `[{"a":"}]`, "[{]", "[{}}]", "[[]]"} {
		if _, err := splitJSONArray([]byte(bad)); err == nil {
			t.Errorf("split(%q): no error", bad)
		}
	}
}
