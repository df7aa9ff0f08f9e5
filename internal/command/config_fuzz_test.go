package command

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/forkd/forkd/master"
)

// FuzzParseSize: parseSize never panics; what it accepts is a size in
// [0, 2 GiB] that reads back the same when written in bytes or in its unit.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "1", "1048576", "512KiB", "10MiB", "1GiB", "2GiB", "3GiB", "1 MiB",
		" 64k ", "4m", "1g", "100B", "-1", "1.5MiB", "MiB", "", "9223372036854775807", "2147483648", "0x10", "+5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			if n != 0 {
				t.Fatalf("parseSize(%q): error %v with size %d", s, err, n)
			}
			return
		}
		if n < 0 || n > 1<<31 {
			t.Fatalf("parseSize(%q) = %d, outside [0, 2 GiB]", s, n)
		}
		back, err := parseSize(strconv.Itoa(n))
		if err != nil || back != n {
			t.Fatalf("parseSize(%q) = %d, but parseSize(%q) = %d, %v", s, n, strconv.Itoa(n), back, err)
		}
		if n%(1<<10) == 0 {
			kib := strconv.Itoa(n>>10) + "KiB"
			if back, err := parseSize(kib); err != nil || back != n {
				t.Fatalf("parseSize(%q) = %d, but parseSize(%q) = %d, %v", s, n, kib, back, err)
			}
		}
	})
}

// fuzzServer declares the built-in app's two listeners.
func fuzzServer() *Program {
	return &Program{Name: "fuzz", Listeners: []*Listener{
		{Name: "http", Addr: "127.0.0.1:9501", Protocol: HTTP},
		{Name: "ws", Addr: "127.0.0.1:9502", Protocol: WebSocket},
	}}
}

// FuzzConfig feeds arbitrary bytes to `start --config FILE` (YAML through
// urfave/cli's altsrc, then the same option checks as the command), and
// master.New. Nothing may panic; a file that loads loads the same way
// twice, and a flag on the command line always wins over the file.
func FuzzConfig(f *testing.F) {
	f.Add([]byte("mode: base\nworkers: 4\nmax-package-size: 2MiB\nheartbeat-idle: 30s\n"))
	f.Add([]byte("mode: process\ndispatch: ip\nhttp: 127.0.0.1:8080\nws: 127.0.0.1:8081\nmax-conn: 1000\nread-timeout: 5s\nidle-timeout: 1m\n"))
	f.Add([]byte("listen:\n  - http=127.0.0.1:1\n  - ws=127.0.0.1:2\nno-http-upgrade: true\n"))
	f.Add([]byte("workers: many\n"))
	f.Add([]byte("max-send-buffer: -1\n"))
	f.Add([]byte("{]"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s := fuzzServer()
		args := []string{"--config", path, "--run-dir", filepath.Join(dir, "run")}
		o, err := s.loadOptions(args)
		if err != nil {
			return
		}
		if o.MaxPackageSize < 0 || o.MaxSendBuffer < 0 || o.MaxConns <= 0 || len(o.Listeners) != 2 {
			t.Fatalf("options loaded from %q are not sane: %+v", data, o)
		}
		again, err := s.loadOptions(args)
		if err != nil || !reflect.DeepEqual(again, o) {
			t.Fatalf("loading %q twice: %+v, %v; then %+v", data, o, err, again)
		}
		over, err := s.loadOptions(append(args, "--workers", "7", "--mode", "base"))
		if err != nil {
			t.Fatalf("config %q loads, but not with --workers 7: %v", data, err)
		}
		if over.Workers != 7 || over.Mode != "base" {
			t.Fatalf("config %q: flags did not win: workers %d, mode %q", data, over.Workers, over.Mode)
		}
		if m, err := master.New(over); err == nil && m == nil {
			t.Fatal("master.New: no master and no error")
		}
	})
}

// TestLoadOptions: the config file feeds the same options as the flags, the
// flags win, and limits that cannot work are refused before anything starts.
func TestLoadOptions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	yaml := "mode: process\nworkers: 3\nmax-package-size: 2MiB\nmax-send-buffer: 256KiB\nmax-conn: 100\n" +
		"heartbeat-idle: 30s\nread-timeout: 5s\nidle-timeout: 1m\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	typo := filepath.Join(dir, "typo.yaml")
	if err := os.WriteFile(typo, []byte("mode: base\nwokers: 8\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		check   func(o master.Options) bool
		wantErr string
	}{
		{name: "file", args: []string{"--config", path}, check: func(o master.Options) bool {
			return o.Mode == "process" && o.Workers == 3 && o.MaxPackageSize == 2<<20 && o.MaxSendBuffer == 256<<10 &&
				o.MaxConns == 100 && o.HeartbeatIdle == 30*time.Second && o.ReadTimeout == 5*time.Second && o.IdleTimeout == time.Minute
		}},
		{name: "flags win", args: []string{"--config", path, "--read-timeout", "2s", "--max-conn", "7"}, check: func(o master.Options) bool {
			return o.ReadTimeout == 2*time.Second && o.MaxConns == 7 && o.Workers == 3
		}},
		{name: "defaults", args: nil, check: func(o master.Options) bool {
			return o.MaxPackageSize == 10<<20 && o.MaxSendBuffer == 1<<20 && o.ReadTimeout == 15*time.Second &&
				o.IdleTimeout == time.Minute && o.HeartbeatIdle == 0 && o.MaxConns > 0
		}},
		{name: "bad size", args: []string{"--max-send-buffer", "lots"}, wantErr: "--max-send-buffer"},
		// A typo in a key was skipped quietly: the default was used.
		{name: "unknown key", args: []string{"--config", typo}, wantErr: `unknown key "wokers"`},
		{name: "negative max-conn", args: []string{"--max-conn", "-5"}, wantErr: "--max-conn must not be negative"},
		{name: "negative max-request", args: []string{"--max-request", "-1"}, wantErr: "--max-request must not be negative"},
		// Both used to fall back to info and JSON quietly.
		{name: "bad log level", args: []string{"--log-level", "loud"}, wantErr: `--log-level "loud": want debug, info, warn or error`},
		{name: "bad log format", args: []string{"--log-format", "xml"}, wantErr: `--log-format "xml": want json or console`},
		{name: "log level and format", args: []string{"--log-level", "warn", "--log-format", "console"}, check: func(o master.Options) bool {
			return o.LogLevel == "warn" && o.LogFormat == "console"
		}},
		{name: "process package over one ipc frame", args: []string{"--mode", "process", "--max-package-size", "1GiB"},
			wantErr: "the most one ipc frame"},
		{name: "base package of 1GiB", args: []string{"--mode", "base", "--max-package-size", "1GiB"}, check: func(o master.Options) bool {
			return o.MaxPackageSize == 1<<30
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := fuzzServer().loadOptions(append(tc.args, "--run-dir", filepath.Join(dir, "run")))
			if err == nil {
				_, err = master.New(o)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(o) {
				t.Fatalf("got %+v", o)
			}
		})
	}
}
