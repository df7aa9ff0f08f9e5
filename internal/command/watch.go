package command

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/forkd/forkd/master"
)

func watchFlag() cli.Flag {
	return altsrc.NewBoolFlag(&cli.BoolFlag{Name: "watch",
		Usage: "development: reload the workers when this program's binary changes on disk (go build -o is the whole edit-run loop)"})
}

// How the watcher polls. Polling, not inotify: `go build -o` may replace
// the binary by a rename (a new inode, which a watch on the file misses)
// or rewrite it in place; one stat every watchPoll sees both, costs
// nothing, needs no dependency, and keeps the reload well within 2 s of
// the new binary being complete.
const (
	watchPoll   = 200 * time.Millisecond
	watchStable = 300 * time.Millisecond // unchanged this long before it is used
)

// fileSig is what tells one version of the binary from another.
type fileSig struct {
	size  int64
	mtime time.Time
	ino   uint64
}

func statSig(path string) (fileSig, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileSig{}, err
	}
	sig := fileSig{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		sig.ino = st.Ino
	}
	return sig, nil
}

// watch runs a rolling reload whenever the binary at exe has changed and
// is a complete executable again; it returns when m stops. The master
// keeps running its own code: a change to what the master does (flags,
// listeners) needs `restart`.
func (s *Program) watch(m *master.Master, exe string, log zerolog.Logger) {
	last, err := statSig(exe)
	if err != nil {
		log.Error().Err(err).Str("binary", exe).Msg("watch: cannot stat the binary; not watching")
		return
	}
	log.Info().Str("binary", exe).Msg("watch: reloading the workers when the binary changes")
	tick := time.NewTicker(watchPoll)
	defer tick.Stop()
	var seen fileSig // the changed version being waited on
	var since time.Time
	var refused fileSig // a version found incomplete: said once
	for {
		select {
		case <-m.Done():
			return
		case <-tick.C:
		}
		cur, err := statSig(exe)
		if err != nil || cur == last {
			since = time.Time{}
			continue // gone for a moment (being replaced), or unchanged
		}
		if cur != seen {
			seen, since = cur, time.Now()
			continue
		}
		if time.Since(since) < watchStable {
			continue
		}
		if err := completeExecutable(exe, cur.size); err != nil {
			if cur != refused {
				log.Warn().Err(err).Str("binary", exe).Msg("watch: the binary changed but is not a complete executable yet; waiting")
				refused = cur
			}
			continue
		}
		last = cur
		log.Info().Str("binary", exe).Int64("size", cur.size).Dur("stable_for", time.Since(since)).Msg("watch: binary changed, reloading")
		lines, err := m.Reload(false)
		for _, l := range lines {
			ev := log.Info().Str("kind", l.Kind).Int("id", l.ID).Int("old_pid", l.OldPid).Int("new_pid", l.NewPid)
			if l.Note != "" {
				ev = ev.Str("note", l.Note)
			}
			ev.Msg("watch: replaced")
		}
		if err != nil {
			log.Error().Err(err).Msg("watch: reload failed; the old workers keep serving")
		}
	}
}

// completeExecutable checks that path is an executable ELF file of size
// bytes whose headers, sections and loaded segments all lie within it: a
// file still being written (or cut short) fails.
func completeExecutable(path string, size int64) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return errors.New("not executable")
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("not a complete ELF file: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if end := int64(p.Off) + int64(p.Filesz); end > size {
			return fmt.Errorf("segment ends at %d, past the file's %d bytes", end, size)
		}
	}
	for _, sec := range f.Sections {
		if sec.Type == elf.SHT_NOBITS {
			continue
		}
		if end := int64(sec.Offset) + int64(sec.FileSize); end > size {
			return fmt.Errorf("section %s ends at %d, past the file's %d bytes", sec.Name, end, size)
		}
	}
	if len(f.Progs) == 0 {
		return errors.New("no program headers")
	}
	return nil
}
