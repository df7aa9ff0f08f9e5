// Package command is the CLI every forkd program gets: `start` (flags,
// YAML config, daemonizing, the ready lines, --watch), `stop`, `reload`,
// `restart`, `status`, `connections`, `reopen-logs`, and the worker side
// of the same binary (runWorker). The root package's Server.Run fills in a
// Program (listeners, names, the worker.App adapter) and calls Program.Run;
// nothing here is API. Other packages add commands with Register (package
// bench adds `bench`).
package command
