package sysmon

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"

	"github.com/rs/zerolog"
)

// WorkerProcs gives each worker process its share of the CPUs,
// GOMAXPROCS/workers and at least 1 (with as many workers as CPUs, the
// default: 1, as fasthttp's prefork children and Swoole's single-threaded
// workers have), unless the GOMAXPROCS environment variable says
// otherwise. A worker with a P per CPU of the machine spends much of its
// time waking idle threads for goroutines another thread would have run a
// moment later (about 30% of a PROCESS-mode worker's CPU on 2 cores).
func WorkerProcs(workers int) {
	if os.Getenv("GOMAXPROCS") != "" || workers < 1 {
		return
	}
	runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)/workers))
}

// EnvCPUProfile names a file prefix: when set, every process of the server
// (master and workers) writes a CPU profile to PREFIX.ROLE.PID until it
// stops. For profiling the data path; off by default.
const EnvCPUProfile = "FORKD_CPUPROFILE"

// StartProfile starts a CPU profile if EnvCPUProfile asks for one, and
// returns the function that ends it.
func StartProfile(role string, log *zerolog.Logger) func() {
	prefix := os.Getenv(EnvCPUProfile)
	if prefix == "" {
		return func() {}
	}
	name := fmt.Sprintf("%s.%s.%d", prefix, role, os.Getpid())
	f, err := os.Create(name)
	if err != nil {
		log.Warn().Err(err).Msg("cpu profile not started")
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		log.Warn().Err(err).Msg("cpu profile not started")
		return func() {}
	}
	log.Info().Str("file", name).Msg("cpu profile started")
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
