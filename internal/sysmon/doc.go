// Package sysmon holds the process-level runtime settings every process of
// a forkd server starts with: the re-execution that keeps the Go runtime's
// sysmon out of its deep sleep (and sets the master's title), each
// worker's GOMAXPROCS share, a PROCESS-mode worker's scheduling policy
// (SCHED_BATCH), and the optional CPU profile. They are
// machinery of the CLI (internal/command) and of `server bench`, not API.
package sysmon
