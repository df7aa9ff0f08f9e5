package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// Cluster scenarios: two nodes of the mode under test joined on one NATS
// server run in this process. The load is the push and broadcast
// scenarios', sent to node A's HTTP port for members held by node B
// (cluster-push), or for a room whose members are split over both nodes
// (cluster-broadcast). CPU per operation counts node A's processes only.
const (
	ScenarioClusterPush      = "cluster-push"
	ScenarioClusterBroadcast = "cluster-broadcast"
)

// clusterPair starts a NATS server and two nodes of t's mode on it. With
// --ports the NATS server's port comes from that range, as the nodes'.
func (s *session) clusterPair(ctx context.Context, t *target) (a, b *target, stop func(), err error) {
	port := natsserver.RANDOM_PORT
	if s.o.PortMin != 0 {
		addrs, err := freeAddrs(1, s.o.PortMin, s.o.PortMax)
		if err != nil {
			return nil, nil, nil, err
		}
		_, p, _ := net.SplitHostPort(addrs[0])
		port, _ = strconv.Atoi(p)
	}
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, NoSigs: true, NoLog: true})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("bench: NATS server: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		if port != natsserver.RANDOM_PORT {
			return nil, nil, nil, fmt.Errorf("bench: NATS server did not start on 127.0.0.1:%d (--ports %d-%d)", port, s.o.PortMin, s.o.PortMax)
		}
		return nil, nil, nil, fmt.Errorf("bench: NATS server did not start")
	}
	url := "nats://" + ns.Addr().String()
	a, err = startTarget(ctx, s.o, t.mode, "--cluster", url, "--node", "bench-a-"+s.nonce)
	if err != nil {
		ns.Shutdown()
		return nil, nil, nil, err
	}
	b, err = startTarget(ctx, s.o, t.mode, "--cluster", url, "--node", "bench-b-"+s.nonce)
	if err != nil {
		a.stop()
		ns.Shutdown()
		return nil, nil, nil, err
	}
	stop = func() {
		for _, x := range []*target{a, b} {
			if err := x.stop(); err != nil {
				s.logf("[%s] cluster node: %v", t.mode, err)
			}
		}
		ns.Shutdown()
	}
	// Both see each other before the load (presence, a heartbeat apart).
	deadline := time.Now().Add(10 * time.Second)
	for {
		sa, errA := a.clusterNodes(ctx)
		sb, errB := b.clusterNodes(ctx)
		if errA == nil && errB == nil && sa == 2 && sb == 2 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return nil, nil, nil, fmt.Errorf("bench: the two cluster nodes did not see each other within 10s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.logf("[%s] cluster: NATS %s, node A http %s, node B ws %s", t.mode, url, a.httpAddr, b.wsAddr)
	return a, b, stop, nil
}

// benchClusterPush: the push scenario with the senders on node A and every
// member on node B: each delivery crosses NATS once.
func (s *session) benchClusterPush(ctx context.Context, t *target, _ *meter, r *Result) error {
	return s.onClusterPair(ctx, t, ScenarioClusterPush, r, s.benchPush)
}

// benchClusterBroadcast: the broadcast scenario with the room's members on
// node B and the broadcasts posted to node A (which has no members): every
// broadcast crosses NATS once and fans out on node B.
func (s *session) benchClusterBroadcast(ctx context.Context, t *target, _ *meter, r *Result) error {
	return s.onClusterPair(ctx, t, ScenarioClusterBroadcast, r, s.benchBroadcast)
}

// onClusterPair runs scenario (an in-node scenario's function) on two
// nodes of t's mode: HTTP to node A, WebSockets to node B, CPU metered on
// node A.
func (s *session) onClusterPair(ctx context.Context, t *target, scenario string, r *Result,
	run func(context.Context, *target, *meter, *Result) error) error {
	a, b, stop, err := s.clusterPair(ctx, t)
	if err != nil {
		return err
	}
	defer stop()
	split := *a
	split.wsAddr = b.wsAddr
	m := newMeter(ctx, a, "["+t.mode+"] "+scenario, s.live())
	defer m.close()
	return run(ctx, &split, m, r)
}

// clusterNodes returns how many nodes t sees up (status --json).
func (t *target) clusterNodes(ctx context.Context) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, t.exe, "status", "--json", "--run-dir", t.runDir).Output()
	if err != nil {
		return 0, err
	}
	var st struct {
		Cluster *struct {
			Nodes []json.RawMessage `json:"nodes"`
		} `json:"cluster"`
	}
	if err := json.Unmarshal(out, &st); err != nil || st.Cluster == nil {
		return 0, fmt.Errorf("bench: status shows no cluster: %v", err)
	}
	return len(st.Cluster.Nodes), nil
}
