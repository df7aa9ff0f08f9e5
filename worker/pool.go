package worker

// job is what a pooled goroutine of a PROCESS-mode worker runs: a request
// to serve, or a connection whose events to work through. The goroutines
// are kept (reactor.Pool): one started per request grew its stack again
// on every request, about a third of a worker's CPU.
type job struct {
	rc   *reqCtx
	c    *Conn
	ping uint32 // a watchdog Ping to answer
}

func (w *Worker) runJob(j job) {
	if j.rc != nil {
		w.runRequest(j.rc)
	} else if j.c == nil {
		w.pong(j.ping)
	} else {
		j.c.run()
	}
}

// spawn runs j on a goroutine of the worker's pool.
func (w *Worker) spawn(j job) { w.runners.Go(j) }
