package cluster

import (
	"encoding/json"
	"os"
	"time"

	"github.com/nats-io/nats.go"
)

// Presence: every joined node publishes a heartbeat on forkd.presence each
// second and listens to the others'; a node not heard of for peerTTL is
// gone (from status and from the counts' expected answers).

func (n *Node) info() NodeInfo {
	i := n.local.Info()
	i.Name, i.Node, i.Pid, i.Since, i.Dropped = n.cfg.Name, n.Number(), os.Getpid(), n.since, n.Dropped()
	return i
}

func (n *Node) publishInfo(leaving bool) {
	if n.Number() == 0 || !n.Connected() {
		return
	}
	i := n.info()
	i.Leaving = leaving
	b, _ := json.Marshal(i)
	n.nc.Publish(subjPresence, b)
}

func (n *Node) onPresence(m *nats.Msg) {
	var i NodeInfo
	if json.Unmarshal(m.Data, &i) != nil || i.Node < 1 || i.Node > MaxNode {
		return
	}
	i.LastSeen = time.Now()
	if i.Node == n.Number() && i.Name != n.cfg.Name && !i.Leaving {
		// Two nodes claimed one number at the same instant through
		// different NATS servers (interest crosses routes a moment late).
		n.log.Error().Int("node_number", i.Node).Str("other", i.Name).Msg("cluster: another node has this node number; restart one of them")
	}
	if i.Name == n.cfg.Name && i.Node != n.Number() && n.Number() != 0 && !i.Leaving {
		// Two nodes of one name whose claims crossed routes later than
		// claimSettle (name.go).
		n.log.Error().Int("node_number", n.Number()).Int("other", i.Node).Msg("cluster: another node has this node's name; stop one of them")
	}
	n.mu.Lock()
	_, known := n.peers[i.Node]
	if i.Leaving {
		delete(n.peers, i.Node)
	} else {
		n.peers[i.Node] = i
	}
	n.mu.Unlock()
	if known == i.Leaving { // a node came or went
		n.checkPeers()
	}
}

func (n *Node) beat() {
	defer n.wg.Done()
	t := time.NewTicker(heartbeat)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			n.publishInfo(false)
			n.checkPeers() // a node timed out, or the link to NATS changed
		}
	}
}

// peerUp says whether another node with number num was heard of lately.
func (n *Node) peerUp(num int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	i, ok := n.peers[num]
	return ok && time.Since(i.LastSeen) <= peerTTL
}

// Peers returns the nodes up now, this one included (once joined, also
// while NATS is down), by number.
func (n *Node) Peers() []NodeInfo {
	now := time.Now()
	n.mu.Lock()
	out := []NodeInfo{} // JSON [] when none, not null
	for num, i := range n.peers {
		if now.Sub(i.LastSeen) > peerTTL || num == n.Number() {
			if now.Sub(i.LastSeen) > peerTTL {
				delete(n.peers, num)
			}
			continue
		}
		out = append(out, i)
	}
	n.mu.Unlock()
	// This node is up while NATS is not: it serves its own connections
	// (connections --cluster lists them, cluster_nodes counts it).
	if n.Number() != 0 {
		self := n.info()
		self.LastSeen = now
		out = append(out, self)
	}
	sortPeers(out)
	return out
}

func sortPeers(p []NodeInfo) {
	for i := 1; i < len(p); i++ {
		for j := i; j > 0 && p[j].Node < p[j-1].Node; j-- {
			p[j], p[j-1] = p[j-1], p[j]
		}
	}
}

// State is this node's view for status.
type State struct {
	Name      string     `json:"name"`
	Node      int        `json:"node"`
	Connected bool       `json:"connected"`
	Server    string     `json:"server,omitempty"` // the NATS server connected to
	Embedded  string     `json:"embedded,omitempty"`
	RouteAddr string     `json:"route_addr,omitempty"` // the embedded server's route listener
	Routes    int        `json:"routes,omitempty"`     // its routes up
	Refused   string     `json:"refused,omitempty"`
	Rooms     int        `json:"rooms"`
	Dropped   uint64     `json:"dropped"`
	Nodes     []NodeInfo `json:"nodes"`
}

// State returns this node's view of the cluster.
func (n *Node) State() State {
	s := State{Name: n.cfg.Name, Node: n.Number(), Connected: n.Connected(), Rooms: n.Rooms(),
		Dropped: n.Dropped(), Refused: n.refused.Load().(string), Nodes: n.Peers()}
	if s.Connected {
		s.Server = n.nc.ConnectedUrlRedacted()
	}
	if n.embed != nil {
		s.Embedded = n.embed.url
		s.RouteAddr, s.Routes = n.embed.routeURL, n.embed.routes()
	}
	return s
}
