package cluster

import (
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Room history owners and cluster-wide gathers. Every room has one owner
// among the nodes up, chosen by rendezvous hashing of the room's name with
// each node's name: every node computes the same owner from the same set
// of nodes, a node joining or leaving moves only the rooms it wins or
// owned, and a restarted node (same name) owns the same rooms again, with
// a new epoch (its history died with it).

// RoomOwner returns the index in names of room's owner (-1: no names).
func RoomOwner(room string, names []string) int {
	best, bestScore := -1, uint64(0)
	for i, name := range names {
		h := fnv.New64a()
		h.Write([]byte(room))
		h.Write([]byte{0})
		h.Write([]byte(name))
		s := mix(h.Sum64())
		if best < 0 || s > bestScore || (s == bestScore && name < names[best]) {
			best, bestScore = i, s
		}
	}
	return best
}

// mix spreads FNV's low-entropy high bits (splitmix64's finalizer).
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// Owner returns the number of the node that owns room's history: this
// node's number when it is not joined or NATS is down (it serves alone
// then), else the rendezvous winner among the nodes up.
func (n *Node) Owner(room string) int {
	self := n.Number()
	if self == 0 || !n.Connected() {
		return self
	}
	nums, names := n.upNames()
	if i := RoomOwner(room, names); i >= 0 {
		return nums[i]
	}
	return self
}

// upNames returns the nodes up, this one included, by number.
func (n *Node) upNames() (nums []int, names []string) {
	now := time.Now()
	self := n.Number()
	n.mu.Lock()
	for num, i := range n.peers {
		if num != self && now.Sub(i.LastSeen) <= peerTTL {
			nums = append(nums, num)
		}
	}
	slices.Sort(nums)
	for _, num := range nums {
		names = append(names, n.peers[num].Name)
	}
	n.mu.Unlock()
	if self != 0 {
		nums = append(nums, self)
		names = append(names, n.cfg.Name)
	}
	return nums, names
}

// others returns the numbers of the other nodes up.
func (n *Node) others() []int {
	nums, _ := n.upNames()
	self := n.Number()
	return slices.DeleteFunc(nums, func(x int) bool { return x == self })
}

// checkPeers tells the local side when the nodes up (or the link to NATS)
// changed since it last did.
func (n *Node) checkPeers() {
	nums, names := n.upNames()
	var b strings.Builder
	b.WriteString(strconv.FormatBool(n.Connected()))
	for i := range nums {
		b.WriteString(" " + strconv.Itoa(nums[i]) + "=" + names[i])
	}
	v := b.String()
	n.mu.Lock()
	changed := v != n.view
	n.view = v
	n.mu.Unlock()
	if changed {
		n.local.PeersChanged(n)
	}
}

// Send runs op on node num without waiting for an answer: ops sent to one
// node by one node arrive in the order they were sent (false: NATS down).
func (n *Node) Send(num int, op Op) bool {
	if num < 1 || num > MaxNode || !n.Connected() {
		return false
	}
	return n.nc.Publish(subjNode+strconv.Itoa(num), op.encode()) == nil
}

// CallAll runs op on every other node up, at once, and returns the
// answers that came within the bound by node, and the numbers of the
// nodes that did not answer OK in time (gone, unreachable, too slow).
func (n *Node) CallAll(op Op) (map[int]Result, []int) {
	nums := n.others()
	out := make(map[int]Result, len(nums))
	var missing []int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, num := range nums {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := n.Call(num, op)
			mu.Lock()
			defer mu.Unlock()
			if r.Outcome == 0 {
				out[num] = r
			} else {
				missing = append(missing, num)
			}
		}()
	}
	wg.Wait()
	slices.Sort(missing)
	return out, missing
}

// MaxPayload is the largest answer NATS carries (the server's max_payload).
func (n *Node) MaxPayload() int {
	if n.nc == nil || n.nc.MaxPayload() <= 0 {
		return 1 << 20 // nats-server's default
	}
	return int(n.nc.MaxPayload())
}

func sortedKeys(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	if len(out) == 0 {
		return nil
	}
	return out
}
