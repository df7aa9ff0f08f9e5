package master

import (
	"io"
	"net"
	"slices"
	"testing"
)

// TestConnectionsMissingWire: what writeConnections sends, cutConnections
// takes apart into the same array and missing workers, whatever the
// connections' strings hold; another answer (an error) is not taken.
func TestConnectionsMissingWire(t *testing.T) {
	tests := []struct {
		name    string
		list    string
		missing []int
	}{
		{name: "none_missing", list: `[{"id":"1","since":"a"}]`},
		{name: "empty_two_missing", list: `[]`, missing: []int{0, 3}},
		{name: "key_inside_a_string", list: `[{"id":"1","path":"/x?a=,\"missing_workers\":[9]"}]`, missing: []int{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			go func() { writeConnections(a, []byte(tc.list), tc.missing); a.Close() }()
			raw, err := io.ReadAll(b)
			if err != nil {
				t.Fatal(err)
			}
			list, missing, ok, err := cutConnections(raw)
			if !ok || err != nil {
				t.Fatalf("cutConnections(%q): ok %v, err %v", raw, ok, err)
			}
			if string(list) != tc.list || !slices.Equal(missing, tc.missing) {
				t.Fatalf("got %q %v, want %q %v", list, missing, tc.list, tc.missing)
			}
		})
	}
	if _, _, ok, _ := cutConnections([]byte(`{"error":"x","code":"y"}` + "\n")); ok {
		t.Fatal("an error answer taken for a listing")
	}
}
