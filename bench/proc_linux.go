package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat. The
// kernel fixes it at 100 for user space on every architecture Go supports
// (getconf CLK_TCK prints 100), whatever CONFIG_HZ is.
const clockTicks = 100

// procStat is what bench reads from /proc/<pid>/stat.
type procStat struct {
	cpu  time.Duration // utime + stime
	pgrp int
}

// readProcStat reads /proc/<pid>/stat.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(b)
}

// parseProcStat parses a /proc/<pid>/stat line. The command name (field 2)
// may hold spaces and parentheses, so fields are counted from the last ')'.
func parseProcStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("bench: malformed /proc stat line")
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
	if len(f) < 13 {
		return procStat{}, errors.New("bench: short /proc stat line")
	}
	pgrp, err1 := strconv.Atoi(string(f[2]))
	ut, err2 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err3 := strconv.ParseUint(string(f[12]), 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procStat{}, fmt.Errorf("bench: parse /proc stat: %w", err)
	}
	ticks := ut + st
	return procStat{
		cpu:  time.Duration(ticks) * (time.Second / clockTicks),
		pgrp: pgrp,
	}, nil
}

// readRSS returns VmRSS of pid in KiB, from /proc/<pid>/status.
func readRSS(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseVmRSS(b)
}

func parseVmRSS(b []byte) (uint64, error) {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest) // "1234", "kB"
		if len(f) < 1 {
			break
		}
		v, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: parse VmRSS: %w", err)
		}
		return v, nil
	}
	return 0, errors.New("bench: no VmRSS in /proc status (kernel thread or zombie)")
}

// groupPids lists the live processes whose process group is pgid.
func groupPids(pgid int) []int {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	var pids []int
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		st, err := readProcStat(pid)
		if err == nil && st.pgrp == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// selfCPU is the CPU time (user + system) this process has used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// raiseNoFile raises RLIMIT_NOFILE to its hard limit and returns the new soft
// limit.
func raiseNoFile() (uint64, error) { return raiseNoFileTo(0) }

// raiseNoFileTo raises RLIMIT_NOFILE's soft limit to at least want (0:
// to the hard limit), raising the hard limit too when want is above it
// and the process may (root, CAP_SYS_RESOURCE: up to fs.nr_open). The
// servers bench starts inherit the limits. It returns the soft limit
// reached; the error is one line saying how far it got and what to do.
func raiseNoFileTo(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("bench: getrlimit: %w", err)
	}
	return raiseLimit(&lim, want, readNrOpen(), func(l *syscall.Rlimit) error {
		return syscall.Setrlimit(syscall.RLIMIT_NOFILE, l)
	})
}

// raiseLimit is raiseNoFileTo's logic, with the system's ceiling (nrOpen,
// 0: unknown) and the setter apart (tests).
func raiseLimit(lim *syscall.Rlimit, want, nrOpen uint64, set func(*syscall.Rlimit) error) (uint64, error) {
	denied := false
	if want > lim.Max {
		hard := want
		if nrOpen > 0 && hard > nrOpen {
			hard = nrOpen
		}
		err := set(&syscall.Rlimit{Cur: hard, Max: hard})
		if err == nil {
			lim.Cur, lim.Max = hard, hard
		}
		denied = err != nil // not root, or root without CAP_SYS_RESOURCE (a container)
	}
	if lim.Cur < lim.Max {
		if err := set(&syscall.Rlimit{Cur: lim.Max, Max: lim.Max}); err != nil {
			return lim.Cur, fmt.Errorf("bench: raise RLIMIT_NOFILE to %d: %w", lim.Max, err)
		}
		lim.Cur = lim.Max
	}
	if want > lim.Cur {
		how := "raise the hard limit (ulimit -Hn, limits.conf or the service's LimitNOFILE) or run bench as root"
		switch {
		case denied && os.Geteuid() == 0:
			how = "root here lacks CAP_SYS_RESOURCE (a container?): raise the hard limit from outside (docker run --ulimit nofile=N:N, prlimit)"
		case nrOpen > 0 && want > nrOpen:
			how = "raise fs.nr_open (sysctl) and the hard limit"
		}
		return lim.Cur, &limitError{reached: lim.Cur, want: want, how: how}
	}
	return lim.Cur, nil
}

// limitError is an open-file limit that could not be raised as far as
// wanted: how far it got, and what to do.
type limitError struct {
	reached, want uint64
	how           string
}

func (e *limitError) Error() string {
	return fmt.Sprintf("bench: RLIMIT_NOFILE could be raised to %d open files, %d are needed: %s, or ask for fewer connections", e.reached, e.want, e.how)
}

// readNrOpen is fs.nr_open, the ceiling of any RLIMIT_NOFILE (0: unknown).
func readNrOpen() uint64 {
	b, err := os.ReadFile("/proc/sys/fs/nr_open")
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// killGroup sends sig to process group pgid; a group that is already gone is
// not an error.
func killGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 1 {
		return nil
	}
	err := syscall.Kill(-pgid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// setpgid makes the child the leader of its own process group.
func setpgid() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// machineInfo describes the host for the report's machine line.
func machineInfo() (model, kernel string) {
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range bytes.Split(b, []byte("\n")) {
			if k, v, ok := bytes.Cut(line, []byte(":")); ok && string(bytes.TrimSpace(k)) == "model name" {
				model = string(bytes.TrimSpace(v))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = string(bytes.TrimSpace(b))
	}
	return model, kernel
}

// loadAverage is the 1-minute load average, or 0 when unknown.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(string(f[0]), 64)
	return v
}
