package cluster

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// The name claim. A node's name is unique in the cluster: a node answers
// on forkd.name.<NAME> for as long as it runs, and a node that finds its
// name answered refuses to join. Two nodes of one name starting at the same
// instant both find it free, so the claim is made in two steps, the way the
// node number's is: subscribe, then ask again, for claimWindow.
//
// Each claimant has a random token. A request "CLAIM <token>" is answered
// "<number> <token> <held>" by every node of that name: held 1 by a node
// that has the name (the asker loses), held 0 by one still claiming it,
// which then also records the asker as its rival (under nameMu, together
// with held, so it cannot be answered "claiming" and then not remember
// the rival). When the window ends each claimant holds the name, and of
// two claimants that saw each other the one with the larger token gives
// up: both know both tokens (the one that got a "claiming" answer was
// recorded by the node that gave it), so exactly one of them refuses. Of
// two that asked after both had subscribed at least one sees the other
// (NATS orders the subscriptions and the requests on a server), so two
// nodes of one name never both run, as long as an answer crosses the NATS
// cluster within claimWindow.
//
// A plain request (no data) is the first check: any answer, a holder or a
// claimant, refuses the asker without making it anyone's rival.

// claimWindow is how long a claimant waits for rivals' answers, and
// claimSettle how long it waits between subscribing and asking: two claimants on different servers of a NATS cluster hear each
// other when a subscription crosses the routes within claimSettle.
const (
	claimWindow = 200 * time.Millisecond
	claimSettle = 100 * time.Millisecond
)

const claimPrefix = "CLAIM "

// nameClaim is this node's side of the name claim.
type nameClaim struct {
	token  uint64
	held   bool
	rivals map[uint64]bool
	sub    *nats.Subscription
}

// onName answers a name request (see above).
func (n *Node) onName(m *nats.Msg) {
	n.nameMu.Lock()
	held, token := n.name.held, n.name.token
	if req := string(m.Data); !held && strings.HasPrefix(req, claimPrefix) {
		if tok, err := strconv.ParseUint(req[len(claimPrefix):], 10, 64); err == nil && tok != token {
			n.name.rivals[tok] = true
		}
	}
	n.nameMu.Unlock()
	h := 0
	if held {
		h = 1
	}
	m.Respond([]byte(fmt.Sprintf("%d %d %d", n.Number(), token, h)))
}

// claimName takes this node's name, or returns why it cannot ("": taken
// now, or already). An error is NATS failing: try again on reconnect.
func (n *Node) claimName() (string, error) {
	n.nameMu.Lock()
	if n.name.sub != nil {
		n.nameMu.Unlock()
		return "", nil
	}
	n.name = nameClaim{token: rand.Uint64(), rivals: map[uint64]bool{}}
	token := n.name.token
	n.nameMu.Unlock()
	subj := subjName + enc(n.cfg.Name)
	if msg, err := n.nc.Request(subj, nil, n.cfg.Timeout); err == nil {
		return n.nameTaken(msg.Data), nil
	}
	sub, err := n.nc.Subscribe(subj, n.onName)
	if err != nil {
		return "", err
	}
	if err := n.nc.Flush(); err != nil {
		sub.Unsubscribe()
		return "", err
	}
	// Let the subscription reach the other servers of a NATS cluster
	// before asking: a rival on another server that asks after this hears
	// this node, and this node's question reaches a rival whose
	// subscription was made claimSettle before.
	time.Sleep(claimSettle)
	inbox := nats.NewInbox()
	replies, err := n.nc.SubscribeSync(inbox)
	if err != nil {
		sub.Unsubscribe()
		return "", err
	}
	defer replies.Unsubscribe()
	if err := n.nc.PublishRequest(subj, inbox, []byte(claimPrefix+strconv.FormatUint(token, 10))); err != nil {
		sub.Unsubscribe()
		return "", err
	}
	n.nc.Flush()
	why := ""
	deadline := time.Now().Add(claimWindow)
	for {
		m, err := replies.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		var num int
		var tok uint64
		var held int
		if _, err := fmt.Sscanf(string(m.Data), "%d %d %d", &num, &tok, &held); err != nil || held == 1 {
			if why == "" {
				why = n.nameTaken(m.Data)
			}
			continue
		}
		n.nameMu.Lock()
		n.name.rivals[tok] = true
		n.nameMu.Unlock()
	}
	n.nameMu.Lock()
	n.name.held = true
	for tok := range n.name.rivals {
		if tok < token && why == "" {
			why = fmt.Sprintf("node %q was claimed at the same instant by another server, which keeps it", n.cfg.Name)
		}
	}
	if why == "" {
		n.name.sub = sub
	}
	n.nameMu.Unlock()
	if why != "" {
		sub.Unsubscribe()
		n.nc.Flush()
	}
	return why, nil
}

// nameTaken says why the answer data refuses this node's name.
func (n *Node) nameTaken(data []byte) string {
	f := strings.Fields(string(data))
	if len(f) == 0 || f[0] == "0" {
		return fmt.Sprintf("node %q is already running (it is joining the cluster)", n.cfg.Name)
	}
	return fmt.Sprintf("node %q is already running (node %s)", n.cfg.Name, f[0])
}
