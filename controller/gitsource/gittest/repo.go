// Package gittest builds real Git repositories for tests and serves them over
// real transports: file://, smart HTTPS (the git http-backend CGI behind an
// httptest TLS server, with basic auth) and SSH (a small in-process server
// that runs git-upload-pack). The controller's end-to-end tests use it too.
//
//	repo := gittest.NewRepo(t)
//	sha := repo.Commit(map[string]string{"rollouts/web.yaml": "…"}, "start web rollout")
//	srv := gittest.StartHTTPS(t, repo.Dir, gittest.HTTPSOptions{Username: "ci", Password: "s3cret"})
//	// fetch srv.URL trusting srv.CAPEM
//
// Everything here needs the git binary: [RequireGit] skips the test when it is
// missing, or fails it when CI=true.
package gittest

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// RequireGit skips the test if the git binary is missing, or fails it when
// the CI environment variable is "true". It returns git's exec path (where
// git-upload-pack and git-http-backend live).
func RequireGit(t testing.TB) string {
	t.Helper()
	gitExecPath.once.Do(func() {
		out, err := exec.Command("git", "--exec-path").Output()
		if err != nil {
			gitExecPath.err = fmt.Errorf("git binary not usable: %v", err)
			return
		}
		gitExecPath.path = strings.TrimSpace(string(out))
	})
	if gitExecPath.err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: not skipping)", gitExecPath.err)
		}
		t.Skip(gitExecPath.err)
	}
	return gitExecPath.path
}

var gitExecPath struct {
	once sync.Once
	path string
	err  error
}

// Repo is a non-bare repository in a temporary directory with a branch
// "main". Serve Dir with [StartHTTPS] or [StartSSH], or fetch URL().
type Repo struct {
	Dir  string
	t    testing.TB
	repo *git.Repository
	n    int // commits made, for deterministic commit times
}

// NewRepo creates an empty repository whose default branch is main.
func NewRepo(t testing.TB) *Repo {
	t.Helper()
	RequireGit(t)
	dir := t.TempDir()
	repo, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{InitOptions: git.InitOptions{DefaultBranch: plumbing.Main}})
	if err != nil {
		t.Fatal(err)
	}
	return &Repo{Dir: dir, t: t, repo: repo}
}

// URL is the repository's file:// URL.
func (r *Repo) URL() string { return "file://" + filepath.ToSlash(r.Dir) }

// Git returns the go-git handle on the repository.
func (r *Repo) Git() *git.Repository { return r.repo }

// Change is one commit for [Repo.Apply].
type Change struct {
	Files   map[string]string // path (slash-separated) → content, written then added
	Remove  []string          // paths to delete
	Message string
	Author  string          // "Name <email>"; default "Gitfleet Test <test@gitfleet.invalid>"
	SignKey *openpgp.Entity // signs the commit when set
}

// Commit writes files and commits them with msg; it returns the commit SHA.
func (r *Repo) Commit(files map[string]string, msg string) string {
	r.t.Helper()
	return r.Apply(Change{Files: files, Message: msg})
}

// SignedCommit is Commit with an OpenPGP signature by key.
func (r *Repo) SignedCommit(key *openpgp.Entity, files map[string]string, msg string) string {
	r.t.Helper()
	return r.Apply(Change{Files: files, Message: msg, SignKey: key})
}

