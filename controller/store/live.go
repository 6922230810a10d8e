package store

import (
	"context"
	"errors"
)

// LiveMover is the part of [Commits] that [SetLiveBySHA] builds on.
type LiveMover interface {
	Live(ctx context.Context) (CommitRecord, error)
	MoveLive(ctx context.Context, next CommitRecord, prevSeq int64) (CommitRecord, bool, error)
}

// SetLiveBySHA implements [Commits.SetLive] with MoveLive: it reads the
// live record and moves it on from that record's Seq while its SHA is
// prevSHA, trying again when another caller moved live in between.
func SetLiveBySHA(ctx context.Context, s LiveMover, next CommitRecord, prevSHA string) (bool, error) {
	if err := next.Validate(); err != nil {
		return false, err
	}
	for {
		cur, err := s.Live(ctx)
		switch {
		case errors.Is(err, ErrNotFound):
			cur = CommitRecord{}
		case err != nil:
			return false, err
		}
		switch cur.SHA {
		case next.SHA:
			return true, nil
		case prevSHA:
		default:
			return false, nil
		}
		live, ok, err := s.MoveLive(ctx, next, cur.Seq)
		if err != nil || ok {
			return ok, err
		}
		if live.Seq == cur.Seq {
			// Nothing moved, yet next is not live: a store breaking the
			// MoveLive contract; do not spin.
			return false, nil
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
	}
}
