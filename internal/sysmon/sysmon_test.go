package sysmon

import (
	"slices"
	"testing"
)

func TestWithSysmonSetting(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		want    []string
		changed bool
	}{
		{[]string{"A=1"}, []string{"A=1", "GODEBUG=" + sysmonSetting}, true},
		{[]string{"GODEBUG="}, []string{"GODEBUG=" + sysmonSetting}, true},
		{[]string{"GODEBUG=gctrace=1", "B=2"}, []string{"GODEBUG=gctrace=1," + sysmonSetting, "B=2"}, true},
		{[]string{"GODEBUG=gctrace=1,schedtrace=500"}, []string{"GODEBUG=gctrace=1,schedtrace=500"}, false},
	} {
		got, changed := withSysmonSetting(tc.in)
		if changed != tc.changed || !slices.Equal(got, tc.want) {
			t.Errorf("withSysmonSetting(%q) = %q, %v; want %q, %v", tc.in, got, changed, tc.want, tc.changed)
		}
	}
}

func TestPlainEnv(t *testing.T) {
	t.Setenv(Env, "added")
	t.Setenv("GODEBUG", "gctrace=1,"+sysmonSetting)
	env := PlainEnv()
	if !slices.Contains(env, "GODEBUG=gctrace=1") || slices.ContainsFunc(env, func(e string) bool { return e == Env+"=added" }) {
		t.Errorf("PlainEnv kept what KeepAwake added: %q", env)
	}
	t.Setenv(Env, "")
	if env := PlainEnv(); !slices.Contains(env, "GODEBUG=gctrace=1,"+sysmonSetting) {
		t.Errorf("PlainEnv dropped a GODEBUG the user set: %q", env)
	}
}
