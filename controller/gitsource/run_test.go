package gitsource_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
)

// runSource runs src until the returned stop function is called (or the
// test ends); revisions go to revs, and onRevision extra, if set, runs after.
func runSource(t *testing.T, src *gitsource.Source, trigger <-chan struct{}, revs chan<- gitsource.Revision, extra ...func()) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	n := 0
	go func() {
		defer close(done)
		src.Run(ctx, trigger, func(_ context.Context, rev gitsource.Revision) {
			revs <- rev
			if n < len(extra) {
				extra[n]()
			}
			n++
		})
	}()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return within 20s of its context ending")
		}
	}
	t.Cleanup(stop)
	return stop
}

func nextRevision(t *testing.T, revs <-chan gitsource.Revision) gitsource.Revision {
	t.Helper()
	select {
	case rev := <-revs:
		return rev
	case <-time.After(20 * time.Second):
		t.Fatal("no revision within 20s")
		return gitsource.Revision{}
	}
}

func TestRunPollsAndCoalescesTriggers(t *testing.T) {
	repo := gittest.NewRepo(t)
	sha1 := repo.Commit(map[string]string{"a": "1"}, "one")
	clk := newFakeClock()
	src := newSource(t, gitsource.Options{URL: repo.URL(), Clock: clk, PollInterval: time.Minute})
	trigger := make(chan struct{}, 4)
	revs := make(chan gitsource.Revision, 10)
	// A burst of webhooks arrives while the first revision is handled.
	burst := func() {
		for range cap(trigger) {
			trigger <- struct{}{}
		}
	}
	stop := runSource(t, src, trigger, revs, burst)

	if rev := nextRevision(t, revs); rev.SHA != sha1 {
		t.Fatalf("first revision %s, want %s", rev.SHA, sha1)
	}
	first := clk.next(t)
	if first.d != time.Minute {
		t.Fatalf("Run waits %v after a good fetch, want PollInterval", first.d)
	}
	// The burst ends the wait at once and costs exactly one more fetch:
	// the next wait starts with no trigger pending.
	second := clk.next(t)
	if !first.stopped() || second.d != time.Minute {
		t.Fatalf("after a burst: first timer stopped %v, next wait %v", first.stopped(), second.d)
	}
	if len(trigger) != 0 {
		t.Fatalf("%d triggers left pending after one fetch; want the burst coalesced", len(trigger))
	}
	if len(revs) != 0 {
		t.Fatalf("the same commit was delivered twice: %v", (<-revs).SHA)
	}

	// The poll interval elapses and finds a new commit.
	sha2 := repo.Commit(map[string]string{"a": "2"}, "two")
	second.fire()
	if rev := nextRevision(t, revs); rev.SHA != sha2 {
		t.Fatalf("polled revision %s, want %s", rev.SHA, sha2)
	}
	third := clk.next(t)

	// A webhook finds the next one without waiting for the poll.
	sha3 := repo.Commit(map[string]string{"a": "3"}, "three")
	trigger <- struct{}{}
	if rev := nextRevision(t, revs); rev.SHA != sha3 {
		t.Fatalf("triggered revision %s, want %s", rev.SHA, sha3)
	}
	if !third.stopped() {
		t.Error("poll timer still running after a trigger")
	}
	// The same head again is not handed over, unless the caller served
	// something else meanwhile and asks for it (Redeliver).
	clk.next(t)
	trigger <- struct{}{}
	clk.next(t)
	if len(revs) != 0 {
		t.Fatalf("an unchanged head was handed over again: %v", (<-revs).SHA)
	}
	src.Redeliver()
	trigger <- struct{}{}
	if rev := nextRevision(t, revs); rev.SHA != sha3 {
		t.Fatalf("after Redeliver: %s, want the head %s again", rev.SHA, sha3)
	}
	clk.next(t)
	stop()
	if st := src.Status(); st.SHA != sha3 || st.Backoff != 0 {
		t.Errorf("Status = %+v", st)
	}
}

func TestRunBacksOff(t *testing.T) {
	repo := gittest.NewRepo(t)
	sha := repo.Commit(map[string]string{"a": "1"}, "one")
	hidden := repo.Dir + ".away"
	if err := os.Rename(repo.Dir, hidden); err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	src := newSource(t, gitsource.Options{URL: repo.URL(), Clock: clk, PollInterval: time.Hour,
		MinBackoff: time.Second, MaxBackoff: 8 * time.Second})
	trigger := make(chan struct{}, 1)
	revs := make(chan gitsource.Revision, 10)
	runSource(t, src, trigger, revs)

	// Waits double from 1s to the 8s cap, each drawn from [d/2, d].
	caps := []time.Duration{1, 2, 4, 8, 8, 8}
	for i, c := range caps {
		c *= time.Second
		tm := clk.next(t)
		if tm.d < c/2 || tm.d > c {
			t.Fatalf("failure %d: wait %v, want within [%v, %v]", i+1, tm.d, c/2, c)
		}
		st := src.Status()
		if st.Backoff != tm.d || st.Failures != i+1 || !errors.Is(st.LastError, gitsource.ErrUnreachable) || st.SHA != "" {
			t.Fatalf("failure %d: Status = %+v", i+1, st)
		}
		if i < len(caps)-1 {
			tm.fire()
			continue
		}
		// The remote comes back; a webhook does not wait for the backoff.
		if err := os.Rename(hidden, repo.Dir); err != nil {
			t.Fatal(err)
		}
		trigger <- struct{}{}
	}
	if rev := nextRevision(t, revs); rev.SHA != sha {
		t.Fatalf("after recovery %s, want %s", rev.SHA, sha)
	}
	poll := clk.next(t)
	if st := src.Status(); poll.d != time.Hour || st.Backoff != 0 || st.Failures != 0 || st.LastError != nil {
		t.Fatalf("after recovery: wait %v, Status %+v; want the poll interval and a clean status", poll.d, st)
	}

	// A new outage starts the backoff from the bottom again.
	if err := os.Rename(repo.Dir, hidden); err != nil {
		t.Fatal(err)
	}
	poll.fire()
	if tm := clk.next(t); tm.d < 500*time.Millisecond || tm.d > time.Second {
		t.Fatalf("first wait of a new outage %v, want within [0.5s, 1s]", tm.d)
	}
	if st := src.Status(); st.SHA != sha || st.Failures != 1 {
		t.Fatalf("new outage: Status %+v, want the last good SHA kept", st)
	}
	if err := os.Rename(hidden, repo.Dir); err != nil {
		t.Fatal(err)
	}
}
