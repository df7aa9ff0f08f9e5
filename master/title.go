package master

import (
	"fmt"
	"os"
	"path/filepath"
)

// DefaultName is --name's default: the binary's name.
func DefaultName() string {
	exe, err := os.Executable()
	if err != nil {
		return filepath.Base(os.Args[0])
	}
	return filepath.Base(exe)
}

// MasterTitle is the master's process title, as Workerman and Swoole show
// theirs: `forkd: master [NAME] (process mode, 4 workers)`.
func MasterTitle(name, mode string, workers int) string {
	w := "workers"
	if workers == 1 {
		w = "worker"
	}
	return fmt.Sprintf("forkd: master [%s] (%s mode, %d %s)", name, mode, workers, w)
}

// title is a slot's process title: `forkd: worker 2 [NAME]`, `forkd: task
// worker 0 [NAME]` (numbered among the task workers), `forkd: process
// mailer [NAME]`. Workers are started with it as argv[0], so ps and
// /proc/PID/cmdline show it with no trick on the process's memory.
func (m *Master) title(sl *slot) string {
	name := m.opts.Name
	if name == "" {
		name = DefaultName()
	}
	switch {
	case sl.task:
		return fmt.Sprintf("forkd: task worker %d [%s]", sl.id-m.opts.Workers, name)
	case sl.process != "":
		return fmt.Sprintf("forkd: process %s [%s]", sl.process, name)
	}
	return fmt.Sprintf("forkd: worker %d [%s]", sl.id, name)
}
