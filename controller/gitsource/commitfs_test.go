package gitsource

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// commit writes files (path → content; content "->target" makes a symlink)
// into the work tree of repo at dir and commits everything.
func commit(t *testing.T, repo *git.Repository, dir string, files map[string]string, msg string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wt, err := repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	if err := wt.AddGlob("."); err != nil {
		t.Fatal(err)
	}
	sig := &object.Signature{Name: "Test", Email: "test@example.com", When: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if _, err := wt.Commit(msg, &git.CommitOptions{Author: sig, Committer: sig}); err != nil {
		t.Fatal(err)
	}
}

func TestCommitFS(t *testing.T) {
	dir := t.TempDir()
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	commit(t, repo, dir, map[string]string{
		"README.md":          "v1\n",
		"rollouts/web.yaml":  "kind: Rollout\n",
		"rollouts/a/b.yaml":  "nested\n",
		"groups/prod.yaml":   "kind: DeviceGroup\n",
		"groups.yaml-b/x.md": "sorting\n",
	}, "first")
	first, err := repo.Head()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.CreateTag("v1", first.Hash(), nil); err != nil {
		t.Fatal(err)
	}
	commit(t, repo, dir, map[string]string{
		"README.md":    "v2\n",
		"escape.yaml":  "->/etc/passwd",
		"rollouts/new": "new\n",
	}, "second")
	// Uncommitted work is invisible.
	if err := os.WriteFile(filepath.Join(dir, "dirty.yaml"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	head, c, err := CommitFS(repo, "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	if c.Message != "second" {
		t.Errorf("HEAD commit message = %q, want %q", c.Message, "second")
	}
	if b, err := fs.ReadFile(head, "README.md"); err != nil || string(b) != "v2\n" {
		t.Errorf("HEAD README.md = %q, %v; want v2", b, err)
	}
	if _, err := fs.Stat(head, "dirty.yaml"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("uncommitted file: Stat error = %v, want ErrNotExist", err)
	}
	if _, err := head.Open("escape.yaml"); !errors.Is(err, ErrNotFollowed) {
		t.Errorf("open symlink: error = %v, want ErrNotFollowed", err)
	}
	entries, err := fs.ReadDir(head, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == "escape.yaml" && e.Type() != fs.ModeSymlink {
			t.Errorf("escape.yaml listed with type %v, want symlink", e.Type())
		}
	}
	fi, err := fs.Stat(head, "README.md")
	if err != nil || !fi.ModTime().Equal(c.Committer.When) {
		t.Errorf("Stat README.md = %v, %v; want modtime %v", fi, err, c.Committer.When)
	}

	for _, rev := range []string{"HEAD~1", "HEAD^1", "v1", c.Hash.String()[:12] + "~1"} {
		base, bc, err := CommitFS(repo, rev)
		if err != nil {
			t.Errorf("CommitFS(%q): %v", rev, err)
			continue
		}
		if bc.Message != "first" {
			t.Errorf("CommitFS(%q) message = %q, want %q", rev, bc.Message, "first")
		}
		if b, err := fs.ReadFile(base, "README.md"); err != nil || string(b) != "v1\n" {
			t.Errorf("CommitFS(%q) README.md = %q, %v; want v1", rev, b, err)
		}
		// fstest.TestFS opens every entry, so it runs on the commit
		// without the symbolic link.
		if err := fstest.TestFS(base, "README.md", "rollouts/web.yaml", "rollouts/a/b.yaml", "groups/prod.yaml", "groups.yaml-b/x.md"); err != nil {
			t.Errorf("CommitFS(%q): %v", rev, err)
		}
	}

	if _, _, err := CommitFS(repo, "no-such-branch"); err == nil {
		t.Error("CommitFS(no-such-branch): no error")
	}
}
