// Package worker is the worker process: it says hello to its master over
// the inherited ipc pipes (fd 3 from it, fd 4 to it), runs the user's
// OnWorkerStart, and then serves — in BASE mode from its own reactor on the
// SO_REUSEPORT sockets the master handed down (fd 5...), in PROCESS mode from the requests and
// messages the master's reactor forwards over ipc. Either way the user's
// handlers see the same Conn and Worker, and every bus operation (push,
// close, rooms, pipe messages, tasks) returns its real outcome.
//
// A worker exits when its master goes away: EOF on the ipc pipe.
package worker
