package reactor

import "testing"

func TestOriginPolicy(t *testing.T) {
	own := func(p string) bool { return p == "9501" || p == "9502" }
	tests := []struct {
		name   string
		list   []string
		origin string
		host   string
		want   bool
	}{
		{name: "same", origin: "http://example.com:9502", host: "example.com:9502", want: true},
		{name: "same, case", origin: "HTTP://Example.COM:9502", host: "example.com:9502", want: true},
		{name: "same, default port", origin: "https://example.com", host: "example.com", want: true},
		{name: "default port, explicit host port", origin: "https://example.com", host: "example.com:443", want: true},
		{name: "our other port", origin: "http://example.com:9501", host: "example.com:9502", want: true},
		{name: "not our port", origin: "http://example.com:8080", host: "example.com:9502", want: false},
		{name: "other host", origin: "https://evil.example", host: "example.com:9502", want: false},
		{name: "suffix trick", origin: "http://example.com.evil.example:9502", host: "example.com:9502", want: false},
		{name: "null", origin: "null", host: "example.com", want: false},
		{name: "garbage", origin: "::::", host: "example.com", want: false},
		{name: "ipv6 same", origin: "http://[::1]:9502", host: "[::1]:9502", want: true},
		{name: "listed", list: []string{"https://a.example"}, origin: "https://a.example", host: "x:1", want: true},
		{name: "listed, other scheme", list: []string{"https://a.example"}, origin: "http://a.example", host: "x:1", want: false},
		{name: "listed, other port", list: []string{"https://a.example"}, origin: "https://a.example:8443", host: "x:1", want: false},
		{name: "listed with port", list: []string{"http://a.example:8080"}, origin: "http://a.example:8080", host: "x:1", want: true},
		{name: "wildcard sub", list: []string{"https://*.b.example"}, origin: "https://x.b.example", host: "x:1", want: true},
		{name: "wildcard deep", list: []string{"https://*.b.example"}, origin: "https://y.x.b.example", host: "x:1", want: true},
		{name: "wildcard apex", list: []string{"https://*.b.example"}, origin: "https://b.example", host: "x:1", want: false},
		{name: "wildcard lookalike", list: []string{"https://*.b.example"}, origin: "https://evilb.example", host: "x:1", want: false},
		{name: "star", list: []string{"*"}, origin: "https://evil.example", host: "x:1", want: true},
		{name: "null listed", list: []string{"null"}, origin: "null", host: "x:1", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newOriginPolicy(tt.list)
			if got := p.allowed(tt.origin, tt.host, own); got != tt.want {
				t.Errorf("allowed(%q, host %q) with %q: got %v, want %v", tt.origin, tt.host, tt.list, got, tt.want)
			}
		})
	}
}

func TestCheckOrigins(t *testing.T) {
	for _, ok := range []string{"*", "null", "https://a.example", "https://*.b.example", "http://a.example:8080"} {
		if err := CheckOrigins([]string{ok}); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"a.example", "https://a.example/path", "https://a.*.example", "https://"} {
		if err := CheckOrigins([]string{bad}); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}
