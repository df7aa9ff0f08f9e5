package reactor

import "testing"

func TestIdleWaitOffsets(t *testing.T) {
	if pollFDOff == 0 && pollCtxOff == 0 {
		t.Fatal("poll offsets not found")
	}
	t.Logf("fd %d ctx %d", pollFDOff, pollCtxOff)
}
