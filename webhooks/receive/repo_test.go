package receive

import "testing"

func TestNormalizeRepo(t *testing.T) {
	cases := map[string]string{
		"acme/fleet":                                           "acme/fleet",
		"ACME/Fleet.git":                                       "acme/fleet",
		"https://github.com/acme/fleet.git":                    "github.com/acme/fleet",
		"https://github.com/acme/fleet/":                       "github.com/acme/fleet",
		"https://token:x@github.com:443/acme/fleet":            "github.com/acme/fleet",
		"git@github.com:acme/fleet.git":                        "github.com/acme/fleet",
		"ssh://git@bitbucket.acme.example:7999/acme/fleet.git": "bitbucket.acme.example/acme/fleet",
		"https://[2001:db8::1]:8443/acme/fleet.git":            "[2001:db8::1]/acme/fleet",
		"https://gitlab.example.com/acme/devices/fleet?x=1":    "gitlab.example.com/acme/devices/fleet",
		"github.com/acme/fleet":                                "github.com/acme/fleet",
	}
	for in, want := range cases {
		if got := normalizeRepo(in); got != want {
			t.Errorf("normalizeRepo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRepoMatch(t *testing.T) {
	github := repoInfo{FullName: "acme/fleet", URLs: []string{"https://github.com/acme/fleet", "git@github.com:acme/fleet.git"}}
	bbs := repoInfo{FullName: "ACME/fleet", URLs: []string{"ssh://git@bb.example:7999/acme/fleet.git", "https://bb.example/scm/acme/fleet.git"}}
	nested := repoInfo{FullName: "evil/acme/fleet", URLs: []string{"https://gitlab.example.com/evil/acme/fleet.git"}}
	cases := []struct {
		want  []string
		info  repoInfo
		match bool
	}{
		{nil, nested, true},
		{[]string{"acme/fleet"}, github, true},
		{[]string{"Acme/Fleet"}, github, true},
		{[]string{"https://github.com/acme/fleet.git"}, github, true},
		{[]string{"git@github.com:acme/fleet"}, github, true},
		{[]string{"github.com/acme/fleet"}, github, true},
		{[]string{"https://gitlab.com/acme/fleet.git"}, github, false},
		{[]string{"acme/fleet2"}, github, false},
		{[]string{"acme/fleet"}, nested, false},
		{[]string{"acme/fleet"}, bbs, true},
		{[]string{"https://bb.example/scm/acme/fleet.git"}, bbs, true},
		{[]string{"ssh://git@bb.example:7999/acme/fleet.git"}, bbs, true},
		{[]string{"other/x", "acme/fleet"}, github, true},
		{[]string{"acme/fleet"}, repoInfo{}, false},
	}
	for _, c := range cases {
		if got := newRepoMatcher(c.want).match(c.info); got != c.match {
			t.Errorf("%v matching %+v = %v, want %v", c.want, c.info, got, c.match)
		}
	}
}
