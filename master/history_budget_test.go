package master

import (
	"fmt"
	"testing"

	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// TestHistoryTotalBound: room names are the clients' to choose (the
// built-in chat's), so a client opening room after room, each kept up to
// the per-room bound, grew the master without limit (60 one-connection
// rooms of 5 MiB: 460 MiB RSS, and on). Every room's history together now
// stays within the total bound: rooms without members lose their logs
// first (a recovering client gets a gap, never a wrong replay), then every
// room its older half. A room with members keeps its newest messages.
func TestHistoryTotalBound(t *testing.T) {
	const budget = 1 << 20
	h := &history{max: 100, budget: budget, members: func(room string) bool { return room == "live" }}
	msg := make([]byte, 10<<10)
	noop := func([]byte, uint64, uint32) {}
	for i := 0; i < 20; i++ {
		h.publish("live", reactor.Binary, msg, false, noop)
	}
	_, liveEpoch := h.publish("live", reactor.Text, []byte("newest"), false, noop)
	var junkEpoch uint32
	for r := 0; r < 300; r++ {
		for i := 0; i < 10; i++ {
			_, e := h.publish(fmt.Sprintf("junk%d", r), reactor.Binary, msg, false, noop)
			if r == 0 {
				junkEpoch = e
			}
			if got := h.total.Load(); got > budget+int64(len(msg)) {
				t.Fatalf("room %d message %d: %d bytes kept in all, want at most %d", r, i, got, budget+len(msg))
			}
		}
	}
	sum := 0
	h.mu.Lock()
	for _, lg := range h.rooms {
		lg.mu.Lock()
		n := 0
		for _, e := range lg.entries {
			n += len(e.data)
		}
		if n != lg.bytes {
			t.Errorf("a room's count says %d bytes, its entries hold %d", lg.bytes, n)
		}
		sum += n
		lg.mu.Unlock()
	}
	h.mu.Unlock()
	if int64(sum) != h.total.Load() {
		t.Errorf("total says %d bytes, the rooms hold %d", h.total.Load(), sum)
	}
	res, got := replayed(h, ipc.Recover{Room: "live", Since: 20, Epoch: liveEpoch, HasSince: true})
	if res.Gap || len(got) != 1 || got[0] != "newest" {
		t.Errorf("the room with members: got %+v %q, want its newest message replayed", res, got)
	}
	if res, _ := replayed(h, ipc.Recover{Room: "junk0", Since: 5, Epoch: junkEpoch, HasSince: true}); !res.Gap {
		t.Errorf("a dropped room without members: got %+v, want a gap", res)
	}
}
