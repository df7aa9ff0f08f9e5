package master

import (
	"os"
	"testing"
	"time"

	"github.com/forkd/forkd/ipc"
)

// TestAckLaterSteadyStream: a worker whose Sends never stop (a timer's
// pushes) while the master sends it nothing, so no batch carries the
// SendAck, still has its successes acknowledged within about ackDelay,
// not only once the stream pauses.
func TestAckLaterSteadyStream(t *testing.T) {
	r, out := pipeWriter(t)
	p := &proc{out: out}
	m := &Master{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // what readProc does per batch of a steady stream
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(ackDelay / 20):
			}
			p.sendOK.Add(1)
			m.ackLater(p)
		}
	}()
	defer func() {
		close(stop)
		<-done
		if p.ackLater != nil {
			p.ackLater.Stop()
		}
	}()
	start := time.Now()
	// 500 times ackDelay (5 s): a scheduling stall of a loaded machine
	// (half a second is 50 times ackDelay) cannot fail it; a timer pushed
	// back at every batch (it fired only in a pause of the stream, which
	// never comes here) does, whatever the bound.
	r.SetReadDeadline(start.Add(500 * ackDelay))
	f, err := ipc.NewReader(r, ipc.MaxPayload).Next()
	if err != nil {
		t.Fatalf("no SendAck while the stream went on (%v after %v)", err, time.Since(start))
	}
	if f.Type != ipc.TypeSendAck || f.Arg == 0 {
		t.Fatalf("got frame type %d arg %d, want a SendAck with a count", f.Type, f.Arg)
	}
}

// pipeWriter returns the read end of a pipe and a running ipc.Writer on
// its write end, both closed when t ends.
func pipeWriter(t *testing.T) (*os.File, *ipc.Writer) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out := ipc.NewWriter(w, 1<<20)
	go out.Run()
	t.Cleanup(func() {
		out.Close()
		r.Close()
	})
	return r, out
}
