package gitsource_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
)

func TestFileFollowBranch(t *testing.T) {
	repo := gittest.NewRepo(t)
	sha1 := repo.Commit(map[string]string{"rollouts/web.yaml": "v1\n", "README.md": "hi\n"}, "first")
	dir := filepath.Join(t.TempDir(), "clone")
	src := newSource(t, gitsource.Options{URL: repo.URL(), Dir: dir})

	// First clone.
	rev := fetch(t, src)
	if rev.SHA != sha1 || rev.Message != "first" || rev.Ref != "refs/heads/main" {
		t.Fatalf("first fetch = %s %q %s, want %s \"first\" refs/heads/main", rev.SHA, rev.Message, rev.Ref, sha1)
	}
	if rev.Author.Email != "test@gitfleet.invalid" || rev.Time.IsZero() || rev.Signer != "" {
		t.Errorf("first fetch: author %v, time %v, signer %q", rev.Author, rev.Time, rev.Signer)
	}
	wantFile(t, rev, "rollouts/web.yaml", "v1\n")
	if st := src.Status(); st.SHA != sha1 || st.LastError != nil || st.LastReached.IsZero() {
		t.Errorf("Status after first fetch = %+v", st)
	}

	// Nothing changed: the same revision, the same FS.
	again := fetch(t, src)
	if again.SHA != sha1 || again.FS != rev.FS {
		t.Errorf("no-change fetch = %s (same FS: %v), want %s and the same FS", again.SHA, again.FS == rev.FS, sha1)
	}

	// A new commit arrives; the old revision still reads its own tree.
	sha2 := repo.Apply(gittest.Change{Files: map[string]string{"rollouts/web.yaml": "v2\n"}, Remove: []string{"README.md"}, Message: "second"})
	rev2 := fetch(t, src)
	if rev2.SHA != sha2 {
		t.Fatalf("after a new commit: %s, want %s", rev2.SHA, sha2)
	}
	wantFile(t, rev2, "rollouts/web.yaml", "v2\n")
	if _, err := fs.Stat(rev2.FS, "README.md"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("removed README.md: %v", err)
	}
	wantFile(t, rev, "rollouts/web.yaml", "v1\n")

	// Force-push: the branch now ends somewhere else entirely.
	repo.Reset(sha1)
	sha3 := repo.Commit(map[string]string{"rollouts/web.yaml": "v3\n"}, "rewritten")
	rev3 := fetch(t, src)
	if rev3.SHA != sha3 {
		t.Fatalf("after a force-push: %s, want %s", rev3.SHA, sha3)
	}
	wantFile(t, rev3, "rollouts/web.yaml", "v3\n")

	// A restart reuses the clone.
	src.Close()
	if _, err := os.Stat(filepath.Join(dir, "objects")); err != nil {
		t.Fatalf("clone not kept in Dir: %v", err)
	}
	src2 := newSource(t, gitsource.Options{URL: repo.URL(), Dir: dir})
	if rev := fetch(t, src2); rev.SHA != sha3 {
		t.Errorf("after restart: %s, want %s", rev.SHA, sha3)
	}
}

