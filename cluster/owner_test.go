package cluster

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Rendezvous owners: the same for every order of the names, spread over
// the nodes, and a node joining moves only the rooms it wins.
func TestRoomOwner(t *testing.T) {
	names := []string{"n1", "n2", "n3"}
	per := map[string]int{}
	moved := 0
	for i := 0; i < 3000; i++ {
		room := fmt.Sprintf("room-%d", i)
		o := names[RoomOwner(room, names)]
		if r := []string{"n3", "n1", "n2"}; r[RoomOwner(room, r)] != o {
			t.Fatalf("%s: owner depends on the order of the names", room)
		}
		per[o]++
		four := append(slices.Clone(names), "n4")
		if o4 := four[RoomOwner(room, four)]; o4 != o {
			if o4 != "n4" {
				t.Fatalf("%s: moved from %s to %s when n4 joined", room, o, o4)
			}
			moved++
		}
	}
	for _, n := range names {
		if per[n] < 800 {
			t.Errorf("owners spread badly: %v", per)
		}
	}
	if moved < 500 || moved > 1000 {
		t.Errorf("n4 took %d of 3000 rooms, want about a quarter", moved)
	}
	if RoomOwner("r", nil) != -1 {
		t.Error("an owner among no nodes")
	}
}

// Owner agrees on every node; CountNodes and CallAll name the node that
// does not answer; HoldRoom listens to a room without members.
func TestOwnerAndMissing(t *testing.T) {
	url := natsForTest(t)
	var nodes []*Node
	var locals []*fakeLocal
	// The bound of a count: the two nodes up must answer within it (300 ms
	// was in reach of a stalled race-built process), and the count with a
	// node gone waits all of it, which must end before that node leaves
	// presence (below).
	const bound = 1500 * time.Millisecond
	for i := range 3 {
		l := &fakeLocal{count: 2}
		n, err := Start(Config{URLs: []string{url}, Name: fmt.Sprintf("o%d", i), Timeout: bound, Log: zerolog.Nop()}, l)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Close)
		nodes, locals = append(nodes, n), append(locals, l)
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, n := range nodes {
		for len(n.others()) != 2 {
			if time.Now().After(deadline) {
				t.Fatalf("%s sees %v", n.Name(), n.others())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for i := 0; i < 50; i++ {
		room := fmt.Sprint("r", i)
		o := nodes[0].Owner(room)
		if nodes[1].Owner(room) != o || nodes[2].Owner(room) != o {
			t.Fatalf("%s: owners differ between nodes", room)
		}
	}
	if total, missing := nodes[0].CountNodes("r"); total != 4 || len(missing) != 0 {
		t.Fatalf("CountNodes: %d %v, want 4 and none missing", total, missing)
	}
	// A node whose NATS link is stalled (its subscriptions blocked) is
	// named, not counted.
	//
	// A node gone stays in presence for peerTTL (3.5 s) after its last
	// heartbeat (at most a second before it went): both calls must start
	// within those 2.5 s. CallAll first: the gone node has no responders
	// (at once, or the bound if NATS has not dropped its subscription yet);
	// CountNodes then waits its whole bound for the gone node.
	slow := nodes[2]
	slow.nc.Close()
	if _, missing := nodes[0].CallAll(Op{Type: 200}); !slices.Contains(missing, slow.Number()) {
		t.Fatalf("CallAll with %d gone: missing %v", slow.Number(), missing)
	}
	if total, missing := nodes[0].CountNodes("r"); total != 2 || !slices.Equal(missing, []int{slow.Number()}) {
		t.Fatalf("CountNodes with %d gone: %d %v", slow.Number(), total, missing)
	}
	// HoldRoom: a node without members hears the room until released.
	release, err := nodes[1].HoldRoom("held")
	if err != nil {
		t.Fatal(err)
	}
	nodes[0].Publish("held", Cast{Flags: 1, Seq: 3, Epoch: 4, Data: []byte("h")})
	deadline = time.Now().Add(5 * time.Second)
	for {
		locals[1].mu.Lock()
		got := slices.Contains(locals[1].casts, "held:h")
		locals[1].mu.Unlock()
		if got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a held room's message did not arrive")
		}
		time.Sleep(10 * time.Millisecond)
	}
	release()
	if nodes[1].Rooms() != 0 {
		t.Fatalf("released room still listened to: %d rooms", nodes[1].Rooms())
	}
}
