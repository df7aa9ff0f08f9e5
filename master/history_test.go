package master

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/ipc"
	"github.com/forkd/forkd/reactor"
)

// TestStampJSON: "seq" and "epoch" go first into an object; anything else
// is left as it is.
func TestStampJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{"type":"message"}`:  `{"seq":7,"epoch":3,"type":"message"}`,
		` { "a" : 1 }`:        `{"seq":7,"epoch":3,"a" : 1 }`,
		`{}`:                  `{"seq":7,"epoch":3}`,
		`{ }`:                 `{"seq":7,"epoch":3}`,
		`plain text`:          `plain text`,
		`["not","an object"]`: `["not","an object"]`,
		``:                    ``,
	} {
		if got := string(stampJSON([]byte(in), 7, 3)); got != want {
			t.Errorf("stampJSON(%q): got %q, want %q", in, got, want)
		}
	}
}

func publishN(h *history, room string, n int) {
	for i := 0; i < n; i++ {
		h.publish(room, reactor.Text, []byte(fmt.Sprintf("m%d", i)), false, func([]byte, uint64, uint32) {})
	}
}

func replayed(h *history, rc ipc.Recover) (ipc.RecoverResult, []string) {
	var got []string
	res := h.recover(rc, 0, func(_ ipc.RecoverResult, replay []entry) {
		for _, e := range replay {
			got = append(got, string(e.data))
		}
	}, nil)
	return res, got
}

// TestHistoryPaged: a replay over the limit is recorded and paged (each
// page within the limit, from the oldest), and the messages broadcast
// meanwhile are recorded for the finish, numbered after the replay.
func TestHistoryPaged(t *testing.T) {
	h := &history{max: 50}
	data := strings.Repeat("x", 100)
	for i := 0; i < 10; i++ {
		h.publish("r", 1, []byte(data), false, func([]byte, uint64, uint32) {})
	}
	var lg *roomLog
	var rec *recording
	res := h.recover(ipc.Recover{Room: "r", Since: 2, HasSince: true}, 500, func(ipc.RecoverResult, []entry) {
		t.Fatal("a replay over the limit was delivered at once")
	}, func(l *roomLog, r *recording) { lg, rec = l, r })
	if rec == nil || res.Seq != 10 {
		t.Fatalf("big replay: rec %v, res %+v", rec, res)
	}
	h.publish("r", 1, []byte("live"), false, func([]byte, uint64, uint32) {})
	var seqs []uint64
	since := uint64(2)
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		r, page, more := h.page(ipc.Recover{Room: "r", Since: since, Epoch: res.Epoch, HasSince: true}, 300)
		if r.Gap || len(page) == 0 || replaySize(page) > 300 {
			t.Fatalf("page after %d: %+v, %d messages, %d bytes", since, r, len(page), replaySize(page))
		}
		for _, e := range page {
			seqs = append(seqs, e.seq)
		}
		since = page[len(page)-1].seq
		if !more {
			break
		}
	}
	if fmt.Sprint(seqs) != "[3 4 5 6 7 8 9 10 11]" {
		t.Fatalf("paged seqs %v, want 3..11", seqs)
	}
	lg.finish(rec, func(casts []cluster.Cast, lost bool) {
		if lost || len(casts) != 1 || casts[0].Seq != 11 || string(casts[0].Data) != "live" {
			t.Fatalf("recorded: %+v lost %v, want seq 11 \"live\"", casts, lost)
		}
	})
	if len(lg.recs) != 0 {
		t.Fatal("finish left the recording registered")
	}
}

// TestHistoryRecover: what a recovering connection is replayed, and when
// it gets a gap instead.
func TestHistoryRecover(t *testing.T) {
	h := &history{max: 5}
	publishN(h, "r", 8) // seq 1..8, m0..m7; m3..m7 (seq 4..8) kept
	lg := h.lock("r")
	epoch := lg.epoch
	lg.mu.Unlock()
	cases := []struct {
		rc   ipc.Recover
		gap  bool
		want string
	}{
		{ipc.Recover{Room: "r", Since: 5, Epoch: epoch, HasSince: true}, false, "m5 m6 m7"},
		{ipc.Recover{Room: "r", Since: 3, Epoch: epoch, HasSince: true}, false, "m3 m4 m5 m6 m7"},
		{ipc.Recover{Room: "r", Since: 8, Epoch: epoch, HasSince: true}, false, ""},
		{ipc.Recover{Room: "r", Since: 5, HasSince: true}, false, "m5 m6 m7"}, // epoch not known
		{ipc.Recover{Room: "r", Since: 2, Epoch: epoch, HasSince: true}, true, "m3 m4 m5 m6 m7"},
		{ipc.Recover{Room: "r", Since: 5, Epoch: epoch + 1, HasSince: true}, true, "m3 m4 m5 m6 m7"},
		{ipc.Recover{Room: "r", Since: 9, Epoch: epoch, HasSince: true}, true, "m3 m4 m5 m6 m7"},
		{ipc.Recover{Room: "r"}, false, ""},
	}
	for _, c := range cases {
		res, got := replayed(h, c.rc)
		if res.Gap != c.gap || strings.Join(got, " ") != c.want || res.Seq != 8 || res.Epoch != epoch || int(res.Replayed) != len(got) {
			t.Errorf("%+v: got %+v %q, want gap %v %q at seq 8", c.rc, res, got, c.gap, c.want)
		}
	}
	// No history kept: a connection that missed anything gets a gap.
	off := &history{}
	publishN(off, "r", 3)
	if res, got := replayed(off, ipc.Recover{Room: "r", Since: 1, HasSince: true}); !res.Gap || len(got) != 0 {
		t.Errorf("no history, missed two: got %+v %q, want a gap", res, got)
	}
	if res, _ := replayed(off, ipc.Recover{Room: "r", Since: 3, HasSince: true}); res.Gap {
		t.Errorf("no history, missed nothing: got a gap")
	}
}

// TestHistoryBounds: kept messages are bounded by count, age and bytes;
// per-room limits override the defaults; a uid's room is not numbered; an
// idle room's log is dropped and comes back with a new epoch.
func TestHistoryBounds(t *testing.T) {
	// The first ten are made older than the ttl by hand, not by a sleep
	// just past a short ttl: with a 50 ms ttl, a stall of 50 ms between
	// the last publish and the replay (a loaded machine, -race) expired
	// the young ones too.
	h := &history{max: 100, ttl: time.Minute}
	publishN(h, "r", 10)
	lg := h.lock("r")
	for i := range lg.entries {
		lg.entries[i].at = lg.entries[i].at.Add(-2 * time.Minute)
	}
	lg.mu.Unlock()
	publishN(h, "r", 2)
	if res, got := replayed(h, ipc.Recover{Room: "r", Since: 10, HasSince: true}); res.Gap || len(got) != 2 {
		t.Errorf("after the ttl: got %+v %q, want the 2 young ones", res, got)
	}
	if res, _ := replayed(h, ipc.Recover{Room: "r", Since: 5, HasSince: true}); !res.Gap {
		t.Errorf("since older than the ttl: want a gap")
	}

	big := &history{max: 1000}
	msg := make([]byte, 1<<20)
	for i := 0; i < 20; i++ {
		big.publish("b", reactor.Binary, msg, false, func([]byte, uint64, uint32) {})
	}
	lg = big.lock("b")
	if lg.bytes > maxHistoryBytes || len(lg.entries) != maxHistoryBytes/len(msg) {
		t.Errorf("byte bound: %d entries, %d bytes, want %d entries within %d", len(lg.entries), lg.bytes, maxHistoryBytes/len(msg), maxHistoryBytes)
	}
	lg.mu.Unlock()

	h.setLimits(ipc.History{Room: "one", Max: 1})
	publishN(h, "one", 3)
	if _, got := replayed(h, ipc.Recover{Room: "one", Since: 1, HasSince: true}); strings.Join(got, " ") != "m2" {
		t.Errorf("per-room max 1: got %q", got)
	}

	if seq, epoch := h.publish(reactor.UIDRoom("u"), reactor.Text, []byte("x"), true, func([]byte, uint64, uint32) {}); seq != 0 || epoch != 0 {
		t.Errorf("a uid's room: got seq %d epoch %d, want none", seq, epoch)
	}

	idle := &history{members: func(string) bool { return false }}
	_, e1 := idle.publish("gone", reactor.Text, []byte("x"), false, func([]byte, uint64, uint32) {})
	idle.mu.Lock()
	idle.sweepLocked(time.Now())
	idle.mu.Unlock()
	if seq, e2 := idle.publish("gone", reactor.Text, []byte("x"), false, func([]byte, uint64, uint32) {}); seq != 1 || e2 == e1 {
		t.Errorf("a room dropped while idle: got seq %d epoch %d (was %d), want seq 1 and a new epoch", seq, e2, e1)
	}
}