func TestTemporaryDir(t *testing.T) {
	repo := gittest.NewRepo(t)
	sha := repo.Commit(map[string]string{"a": "a"}, "one")
	src, err := gitsource.New(gitsource.Options{URL: repo.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if rev := fetch(t, src); rev.SHA != sha {
		t.Fatalf("fetch = %s, want %s", rev.SHA, sha)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestDirNotAClone(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "precious"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := gitsource.New(gitsource.Options{URL: "file:///nonexistent", Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "neither empty nor a Git repository") {
		t.Fatalf("New on a non-empty directory: %v", err)
	}
}

func TestFollowTag(t *testing.T) {
	repo := gittest.NewRepo(t)
	c1 := repo.Commit(map[string]string{"v": "1"}, "one")
	c2 := repo.Commit(map[string]string{"v": "2"}, "two")
	repo.Tag("stable", c1)
	repo.AnnotatedTag("v1.0", c1, "release 1.0")

	light := newSource(t, gitsource.Options{URL: repo.URL(), Ref: "refs/tags/stable"})
	if rev := fetch(t, light); rev.SHA != c1 || rev.Ref != "refs/tags/stable" {
		t.Fatalf("lightweight tag: %s %s, want %s", rev.SHA, rev.Ref, c1)
	}
	annotated := newSource(t, gitsource.Options{URL: repo.URL(), Ref: "refs/tags/v1.0"})
	rev := fetch(t, annotated)
	if rev.SHA != c1 {
		t.Fatalf("annotated tag: %s, want the commit %s", rev.SHA, c1)
	}
	wantFile(t, rev, "v", "1")

	// Moving the tags is followed; new commits on main are not.
	c3 := repo.Commit(map[string]string{"v": "3"}, "three")
	if rev := fetch(t, light); rev.SHA != c1 {
		t.Fatalf("tag not moved, new commit on main: %s, want %s", rev.SHA, c1)
	}
	repo.Tag("stable", c2)
	repo.AnnotatedTag("v1.0", c3, "release 1.0, again")
	if rev := fetch(t, light); rev.SHA != c2 {
		t.Errorf("moved lightweight tag: %s, want %s", rev.SHA, c2)
	}
	if rev := fetch(t, annotated); rev.SHA != c3 {
		t.Errorf("moved annotated tag: %s, want %s", rev.SHA, c3)
	}

	missing := newSource(t, gitsource.Options{URL: repo.URL(), Ref: "refs/tags/nope"})
	_, err := fetchErr(t, missing)
	t.Logf("error: %v", err)
	if !errors.Is(err, gitsource.ErrUnreachable) || !strings.Contains(err.Error(), "has no refs/tags/nope") {
		t.Errorf("missing tag: %v", err)
	}
}

func TestBadOptions(t *testing.T) {
	key, _ := gittest.NewSSHKey(t)
	for _, tc := range []struct {
		name string
		opts gitsource.Options
		want string
	}{
		{"no URL", gitsource.Options{}, "no URL"},
		{"http", gitsource.Options{URL: "http://git.example.com/fleet.git"}, "clear text"},
		{"git protocol", gitsource.Options{URL: "git://git.example.com/fleet.git"}, "neither encrypted"},
		{"ftp", gitsource.Options{URL: "ftp://git.example.com/fleet.git"}, "unsupported URL scheme"},
		{"ssh without host key", gitsource.Options{URL: "git@git.example.com:fleet.git", Auth: gitsource.Auth{SSHKey: key}}, "never trusted on first use"},
		{"ssh without key", gitsource.Options{URL: "ssh://git@git.example.com/fleet.git"}, "needs Auth.SSHKey"},
		{"ssh password", gitsource.Options{URL: "ssh://git:hunter2@git.example.com/fleet.git"}, "cannot carry a password"},
		{"bad host key", gitsource.Options{URL: "ssh://git.example.com/fleet.git", Auth: gitsource.Auth{SSHKey: key}, HostKey: "ssh-ed25519 !!!"}, "parse HostKey"},
		{"bad ssh key", gitsource.Options{URL: "ssh://git.example.com/fleet.git", Auth: gitsource.Auth{SSHKey: []byte("hunter2-not-a-key")}, HostKey: "x"}, "read Auth.SSHKey"},
		{"key for https", gitsource.Options{URL: "https://git.example.com/fleet.git", Auth: gitsource.Auth{SSHKey: key}}, "SSH key was given"},
		{"token and password", gitsource.Options{URL: "https://git.example.com/fleet.git", Auth: gitsource.Auth{Token: "tok-123456", Password: "pw-123456"}}, "not both"},
		{"credentials for file", gitsource.Options{URL: "file:///srv/fleet.git", Auth: gitsource.Auth{Password: "pw-123456"}}, "credentials given for a file URL"},
		{"ref", gitsource.Options{URL: "file:///srv/fleet.git", Ref: "refs/notes/x"}, "want a branch name"},
		{"bad ref", gitsource.Options{URL: "file:///srv/fleet.git", Ref: "a..b"}, "ref"},
		{"keyring", gitsource.Options{URL: "file:///srv/fleet.git", TrustedKeys: "not a key"}, "TrustedKeys"},
		{"anchor without keys", gitsource.Options{URL: "file:///srv/fleet.git", SignedSince: "abc"}, "needs TrustedKeys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Dir = t.TempDir()
			_, err := gitsource.New(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
			for _, secret := range []string{"hunter2", "tok-123456", "pw-123456"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error shows a secret: %v", err)
				}
			}
		})
	}
}

func TestHTTPS(t *testing.T) {
	const user, pass, token = "fleet-reader", "correct-horse-battery", "ghp_0123456789abcdef"
	repo := gittest.NewRepo(t)
	sha1 := repo.Commit(map[string]string{"a.yaml": "1"}, "one")
	srv := gittest.StartHTTPS(t, repo.Dir, gittest.HTTPSOptions{Username: user, Password: pass})

	t.Run("basic auth", func(t *testing.T) {
		src := newSource(t, gitsource.Options{URL: srv.URL, Auth: gitsource.Auth{Username: user, Password: pass}, CABundle: srv.CAPEM})
		if rev := fetch(t, src); rev.SHA != sha1 {
			t.Fatalf("fetch = %s, want %s", rev.SHA, sha1)
		}
		// Nothing changed: one request (the ref advertisement), no pack.
		before := srv.Requests()
		if rev := fetch(t, src); rev.SHA != sha1 {
			t.Fatalf("no-change fetch = %s, want %s", rev.SHA, sha1)
		}
		if n := srv.Requests() - before; n != 1 {
			t.Errorf("no-change fetch made %d requests, want 1", n)
		}
		sha2 := repo.Commit(map[string]string{"a.yaml": "2"}, "two")
		rev := fetch(t, src)
		if rev.SHA != sha2 {
			t.Fatalf("incremental fetch = %s, want %s", rev.SHA, sha2)
		}
		wantFile(t, rev, "a.yaml", "2")
	})

	t.Run("credentials in URL", func(t *testing.T) {
		u := strings.Replace(srv.URL, "https://", "https://"+user+":"+pass+"@", 1)
		src := newSource(t, gitsource.Options{URL: u, CABundle: srv.CAPEM})
		fetch(t, src)
		if strings.Contains(src.URL(), pass) || strings.Contains(src.URL(), user) {
			t.Errorf("URL() = %s, shows credentials", src.URL())
		}
	})

	t.Run("token", func(t *testing.T) {
		tsrv := gittest.StartHTTPS(t, repo.Dir, gittest.HTTPSOptions{Username: "x-access-token", Password: token})
		src := newSource(t, gitsource.Options{URL: tsrv.URL, Auth: gitsource.Auth{Token: token}, CABundle: tsrv.CAPEM})
		fetch(t, src)
	})

	t.Run("wrong password", func(t *testing.T) {
		const wrong = "wrong-password-1234"
		var logs bytes.Buffer
		opts := gitsource.Options{URL: srv.URL, Auth: gitsource.Auth{Username: user, Password: wrong}, CABundle: srv.CAPEM,
			Logger: slog.New(slog.NewTextHandler(&logs, nil))}
		src := newSource(t, opts)
		_, err := fetchErr(t, src)
		t.Logf("error: %v", err)
		if !errors.Is(err, gitsource.ErrUnreachable) || !errors.Is(err, gitsource.ErrAuth) {
			t.Fatalf("wrong password: %v, want ErrUnreachable and ErrAuth", err)
		}
		if !strings.Contains(err.Error(), "authentication failed") || !strings.Contains(err.Error(), srv.URL) {
			t.Errorf("wrong password: message %q should say authentication failed and name the URL", err)
		}
		// Run logs the failure; nothing shows the secret.
		ctx, cancel := context.WithCancel(t.Context())
		clk := newFakeClock()
		opts.Clock, opts.Dir = clk, ""
		runSrc := newSource(t, opts)
		done := make(chan struct{})
		go func() { runSrc.Run(ctx, nil, func(context.Context, gitsource.Revision) {}); close(done) }()
		clk.next(t)
		cancel()
		<-done
		logs.WriteString(fmt.Sprintf("%v %+v %#v", opts, opts, opts))
		slog.New(slog.NewJSONHandler(&logs, nil)).Info("options", "auth", opts.Auth)
		for _, text := range []string{err.Error(), logs.String(), fmt.Sprint(runSrc.Status())} {
			if strings.Contains(text, wrong) {
				t.Errorf("secret shown: %s", text)
			}
		}
		if !strings.Contains(logs.String(), "fetch failed") || !strings.Contains(logs.String(), "REDACTED") {
			t.Errorf("logs lack the failure or the redaction:\n%s", logs.String())
		}
	})

	t.Run("no credentials", func(t *testing.T) {
		src := newSource(t, gitsource.Options{URL: srv.URL, CABundle: srv.CAPEM})
		if _, err := fetchErr(t, src); !errors.Is(err, gitsource.ErrAuth) {
			t.Fatalf("no credentials: %v, want ErrAuth", err)
		}
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		src := newSource(t, gitsource.Options{URL: srv.URL, Auth: gitsource.Auth{Username: user, Password: pass}})
		_, err := fetchErr(t, src)
		t.Logf("error: %v", err)
		if !errors.Is(err, gitsource.ErrUnreachable) || !strings.Contains(err.Error(), "TLS certificate not trusted") {
			t.Fatalf("unknown CA: %v", err)
		}
		insecure := newSource(t, gitsource.Options{URL: srv.URL, Auth: gitsource.Auth{Username: user, Password: pass}, InsecureSkipTLS: true})
		fetch(t, insecure)
	})

	t.Run("unreachable then back", func(t *testing.T) {
		src := newSource(t, gitsource.Options{URL: srv.URL, Auth: gitsource.Auth{Username: user, Password: pass}, CABundle: srv.CAPEM})
		good := fetch(t, src)
		srv.SetDown(true)
		for i := 1; i <= 2; i++ {
			_, err := fetchErr(t, src)
			t.Logf("error: %v", err)
			var ue *gitsource.UnreachableError
			if !errors.As(err, &ue) || errors.Is(err, gitsource.ErrAuth) || errors.Is(err, gitsource.ErrRefused) {
				t.Fatalf("server down: %v, want a plain *UnreachableError", err)
			}
			st := src.Status()
			if st.SHA != good.SHA || st.Failures != i || !errors.Is(st.LastError, gitsource.ErrUnreachable) {
				t.Fatalf("Status while down = %+v, want SHA %s and %d failures", st, good.SHA, i)
			}
		}
		srv.SetDown(false)
		sha := repo.Commit(map[string]string{"a.yaml": "back"}, "while it was down")
		if rev := fetch(t, src); rev.SHA != sha {
			t.Fatalf("after recovery: %s, want %s", rev.SHA, sha)
		}
		if st := src.Status(); st.Failures != 0 || st.LastError != nil {
			t.Errorf("Status after recovery = %+v", st)
		}
	})
}

func TestFetchTimeout(t *testing.T) {
	// A host that accepts connections and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	src := newSource(t, gitsource.Options{URL: "https://" + ln.Addr().String() + "/fleet.git", FetchTimeout: 300 * time.Millisecond})
	_, err = fetchErr(t, src)
	t.Logf("error: %v", err)
	if !errors.Is(err, gitsource.ErrUnreachable) || !strings.Contains(err.Error(), "timed out after 300ms") {
		t.Fatalf("silent host: %v, want a timeout", err)
	}
}

func TestSSH(t *testing.T) {
	repo := gittest.NewRepo(t)
	sha := repo.Commit(map[string]string{"a.yaml": "1"}, "one")
	srv := gittest.StartSSH(t, repo.Dir)
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(srv.KnownHosts+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("pinned host key", func(t *testing.T) {
		src := newSource(t, gitsource.Options{URL: srv.URL, Auth: gitsource.Auth{SSHKey: srv.ClientKey}, HostKey: srv.HostKey})
		if rev := fetch(t, src); rev.SHA != sha {
			t.Fatalf("fetch = %s, want %s", rev.SHA, sha)
		}
		sha2 := repo.Commit(map[string]string{"a.yaml": "2"}, "two")
		rev := fetch(t, src)
		if rev.SHA != sha2 {
			t.Fatalf("incremental fetch = %s, want %s", rev.SHA, sha2)
		}
		wantFile(t, rev, "a.yaml", "2")
		if again := fetch(t, src); again.SHA != sha2 {
			t.Fatalf("no-change fetch = %s, want %s", again.SHA, sha2)
		}
	})

	t.Run("known_hosts and scp-style URL", func(t *testing.T) {
		src := newSource(t, gitsource.Options{URL: srv.SCPURL, Auth: gitsource.Auth{SSHKey: srv.ClientKey}, KnownHostsFile: knownHosts})
		if rev := fetch(t, src); rev.SHA != repo.Head() {
			t.Fatalf("fetch = %s, want %s", rev.SHA, repo.Head())
		}
	})

	t.Run("unknown client key", func(t *testing.T) {
		other, _ := gittest.NewSSHKey(t)
		src := newSource(t, gitsource.Options{URL: srv.URL, Auth: gitsource.Auth{SSHKey: other}, HostKey: srv.HostKey})
		_, err := fetchErr(t, src)
		t.Logf("error: %v", err)
		if !errors.Is(err, gitsource.ErrAuth) || !strings.Contains(err.Error(), "authentication failed") {
			t.Fatalf("unknown client key: %v, want ErrAuth", err)
		}
		if strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("error shows the key: %v", err)
		}
	})

	t.Run("wrong host key", func(t *testing.T) {
		impostor := gittest.StartSSH(t, repo.Dir)
		src := newSource(t, gitsource.Options{URL: srv.URL, Auth: gitsource.Auth{SSHKey: srv.ClientKey}, HostKey: impostor.HostKey})
		_, err := fetchErr(t, src)
		t.Logf("error: %v", err)
		if !errors.Is(err, gitsource.ErrAuth) || !strings.Contains(err.Error(), "host key not trusted") {
			t.Fatalf("pinned key of another host: %v", err)
		}
		src = newSource(t, gitsource.Options{URL: impostor.URL, Auth: gitsource.Auth{SSHKey: impostor.ClientKey}, KnownHostsFile: knownHosts})
		_, err = fetchErr(t, src)
		t.Logf("error: %v", err)
		if !errors.Is(err, gitsource.ErrAuth) || !strings.Contains(err.Error(), "host key not trusted") {
			t.Fatalf("host missing from known_hosts: %v", err)
		}
	})

	t.Run("no such repository", func(t *testing.T) {
		src := newSource(t, gitsource.Options{URL: strings.Replace(srv.URL, "repo.git", "other.git", 1), Auth: gitsource.Auth{SSHKey: srv.ClientKey}, HostKey: srv.HostKey})
		_, err := fetchErr(t, src)
		t.Logf("error: %v", err)
		if !errors.Is(err, gitsource.ErrUnreachable) || !strings.Contains(err.Error(), "repository not found") {
			t.Fatalf("missing repository: %v", err)
		}
	})
}

func TestAuthRedaction(t *testing.T) {
	a := gitsource.Auth{Username: "bob", Password: "pa55word-xyz", Token: "tok-abcdef", SSHKey: []byte("-----BEGIN OPENSSH PRIVATE KEY-----"), SSHKeyPassphrase: "phrase-xyz"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "auth", a, "opts", gitsource.Options{URL: "https://h/r", Auth: a})
	text := buf.String() + fmt.Sprintf("%v %+v %#v %v", a, a, a, gitsource.Options{URL: "https://u:pa55word-xyz@h/r", Auth: a})
	for _, secret := range []string{"pa55word-xyz", "tok-abcdef", "PRIVATE KEY", "phrase-xyz"} {
		if strings.Contains(text, secret) {
			t.Errorf("%q shown in %s", secret, text)
		}
	}
	if !strings.Contains(text, "bob") || !strings.Contains(text, "REDACTED") {
		t.Errorf("want the user name and REDACTED in %s", text)
	}
}
