package worker

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/forkd/forkd/ipc"
)

// taskState is a task worker's queue: like Swoole's task workers, each runs
// one task at a time, in the order the master handed them over, so the pool
// size bounds how many tasks run at once (the master gives a new task to an
// idle task worker first, and bounds every task worker's queue).
type taskState struct {
	done  atomic.Uint64
	queue serial[queuedTask]
}

type queuedTask struct {
	seq, arg uint32
	data     []byte
}

// TaskWait hands data to the task worker pool and waits for OnTask's
// result. Outcome Timeout after timeout, Unavailable when there are no task
// workers or their queue is full, Failed when OnTask returned an error or
// the task worker died mid-task (data then carries the reason).
func (w *Worker) TaskWait(data []byte, timeout time.Duration) ([]byte, ipc.Outcome) {
	out, _, res := w.call(ipc.Header{Type: ipc.TypeTask, Arg: ipc.TaskOrigin(w.cfg.Slot)}, data, nil, timeout)
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

// serveTask (task workers) queues a task; one goroutine at a time works
// through the queue, running OnTask and answering each with a TaskResult.
func (w *Worker) serveTask(f ipc.Frame) {
	t := queuedTask{seq: f.Seq, arg: f.Arg, data: append([]byte(nil), f.Payload...)}
	w.inflight.Add(1)
	if w.tasks.queue.add(t) {
		go w.runTasks()
	}
}

func (w *Worker) runTasks() {
	var batch []queuedTask
	for {
		var ok bool
		if batch, ok = w.tasks.queue.take(batch); !ok {
			return
		}
		for i := range batch {
			w.runTask(batch[i])
			batch[i] = queuedTask{} // let its data go
			w.inflight.Done()
		}
	}
}

func (w *Worker) runTask(t queuedTask) {
	w.counted()
	from := ipc.TaskFrom(t.arg)
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
		res, err = w.app.Task(w, from, t.data)
		if err != nil {
			out, res = ipc.Failed, []byte(err.Error())
		}
	}()
	w.tasks.done.Add(1)
	if out != ipc.OK {
		w.m.TasksFail.Add(1)
	}
	w.out.SendWait(&ipc.Header{Type: ipc.TypeTaskResult, Seq: t.seq, Arg: t.arg, Code: uint16(out)}, res, nil)
}
