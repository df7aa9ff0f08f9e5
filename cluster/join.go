package cluster

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// join claims the node's name and a node number once connected (again
// after a reconnect only when it has none: subscriptions come back with the
// connection).
func (n *Node) join() {
	n.joining.Lock()
	defer n.joining.Unlock()
	if n.num.Load() != 0 || n.refused.Load().(string) != "" || !n.nc.IsConnected() {
		return
	}
	// The name: a running node of that name answers (name.go).
	why, err := n.claimName()
	if err != nil {
		n.log.Warn().Err(err).Msg("cluster: joining failed; will retry on reconnect")
		return
	}
	if why != "" {
		n.refused.Store(why)
		n.event(zerolog.ErrorLevel).Str("reason", why).Msg("cluster: refused to join")
		return
	}
	for num := 1; num <= MaxNode; num++ {
		if n.peerUp(num) {
			continue // a node heard of lately has it
		}
		ok, err := n.claim(num)
		if err != nil {
			n.log.Warn().Err(err).Msg("cluster: joining failed; will retry on reconnect")
			return
		}
		if ok {
			n.num.Store(int32(num))
			n.local.SetNode(num)
			n.event(zerolog.InfoLevel).Int("node_number", num).Msg("cluster: joined")
			n.publishInfo(false)
			n.checkPeers()
			return
		}
	}
	n.refused.Store(fmt.Sprintf("all %d node numbers are taken", MaxNode))
	n.event(zerolog.ErrorLevel).Int("max", MaxNode).Msg("cluster: no free node number")
}

// claim takes node number num when no node answers it: subscribe (and make
// sure the NATS server has the subscription, and let it reach the other
// servers of a NATS cluster for claimSettle), then ask again. Of two nodes
// claiming the same number at once, at least one hears the other (whichever
// asked second finds the first's subscription), and a node that hears a
// rival gives the number up and tries the next after a random pause.
func (n *Node) claim(num int) (bool, error) {
	subj := subjNode + strconv.Itoa(num)
	ping := (&Op{Type: opPing}).encode()
	if _, err := n.nc.Request(subj, ping, n.cfg.Timeout); err == nil {
		return false, nil // taken
	} else if !errors.Is(err, nats.ErrNoResponders) {
		if errors.Is(err, nats.ErrTimeout) {
			return false, nil // a holder too busy to answer holds it still
		}
		return false, err
	}
	sub, err := n.nc.Subscribe(subj, n.onOp)
	if err != nil {
		return false, err
	}
	sub.SetPendingLimits(1<<16, 64<<20)
	if err := n.nc.Flush(); err != nil {
		sub.Unsubscribe()
		return false, err
	}
	// Let the subscription cross the routes of a NATS cluster before
	// asking (as the name claim does): a rival on another server that
	// subscribed at the same time then answers too, and hears this one.
	time.Sleep(claimSettle)
	inbox := nats.NewInbox()
	replies, err := n.nc.SubscribeSync(inbox)
	if err != nil {
		sub.Unsubscribe()
		return false, err
	}
	defer replies.Unsubscribe()
	n.nc.PublishRequest(subj, inbox, ping)
	n.nc.Flush()
	deadline := time.Now().Add(200 * time.Millisecond)
	for {
		m, err := replies.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		if r, err := decodeResult(m.Data); err == nil && string(r.Data) != n.cfg.Name {
			sub.Unsubscribe()
			time.Sleep(time.Duration(rand.IntN(50)+1) * time.Millisecond)
			return false, nil
		}
	}
	n.nodeSub = sub
	return true, nil
}
