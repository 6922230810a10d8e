package plan

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
)

const artifactYAML = `apiVersion: gitfleet.io/v1
kind: Artifact
metadata: {name: app-1}
spec: {source: artifacts/app-1.mender, deviceTypes: [rpi4]}
`

const rolloutYAML = `apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: app-1}
spec:
  artifact: app-1
  target: {all: true}
  phases:
    - {name: all, percent: 100}
`

// TestBetween plans between two commits of a real repository, and checks
// that the work tree (an uncommitted, broken file) plays no part.
func TestBetween(t *testing.T) {
	dir := t.TempDir()
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	commit := func(name, content, msg string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		wt, err := repo.Worktree()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := wt.Add(name); err != nil {
			t.Fatal(err)
		}
		sig := &object.Signature{Name: "Test", Email: "test@example.com", When: time.Unix(1_700_000_000, 0)}
		if _, err := wt.Commit(msg, &git.CommitOptions{Author: sig, Committer: sig}); err != nil {
			t.Fatal(err)
		}
	}
	commit("artifact.yaml", artifactYAML, "Add app-1")
	commit("rollout.yaml", rolloutYAML, "Roll out app-1\n\nTo everyone.")
	if err := os.WriteFile(filepath.Join(dir, "broken.yaml"), []byte("kind: Rollout\nspec: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	p, err := Between(repo, "HEAD~1", "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Validation.OK() {
		t.Errorf("validation of HEAD failed: %v", p.Validation.Errors)
	}
	if p.Head.Subject != "Roll out app-1" || p.Base.Subject != "Add app-1" {
		t.Errorf("subjects = %q, %q", p.Base.Subject, p.Head.Subject)
	}
	if len(p.Changes) != 1 || p.Changes[0].Name != "app-1" || !p.Changes[0].Has(Started) {
		t.Errorf("changes = %+v, want rollout app-1 started", p.Changes)
	}
	if _, err := Between(repo, "HEAD", "no-such-rev"); err == nil {
		t.Error("Between with an unknown head: no error")
	}
}
