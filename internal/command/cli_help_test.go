package command

import (
	"slices"
	"testing"
)

// TestReachable: a listener bound to every interface is shown on loopback,
// 127.0.0.1 when it was given an IPv4 address: Go binds "0.0.0.0:9501" as
// one dual-stack socket that reports itself as [::]:9501 (what `make run`
// printed as http://[::1]:9501/).
func TestReachable(t *testing.T) {
	for _, tc := range []struct{ in, asked, want string }{
		{"0.0.0.0:9501", "0.0.0.0:9501", "127.0.0.1:9501"},
		{"[::]:9501", "0.0.0.0:9501", "127.0.0.1:9501"},
		{"[::]:9501", ":9501", "127.0.0.1:9501"},
		{"[::]:9501", "[::]:9501", "[::1]:9501"},
		{":9501", ":9501", "127.0.0.1:9501"},
		{"127.0.0.1:9501", "127.0.0.1:0", "127.0.0.1:9501"},
		{"192.0.2.7:80", "192.0.2.7:80", "192.0.2.7:80"},
		{"[2001:db8::1]:443", "[2001:db8::1]:443", "[2001:db8::1]:443"},
		{"not an address", "", "not an address"},
	} {
		if got := reachable(tc.in, tc.asked); got != tc.want {
			t.Errorf("reachable(%q, asked %q): got %q, want %q", tc.in, tc.asked, got, tc.want)
		}
	}
	s := &Program{Listeners: []*Listener{
		{Name: "http", Label: "chat page"},
		{Name: "ws", Protocol: WebSocket},
	}}
	got := s.readyLines([]string{"[::]:9501", "[::]:9502"}, []string{"0.0.0.0:9501", "[::]:9502"})
	want := []string{"chat page: http://127.0.0.1:9501/", "ws: ws://[::1]:9502/"}
	if !slices.Equal(got, want) {
		t.Errorf("readyLines: got %q, want %q", got, want)
	}
}

// TestMergeArgs: restart's flags replace the recorded ones (aliases, =
// forms, --listen by listener name, --http as --listen http=), the rest is
// kept, and merging again does not grow the line.
func TestMergeArgs(t *testing.T) {
	flags := startFlags()
	tests := []struct {
		name             string
		base, over, want []string
	}{
		{name: "nothing given", base: []string{"start", "--mode", "base", "-d"}, want: []string{"start", "--mode", "base", "-d"}},
		{name: "value replaced",
			base: []string{"start", "--mode", "base", "--workers", "1", "-d"}, over: []string{"--workers=4"},
			want: []string{"start", "--mode", "base", "-d", "--workers=4"}},
		{name: "alias and bool",
			base: []string{"start", "-d", "--workers", "1"}, over: []string{"--daemon=false"},
			want: []string{"start", "--workers", "1", "--daemon=false"}},
		{name: "listen by name",
			base: []string{"start", "--listen", "a=1:1", "--listen", "b=2:2", "--http", "3:3"}, over: []string{"--listen", "b=9:9", "--listen", "http=8:8"},
			want: []string{"start", "--listen", "a=1:1", "--listen", "b=9:9", "--listen", "http=8:8"}},
		{name: "repeated run dir",
			base: []string{"start", "--run-dir", "run"}, over: []string{"--run-dir", "run", "--run-dir", "/abs/run"},
			want: []string{"start", "--run-dir", "/abs/run"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mergeArgs(flags, tc.base, tc.over)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if again := mergeArgs(flags, got, tc.over); !slices.Equal(again, got) {
				t.Errorf("merged again: got %q, want %q", again, got)
			}
		})
	}
}

// TestRestartSecrets: the start record keeps no API token; restart asks for
// it again unless the environment has it, and a token given to restart
// replaces the redacted one.
func TestRestartSecrets(t *testing.T) {
	rec := redactArgs(mergeArgs(startFlags(), []string{"start", "--api-token", "s3cret", "--workers", "2"}, nil))
	if slices.Contains(rec, "s3cret") {
		t.Fatalf("the record keeps the token: %q", rec)
	}
	t.Setenv("FORKD_API_TOKEN", "")
	if _, err := dropRedacted(rec); err == nil {
		t.Errorf("restart without the token: got no error")
	}
	given := mergeArgs(startFlags(), rec, []string{"--api-token=again"})
	if got, err := dropRedacted(given); err != nil || !slices.Contains(got, "--api-token=again") {
		t.Errorf("restart --api-token=again: got %q, %v", got, err)
	}
	t.Setenv("FORKD_API_TOKEN", "from-env")
	got, err := dropRedacted(rec)
	if err != nil || !slices.Equal(got, []string{"start", "--workers", "2"}) {
		t.Errorf("restart with FORKD_API_TOKEN: got %q, %v; want the recorded flags without the token", got, err)
	}
}
