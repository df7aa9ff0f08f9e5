package forkd

import (
	"net/url"
	"testing"
)

// TestPlainPath: where plainPath answers, it answers what
// url.ParseRequestURI's Path is, byte for byte.
func TestPlainPath(t *testing.T) {
	cases := []string{
		"/", "/echo", "/echo?x=1", "/chat?room=a&name=b", "/a/b/c/", "//x", "/a:b@c",
		"/-._~!$&'()*+,;=:@", "/echo?", "/echo?q=%zz#frag", "/echo?%00", "/e%41cho",
		"/a b", "/a#b", "/a\x00", "/a?\x7f", "*", "http://h/x", "", "echo", "/ü", "/a\\b",
		"/a[b]", "/a|b", "/a^b", "/a`b", "/a{b}", "/a\"b", "/a<b>",
	}
	for b := range 256 {
		cases = append(cases, "/x"+string(rune(b)), "/x?"+string([]byte{byte(b)}), "/x"+string([]byte{byte(b)})+"y")
	}
	answered := 0
	for _, uri := range cases {
		got, ok := plainPath([]byte(uri))
		if !ok {
			continue
		}
		answered++
		u, err := url.ParseRequestURI(uri)
		if err != nil {
			t.Errorf("plainPath(%q) = %q, but ParseRequestURI refuses it: %v", uri, got, err)
			continue
		}
		if got != u.Path {
			t.Errorf("plainPath(%q) = %q, want %q", uri, got, u.Path)
		}
	}
	if answered < 100 {
		t.Errorf("plainPath answered %d of %d cases: the fast path is not taken", answered, len(cases))
	}
}
