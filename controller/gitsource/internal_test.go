package gitsource

import (
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
	"github.com/go-git/go-git/v5/plumbing"
	gitobject "github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

func TestParseRemote(t *testing.T) {
	for _, tc := range []struct {
		in, scheme, fetch, display, host string
	}{
		{"https://bob:pw-secret@git.example.com/org/fleet.git?x=1#f", "https", "https://git.example.com/org/fleet.git?x=1#f", "https://git.example.com/org/fleet.git", ""},
		{"https://git.example.com:8443/fleet", "https", "https://git.example.com:8443/fleet", "https://git.example.com:8443/fleet", ""},
		{"git@github.com:org/fleet.git", "ssh", "git@github.com:org/fleet.git", "git@github.com:org/fleet.git", "github.com:22"},
		{"ssh://git@host.example:2222/org/fleet.git", "ssh", "ssh://git@host.example:2222/org/fleet.git", "ssh://host.example:2222/org/fleet.git", "host.example:2222"},
		{"ssh://[::1]:2222/fleet.git", "ssh", "ssh://[::1]:2222/fleet.git", "ssh://[::1]:2222/fleet.git", "[::1]:2222"},
		{"/srv/fleet.git", "file", "file:///srv/fleet.git", "file:///srv/fleet.git", ""},
		{"file:///srv/fleet.git", "file", "file:///srv/fleet.git", "file:///srv/fleet.git", ""},
	} {
		r, err := parseRemote(tc.in)
		if err != nil {
			t.Errorf("parseRemote(%q): %v", tc.in, err)
			continue
		}
		if r.scheme != tc.scheme || r.fetch != tc.fetch || r.display != tc.display || r.host != tc.host {
			t.Errorf("parseRemote(%q) = scheme %q fetch %q display %q host %q; want %q %q %q %q",
				tc.in, r.scheme, r.fetch, r.display, r.host, tc.scheme, tc.fetch, tc.display, tc.host)
		}
	}
}

func TestStripCredentials(t *testing.T) {
	for in, want := range map[string]string{
		"https://u:p@h/x?token=t":  "https://h/x",
		"https://h/a@b":            "https://h/a@b",
		"ssh://git@h:22/x":         "ssh://h:22/x",
		"git@h:x":                  "git@h:x",
		"https://u:p%40q@h/x#frag": "https://h/x",
	} {
		if got := stripCredentials(in); got != want {
			t.Errorf("stripCredentials(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := newBackoff(time.Second, 10*time.Second)
	for round := range 2 {
		for i, c := range []time.Duration{1, 2, 4, 8, 10, 10, 10} {
			c *= time.Second
			var lo, hi time.Duration
			for j := range 200 {
				saved := *b
				d := b.NextBackOff()
				if d < c/2 || d > c {
					t.Fatalf("round %d, failure %d: %v outside [%v, %v]", round, i, d, c/2, c)
				}
				if j == 0 || d < lo {
					lo = d
				}
				hi = max(hi, d)
				*b = saved
			}
			// Jittered: 200 draws spread over most of the range.
			if hi-lo < c/4 {
				t.Errorf("round %d, failure %d: draws within [%v, %v] only", round, i, lo, hi)
			}
			b.NextBackOff()
		}
		b.Reset()
	}
}

func TestVerifyReasons(t *testing.T) {
	alice, trusted := gittest.NewSigningKey(t, "Alice")
	repo := gittest.NewRepo(t)
	sha := repo.SignedCommit(alice, map[string]string{"a": "1"}, "signed")
	v, err := newVerifier(trusted, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	load := func() *gitobject.Commit {
		c, err := repo.Git().CommitObject(plumbing.NewHash(sha))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if fp, reason := v.verify(load()); reason != "" || fp == "" {
		t.Fatalf("good commit: %q %q", fp, reason)
	}
	for _, tc := range []struct {
		name   string
		change func(o *gitobject.Commit)
		want   string
	}{
		{"tampered message", func(o *gitobject.Commit) { o.Message = "signed, then edited" }, "does not match"},
		{"ssh signature", func(o *gitobject.Commit) {
			o.PGPSignature = "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n"
		}, "SSH key"},
		{"x509 signature", func(o *gitobject.Commit) {
			o.PGPSignature = "-----BEGIN SIGNED MESSAGE-----\nMIIB\n-----END SIGNED MESSAGE-----\n"
		}, "other than OpenPGP"},
		{"two signatures", func(o *gitobject.Commit) { o.PGPSignature += o.PGPSignature }, "more than one"},
		{"garbage", func(o *gitobject.Commit) {
			o.PGPSignature = "-----BEGIN PGP SIGNATURE-----\n\nnot base64\n-----END PGP SIGNATURE-----\n"
		}, "unreadable OpenPGP signature"},
		{"empty", func(o *gitobject.Commit) { o.PGPSignature = "  \n" }, "not signed"},
	} {
		o := load()
		tc.change(o)
		if fp, reason := v.verify(o); fp != "" || !strings.Contains(reason, tc.want) {
			t.Errorf("%s: verify = %q %q, want a reason containing %q", tc.name, fp, reason, tc.want)
		} else {
			t.Logf("%s: %s", tc.name, reason)
		}
	}
}

func TestCompactOnRestart(t *testing.T) {
	repo := gittest.NewRepo(t)
	dir := t.TempDir()
	opts := Options{URL: repo.URL(), Dir: dir, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
	src, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	packs := func(s *Source) int {
		hs, err := s.repo.Storer.(storer.PackedObjectStorer).ObjectPacks()
		if err != nil {
			t.Fatal(err)
		}
		return len(hs)
	}
	var prev, abandoned, neverServed string
	for i := range maxPacks + 2 {
		sha := repo.Commit(map[string]string{"f": fmt.Sprint(i)}, fmt.Sprint(i))
		if i == maxPacks {
			// This commit is served, then abandoned by a force-push; the
			// commit after it never reaches the Source.
			if _, err := src.Fetch(t.Context()); err != nil {
				t.Fatal(err)
			}
			abandoned = sha
			neverServed = repo.Commit(map[string]string{"f": "lost"}, "lost")
			repo.Reset(prev)
			sha = repo.Commit(map[string]string{"f": "again"}, "again")
		}
		if rev, err := src.Fetch(t.Context()); err != nil || rev.SHA != sha {
			t.Fatalf("fetch %d: %v", i, err)
		}
		prev = sha
	}
	if n := packs(src); n <= maxPacks {
		t.Fatalf("%d packs after %d fetches; want more than %d", n, maxPacks+2, maxPacks)
	}
	src.Close()
	src, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if n := packs(src); n != 1 {
		t.Fatalf("%d packs after a restart, want 1", n)
	}
	refs, _ := src.repo.References()
	served := 0
	refs.ForEach(func(r *plumbing.Reference) error {
		if strings.HasPrefix(r.Name().String(), servedPrefix.String()) {
			served++
		}
		return nil
	})
	if served != keepServed {
		t.Errorf("%d served refs kept, want %d", served, keepServed)
	}
	// The abandoned commit was served, so it is kept for Revision; the
	// commit before it was never served, so it is gone.
	if _, err := src.Revision(t.Context(), abandoned); err != nil {
		t.Errorf("served commit %s lost in the repack: %v", abandoned, err)
	}
	if _, err := src.repo.CommitObject(plumbing.NewHash(neverServed)); err == nil {
		t.Errorf("unreachable commit %s survived the repack", neverServed)
	}
	rev, err := src.Fetch(t.Context())
	if err != nil || rev.SHA != repo.Head() {
		t.Fatalf("fetch after repack: %v", err)
	}
	if _, err := fs.ReadFile(rev.FS, "f"); err != nil {
		t.Fatal(err)
	}
}

func TestTokenUser(t *testing.T) {
	for _, tc := range []struct{ url, user, want string }{
		{"https://git.example.com/fleet.git", "", "x-access-token"},
		{"https://oauth2@git.example.com/fleet.git", "", "oauth2"},
		{"https://oauth2@git.example.com/fleet.git", "x-token-auth", "x-token-auth"},
	} {
		r, err := parseRemote(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		a, err := transportAuth(r, &Options{Auth: Auth{Username: tc.user, Token: "tok-123456"}})
		if err != nil {
			t.Fatal(err)
		}
		if b, ok := a.(*githttp.BasicAuth); !ok || b.Username != tc.want || b.Password != "tok-123456" {
			t.Errorf("%s with user %q: %#v, want user %q and the token as password", tc.url, tc.user, a, tc.want)
		}
	}
}