// Apply makes one commit on the current branch and returns its SHA. Commit
// times are deterministic: one minute apart from 2026-01-01.
func (r *Repo) Apply(c Change) string {
	r.t.Helper()
	wt, err := r.repo.Worktree()
	if err != nil {
		r.t.Fatal(err)
	}
	for name, content := range c.Files {
		p := filepath.Join(r.Dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	for _, name := range c.Remove {
		if _, err := wt.Remove(name); err != nil {
			r.t.Fatalf("remove %s: %v", name, err)
		}
	}
	// go-git rewrites the index for every path added: add a few paths one by
	// one (cheap in a large repository), many in one pass over the tree.
	if len(c.Files) > 16 {
		if err := wt.AddWithOptions(&git.AddOptions{All: true}); err != nil {
			r.t.Fatal(err)
		}
	} else {
		for name := range c.Files {
			if err := wt.AddWithOptions(&git.AddOptions{Path: name, SkipStatus: true}); err != nil {
				r.t.Fatalf("add %s: %v", name, err)
			}
		}
	}
	r.n++
	who := c.Author
	if who == "" {
		who = "Gitfleet Test <test@gitfleet.invalid>"
	}
	name, email, _ := strings.Cut(strings.TrimSuffix(who, ">"), " <")
	sig := &object.Signature{Name: name, Email: email, When: time.Date(2026, 1, 1, 0, r.n, 0, 0, time.UTC)}
	msg := c.Message
	if msg == "" {
		msg = fmt.Sprintf("commit %d", r.n)
	}
	h, err := wt.Commit(msg, &git.CommitOptions{Author: sig, Committer: sig, SignKey: c.SignKey, AllowEmptyCommits: true})
	if err != nil {
		r.t.Fatal(err)
	}
	return h.String()
}

// CopyDir commits the tree under src (e.g. fleet-repo-template) and returns
// the commit SHA.
func (r *Repo) CopyDir(src, msg string) string {
	r.t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if d != nil && d.IsDir() && d.Name() == ".git" {
				return filepath.SkipDir
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return r.Commit(files, msg)
}

// Head returns the SHA of the current branch's head.
func (r *Repo) Head() string {
	r.t.Helper()
	ref, err := r.repo.Head()
	if err != nil {
		r.t.Fatal(err)
	}
	return ref.Hash().String()
}

// Reset moves the current branch (and the work tree) to sha, as a
// force-push would move the remote branch.
func (r *Repo) Reset(sha string) {
	r.t.Helper()
	wt, err := r.repo.Worktree()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := wt.Reset(&git.ResetOptions{Commit: plumbing.NewHash(sha), Mode: git.HardReset}); err != nil {
		r.t.Fatal(err)
	}
}

// Tag points the lightweight tag name at sha, moving it if it exists.
func (r *Repo) Tag(name, sha string) {
	r.t.Helper()
	ref := plumbing.NewHashReference(plumbing.NewTagReferenceName(name), plumbing.NewHash(sha))
	if err := r.repo.Storer.SetReference(ref); err != nil {
		r.t.Fatal(err)
	}
}

// AnnotatedTag creates (or moves) an annotated tag name at sha.
func (r *Repo) AnnotatedTag(name, sha, msg string) {
	r.t.Helper()
	_ = r.repo.DeleteTag(name)
	sig := &object.Signature{Name: "Gitfleet Test", Email: "test@gitfleet.invalid", When: time.Date(2026, 1, 1, 0, r.n, 30, 0, time.UTC)}
	if _, err := r.repo.CreateTag(name, plumbing.NewHash(sha), &git.CreateTagOptions{Tagger: sig, Message: msg}); err != nil {
		r.t.Fatal(err)
	}
}

// Branch creates (or moves) branch name at sha and checks it out.
func (r *Repo) Branch(name, sha string) {
	r.t.Helper()
	ref := plumbing.NewHashReference(plumbing.NewBranchReferenceName(name), plumbing.NewHash(sha))
	if err := r.repo.Storer.SetReference(ref); err != nil {
		r.t.Fatal(err)
	}
	r.Checkout(name)
}

// Checkout switches the work tree to branch name.
func (r *Repo) Checkout(name string) {
	r.t.Helper()
	wt, err := r.repo.Worktree()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := wt.Checkout(&git.CheckoutOptions{Branch: plumbing.NewBranchReferenceName(name), Force: true}); err != nil {
		r.t.Fatal(err)
	}
}

// Merge records a merge commit of branch into the current branch, taking
// the other branch's tree as is (enough for tests about history).
func (r *Repo) Merge(branch, msg string, key *openpgp.Entity) string {
	r.t.Helper()
	other, err := r.repo.Reference(plumbing.NewBranchReferenceName(branch), true)
	if err != nil {
		r.t.Fatal(err)
	}
	head, err := r.repo.Head()
	if err != nil {
		r.t.Fatal(err)
	}
	wt, err := r.repo.Worktree()
	if err != nil {
		r.t.Fatal(err)
	}
	r.n++
	sig := &object.Signature{Name: "Gitfleet Test", Email: "test@gitfleet.invalid", When: time.Date(2026, 1, 1, 0, r.n, 0, 0, time.UTC)}
	// Bring the other branch's files into the index, then commit with both
	// parents.
	if err := wt.Reset(&git.ResetOptions{Commit: other.Hash(), Mode: git.MixedReset}); err != nil {
		r.t.Fatal(err)
	}
	if err := wt.Reset(&git.ResetOptions{Commit: head.Hash(), Mode: git.SoftReset}); err != nil {
		r.t.Fatal(err)
	}
	h, err := wt.Commit(msg, &git.CommitOptions{Author: sig, Committer: sig, SignKey: key,
		Parents: []plumbing.Hash{head.Hash(), other.Hash()}, AllowEmptyCommits: true})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := wt.Reset(&git.ResetOptions{Commit: h, Mode: git.HardReset}); err != nil {
		r.t.Fatal(err)
	}
	return h.String()
}

// NewSigningKey makes an Ed25519 OpenPGP key for name and returns it with its
// armored public keyring (what Options.TrustedKeys takes).
func NewSigningKey(t testing.TB, name string) (*openpgp.Entity, string) {
	t.Helper()
	e, err := openpgp.NewEntity(name, "", strings.ToLower(name)+"@gitfleet.invalid",
		&packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	return e, ArmoredPublic(t, e)
}

// ArmoredPublic returns the armored public keyring of the entities.
func ArmoredPublic(t testing.TB, entities ...*openpgp.Entity) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entities {
		if err := e.Serialize(w); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}
