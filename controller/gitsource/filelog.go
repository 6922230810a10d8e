package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// FileCommit is a commit that changed a file (FileLog).
type FileCommit struct {
	SHA     string
	Author  Person
	Subject string // the first line of the message
	Change  string // "added", "modified" or "deleted"
}

// MaxFileLogWalk bounds the commits FileLog looks at.
const MaxFileLogWalk = 10_000

// FileLog returns up to max commits reachable from head (newest first, as
// `git log` walks) that added, modified or deleted path, compared with
// their first parent. It walks at most MaxFileLogWalk commits of the local
// clone; truncated is true when it stopped before the root for either
// bound. It does not fetch.
func (s *Source) FileLog(ctx context.Context, head, path string, max int) (commits []FileCommit, truncated bool, err error) {
	repo, err := s.openReader()
	if err != nil {
		return nil, false, err
	}
	it, err := repo.Log(&git.LogOptions{From: plumbing.NewHash(head)})
	if err != nil {
		return nil, false, fmt.Errorf("gitsource: log %s: %w", short(head), err)
	}
	defer it.Close()
	stop := errors.New("stop")
	walked := 0
	err = it.ForEach(func(c *object.Commit) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if walked >= MaxFileLogWalk || len(commits) >= max {
			truncated = true
			return stop
		}
		walked++
		now, err := blobOf(c, path)
		if err != nil {
			return err
		}
		var before plumbing.Hash
		if c.NumParents() > 0 {
			p, err := c.Parent(0)
			if err != nil {
				return fmt.Errorf("parent of %s: %w", short(c.Hash.String()), err)
			}
			if before, err = blobOf(p, path); err != nil {
				return err
			}
		}
		if now == before {
			return nil
		}
		change := "modified"
		switch {
		case before.IsZero():
			change = "added"
		case now.IsZero():
			change = "deleted"
		}
		subject, _, _ := strings.Cut(c.Message, "\n")
		commits = append(commits, FileCommit{SHA: c.Hash.String(), Subject: subject, Change: change,
			Author: Person{Name: c.Author.Name, Email: c.Author.Email, When: c.Author.When}})
		return nil
	})
	if err != nil && !errors.Is(err, stop) && !errors.Is(err, io.EOF) {
		return commits, truncated, fmt.Errorf("gitsource: history of %s: %w", path, err)
	}
	return commits, truncated, nil
}

// blobOf returns the hash of path's blob in c, or the zero hash when c has
// no such file.
func blobOf(c *object.Commit, path string) (plumbing.Hash, error) {
	tree, err := c.Tree()
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("tree of %s: %w", short(c.Hash.String()), err)
	}
	e, err := tree.FindEntry(path)
	if errors.Is(err, object.ErrEntryNotFound) || errors.Is(err, object.ErrDirectoryNotFound) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
		return plumbing.ZeroHash, err
	}
	return e.Hash, nil
}
