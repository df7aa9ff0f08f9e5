// Package master is the supervising process. It creates every listening
// socket (PROCESS mode: one per port, served by its own reactor; BASE mode:
// one SO_REUSEPORT socket per worker slot and port, kept open for the
// master's whole life and handed to whichever process serves the slot, so
// a dying or replaced worker never resets queued connections), re-executes
// its own binary as each worker with a stable id, routes the bus between
// workers, answers the control socket, and runs rolling reloads.
package master
