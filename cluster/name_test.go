package cluster

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// Nodes of one name started at the same instant (released together, on
// one real NATS server), round after round: exactly one joins and every
// other is refused with ErrNameTaken. Before the name claim's second step
// (name.go) all of them found the name free and joined.
func TestJoinSameNameAtOnce(t *testing.T) {
	url := natsForTest(t)
	for round := range 20 {
		const twins = 3
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
				nodes[i], errs[i] = Start(Config{URLs: []string{url}, Name: name, Log: zerolog.Nop()}, &fakeLocal{})
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
