package gitsource

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// openReader opens a separate handle on the local clone for reading, so
// readers never race with a fetch writing objects.
func (s *Source) openReader() (*git.Repository, error) {
	st := filesystem.NewStorageWithOptions(osfs.New(s.dir), cache.NewObjectLRU(8*cache.MiByte), filesystem.Options{})
	repo, err := git.Open(st, nil)
	if err != nil {
		return nil, fmt.Errorf("gitsource: open clone: %w", err)
	}
	return repo, nil
}

// Revision returns a commit that is already in the local clone, for
// example the commit a controller served before it restarted. It does not
// fetch, and does not check signatures (the commit was checked when it was
// first fetched).
func (s *Source) Revision(ctx context.Context, sha string) (Revision, error) {
	if err := ctx.Err(); err != nil {
		return Revision{}, err
	}
	repo, err := s.openReader()
	if err != nil {
		return Revision{}, err
	}
	c, err := repo.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return Revision{}, fmt.Errorf("gitsource: commit %s is not in the local clone: %w", short(sha), err)
	}
	return s.revision(c, "")
}

// IsAncestor reports whether commit a is an ancestor of commit b, or the
// same commit. known is false when either commit is not in the local clone.
func (s *Source) IsAncestor(a, b string) (is, known bool, err error) {
	repo, err := s.openReader()
	if err != nil {
		return false, false, err
	}
	ca, errA := repo.CommitObject(plumbing.NewHash(a))
	cb, errB := repo.CommitObject(plumbing.NewHash(b))
	for _, e := range []error{errA, errB} {
		if errors.Is(e, plumbing.ErrObjectNotFound) {
			return false, false, nil
		}
		if e != nil {
			return false, false, fmt.Errorf("gitsource: %w", e)
		}
	}
	if ca.Hash == cb.Hash {
		return true, true, nil
	}
	is, err = ca.IsAncestor(cb)
	if err != nil {
		return false, true, fmt.Errorf("gitsource: is %s an ancestor of %s: %w", short(a), short(b), err)
	}
	return is, true, nil
}
