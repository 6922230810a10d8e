package gitsource

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Clock tells time and makes timers; tests inject a fake one.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is the part of [time.Timer] that Run uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

type systemClock struct{}

func (systemClock) Now() time.Time                 { return time.Now() }
func (systemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time { return t.t.C }
func (t systemTimer) Stop() bool          { return t.t.Stop() }

// newBackoff returns Run's schedule of retries while the remote is
// unreachable: the n-th wait (from 0) is drawn from [d/2, d], d being min
// doubled n times and capped at max, so that replicas that failed together
// do not retry together, and max stays a bound. ExponentialBackOff draws
// from interval·[1-f, 1+f]; an interval of 3d/4 with f = 1/3 is [d/2, d].
func newBackoff(min, max time.Duration) *backoff.ExponentialBackOff {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     min * 3 / 4,
		RandomizationFactor: 1.0 / 3,
		Multiplier:          2,
		MaxInterval:         max * 3 / 4,
	}
	b.Reset()
	return b
}

// Run follows the ref until ctx ends. It fetches at once, then every
// PollInterval, and immediately whenever trigger fires (a webhook). Triggers
// that arrive while a fetch or onRevision runs are coalesced into one more
// fetch: send on a channel with a buffer of one, without blocking.
//
// onRevision is called, on Run's goroutine, for the first revision and then
// for every revision whose SHA differs from the last one delivered.
//
// While the remote is unreachable, Run retries after a backoff that doubles
// from MinBackoff to MaxBackoff, with jitter, and is reset when the remote
// answers; a trigger still fetches at once (a push is good evidence that the
// Git host is back). A refused head is stalled, not retried faster: Run
// waits for the next poll or trigger, when a new commit may have arrived.
// Run logs what it does; Status reports the same.
// Redeliver makes Run hand over the head it fetches next even when it is
// the revision it handed over last: the caller served something else in
// between (another replica's commit), and the head is again what it wants.
func (s *Source) Redeliver() { s.redeliver.Store(true) }

func (s *Source) Run(ctx context.Context, trigger <-chan struct{}, onRevision func(context.Context, Revision)) {
	var (
		bo          = newBackoff(s.opts.MinBackoff, s.opts.MaxBackoff)
		delivered   string
		lastRefused string
		failing     bool
	)
	for {
		drain(trigger)
		rev, err := s.Fetch(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := s.opts.PollInterval
		var refused *RefusedError
		switch {
		case err == nil:
			if failing {
				s.log.Info("remote reachable again", "url", s.remote.display)
			}
			failing, lastRefused = false, ""
			if s.redeliver.Swap(false) {
				delivered = ""
			}
			if rev.SHA != delivered {
				delivered = rev.SHA
				s.log.Info("new revision", "commit", rev.SHA, "ref", rev.Ref, "author", rev.Author.String(), "signer", rev.Signer)
				onRevision(ctx, rev)
			}
		case errors.As(err, &refused):
			failing = false
			if refused.Head != lastRefused {
				lastRefused = refused.Head
				s.log.Warn("commit refused", "commit", refused.Head, "offending_commit", refused.Commit,
					"reason", refused.Reason, "serving", delivered)
			}
		default:
			failing = true
			wait = bo.NextBackOff()
			s.log.Warn("fetch failed", "err", err, "retry_in", wait, "serving", delivered)
		}
		if !failing {
			bo.Reset()
			wait = s.opts.PollInterval
		}
		s.setBackoff(failing, wait)

		if !s.wait(ctx, &trigger, wait) {
			return
		}
	}
}

// wait returns after d or when trigger fires, and false when ctx ends. A
// closed trigger is set to nil: it never fires again.
func (s *Source) wait(ctx context.Context, trigger *<-chan struct{}, d time.Duration) bool {
	t := s.opts.Clock.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case _, ok := <-*trigger:
			if !ok {
				*trigger = nil
				continue
			}
			return true
		case <-t.C():
			return true
		}
	}
}

func (s *Source) setBackoff(failing bool, wait time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.Backoff = 0
	if failing {
		s.status.Backoff = wait
	}
}

// drain empties trigger without blocking: the fetch about to start serves
// every trigger already received.
func drain(trigger <-chan struct{}) {
	for {
		select {
		case _, ok := <-trigger:
			if !ok {
				return
			}
		default:
			return
		}
	}
}
