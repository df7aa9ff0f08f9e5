package command

import "testing"

// TestMissingLine: the line `connections` prints for workers that did not
// answer names each, in the singular or the plural.
func TestMissingLine(t *testing.T) {
	for _, tc := range []struct {
		ids  []int
		want string
	}{
		{[]int{1}, "worker 1 did not answer within 2s: its connections are not listed"},
		{[]int{0, 3}, "workers 0, 3 did not answer within 2s: their connections are not listed"},
	} {
		if got := missingLine(tc.ids); got != tc.want {
			t.Errorf("missingLine(%v) = %q, want %q", tc.ids, got, tc.want)
		}
	}
}
