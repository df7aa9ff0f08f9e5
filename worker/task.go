package worker

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/forkd/forkd/ipc"
)

type taskState struct {
	done atomic.Uint64
}

// ErrTaskFailed wraps an error returned by OnTask in the task worker.
var ErrTaskFailed = errors.New("task failed")

// TaskWait hands data to the task worker pool and waits for OnTask's
// result. Outcome Timeout after timeout, Unavailable when there are no task
// workers or their queue is full, Failed when OnTask returned an error or
// the task worker died mid-task (data then carries the reason).
func (w *Worker) TaskWait(data []byte, timeout time.Duration) ([]byte, ipc.Outcome) {
	out, _, res := w.call(ipc.Header{Type: ipc.TypeTask, Arg: uint32(w.cfg.Slot) + 1}, data, nil, timeout)
	return res, out
}

// Task hands data to the pool and returns at once; done runs in its own
// goroutine with the result (Swoole's task + onFinish).
func (w *Worker) Task(data []byte, timeout time.Duration, done func(result []byte, out ipc.Outcome)) {
	buf := append([]byte(nil), data...)
	go func() {
		res, out := w.TaskWait(buf, timeout)
		if done != nil {
			defer w.recoverLog("OnFinish")
			done(res, out)
		}
	}()
}

// TaskWaitMulti runs several tasks in parallel and waits for all of them
// (or the timeout); results come in the order of datas.
func (w *Worker) TaskWaitMulti(datas [][]byte, timeout time.Duration) ([][]byte, []ipc.Outcome) {
	res := make([][]byte, len(datas))
	outs := make([]ipc.Outcome, len(datas))
	var wg sync.WaitGroup
	for i := range datas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], outs[i] = w.TaskWait(datas[i], timeout)
		}()
	}
	wg.Wait()
	return res, outs
}

// serveTask runs OnTask (task workers) and answers with a TaskResult.
func (w *Worker) serveTask(f ipc.Frame) {
	data := append([]byte(nil), f.Payload...)
	seq, arg, from := f.Seq, f.Arg, int(f.Arg)-1
	w.inflight.Add(1)
	go func() {
		defer w.inflight.Done()
		w.counted()
		var res []byte
		out := ipc.OK
		func() {
			defer func() {
				if p := recover(); p != nil {
					w.log.Error().Str("in", "OnTask").Str("stack", stack()).Msgf("panic: %v", p)
					out, res = ipc.Failed, []byte("panic in OnTask")
				}
			}()
			var err error
			res, err = w.app.Task(w, from, data)
			if err != nil {
				out, res = ipc.Failed, []byte(err.Error())
			}
		}()
		w.tasks.done.Add(1)
		w.out.SendWait(&ipc.Header{Type: ipc.TypeTaskResult, Seq: seq, Arg: arg, Code: uint16(out)}, res, nil)
	}()
}
