package cluster

import (
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// Nodes of one name started at the same instant (released together, on
// one real NATS server), round after round: exactly one joins and every
// other is refused with ErrNameTaken. Before the name claim's second step
// (name.go) all of them found the name free and joined.
func TestJoinSameNameAtOnce(t *testing.T) {
	url := natsForTest(t)
	t.Run("one server", func(t *testing.T) { sameNameRounds(t, []string{url, url, url}) })
	// Each twin on another server of a routed NATS cluster: a claim's
	// subscription crosses the routes before the claimant asks.
	routed := routedNATS(t)
	t.Run("three routed servers", func(t *testing.T) { sameNameRounds(t, routed) })
	// And nodes of different names, one per server, take distinct numbers.
	t.Run("numbers on three routed servers", func(t *testing.T) {
		for round := range 10 {
			nodes := make([]*Node, len(routed))
			errs := make([]error, len(routed))
			release := make(chan struct{})
			var wg sync.WaitGroup
			for i := range routed {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-release
					nodes[i], errs[i] = Start(Config{URLs: []string{routed[i]}, Name: fmt.Sprintf("r%d-%d", round, i), Log: zerolog.Nop()}, &fakeLocal{})
				}()
			}
			close(release)
			wg.Wait()
			seen := map[int]bool{}
			for i, nd := range nodes {
				if errs[i] != nil {
					t.Fatalf("round %d: node %d: %v", round, i, errs[i])
				}
				if seen[nd.Number()] {
					t.Errorf("round %d: number %d taken twice", round, nd.Number())
				}
				seen[nd.Number()] = true
			}
			for _, nd := range nodes {
				nd.Close()
			}
		}
	})
}

// sameNameRounds starts one node per URL, all named alike, released
// together, round after round.
func sameNameRounds(t *testing.T, urls []string) {
	for round := range 20 {
		twins := len(urls)
		name := fmt.Sprintf("twin-%d", round)
		nodes := make([]*Node, twins)
		errs := make([]error, twins)
		release := make(chan struct{})
		var wg sync.WaitGroup
		for i := range twins {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-release
				nodes[i], errs[i] = Start(Config{URLs: []string{urls[i]}, Name: name, Log: zerolog.Nop()}, &fakeLocal{})
			}()
		}
		close(release)
		wg.Wait()
		joined := 0
		for i := range twins {
			switch {
			case errs[i] == nil:
				joined++
				if nodes[i].Number() == 0 {
					t.Errorf("round %d: twin %d started without a number", round, i)
				}
				defer nodes[i].Close()
			case !errors.Is(errs[i], ErrNameTaken):
				t.Fatalf("round %d: twin %d: %v", round, i, errs[i])
			}
		}
		if joined != 1 {
			t.Fatalf("round %d: %d of %d nodes named %q joined, want exactly 1 (%v)", round, joined, twins, name, errs)
		}
	}
}

// routedNATS runs three NATS servers in the test process, routed into one
// NATS cluster, and returns their client URLs once every route is up.
func routedNATS(t *testing.T) []string {
	var servers []*natsserver.Server
	var seed *url.URL
	for i := range 3 {
		o := &natsserver.Options{ServerName: fmt.Sprintf("routed-%d", i),
			Cluster: natsserver.ClusterOpts{Name: "forkd-test", Host: "127.0.0.1", Port: natsserver.RANDOM_PORT}}
		if seed != nil {
			o.Routes = []*url.URL{seed}
		}
		s := startNATS(t, o)
		if seed == nil {
			seed = &url.URL{Scheme: "nats-route", Host: s.ClusterAddr().String()}
		}
		servers = append(servers, s)
	}
	deadline := time.Now().Add(10 * time.Second)
	var urls []string
	for _, s := range servers {
		for s.NumRoutes() < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("NATS routes not up: %d", s.NumRoutes())
			}
			time.Sleep(10 * time.Millisecond)
		}
		urls = append(urls, "nats://"+s.Addr().String())
	}
	return urls
}
