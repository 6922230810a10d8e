package clientip

import (
	"net/http/httptest"
	"testing"
)

func TestAddr(t *testing.T) {
	trusted, err := ParseTrusted([]string{"10.0.0.0/8", "192.0.2.7", "2001:db8:ffff::/48"})
	if err != nil {
		t.Fatal(err)
	}
	r := Resolver{Trusted: trusted}
	cases := []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no proxy trusted: the header is ignored", "198.51.100.1:4000", []string{"203.0.113.9"}, "198.51.100.1"},
		{"trusted proxy: the hop it appended", "10.1.2.3:4000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"a client's own header before the proxy's hop is not believed", "10.1.2.3:4000", []string{"1.2.3.4, 203.0.113.9"}, "203.0.113.9"},
		{"two trusted proxies in a row", "192.0.2.7:4000", []string{"203.0.113.9, 10.9.9.9"}, "203.0.113.9"},
		{"several headers read as one list", "10.1.2.3:4000", []string{"1.2.3.4", "203.0.113.9"}, "203.0.113.9"},
		{"trusted proxy without the header", "10.1.2.3:4000", nil, "10.1.2.3"},
		{"malformed hop: the last sure address", "10.1.2.3:4000", []string{"203.0.113.9, not-an-ip"}, "10.1.2.3"},
		{"only trusted hops: the first of them", "10.1.2.3:4000", []string{"10.4.4.4"}, "10.4.4.4"},
		{"IPv6 trusted proxy and client", "[2001:db8:ffff::1]:4000", []string{"2001:db8:1:2::5"}, "2001:db8:1:2::5"},
		{"IPv4-mapped peer", "[::ffff:10.1.2.3]:4000", []string{"203.0.113.9"}, "203.0.113.9"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/", nil)
			req.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				req.Header.Add("X-Forwarded-For", v)
			}
			if got := r.Addr(req).String(); got != tc.want {
				t.Fatalf("Addr = %s, want %s", got, tc.want)
			}
		})
	}
	if got := (Resolver{}).Key(httptest.NewRequest("GET", "/", nil)); got != "192.0.2.1" {
		t.Errorf("zero Resolver key of httptest's peer = %s", got)
	}
}

func TestKeyOf(t *testing.T) {
	for in, want := range map[string]string{
		"198.51.100.1:1":           "198.51.100.1",
		"[2001:db8:1:2:3:4:5:6]:1": "2001:db8:1:2::/64",
		"[2001:db8:1:2::9]:1":      "2001:db8:1:2::/64",
		"[::ffff:198.51.100.1]:1":  "198.51.100.1",
	} {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = in
		if got := (Resolver{}).Key(req); got != want {
			t.Errorf("Key(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestParseTrusted(t *testing.T) {
	if _, err := ParseTrusted([]string{"10.0.0.0/8", "nonsense"}); err == nil {
		t.Fatal("accepted a malformed proxy")
	}
	p, err := ParseTrusted([]string{" 10.1.2.3/8 ", "", "::ffff:192.0.2.1"})
	if err != nil || len(p) != 2 || p[0].String() != "10.0.0.0/8" || p[1].String() != "192.0.2.1/32" {
		t.Fatalf("%v %v", p, err)
	}
}
