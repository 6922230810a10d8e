package gitsource_test

import (
	"context"
	"io/fs"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/gitsource"
)

// newSource makes a Source that logs to the test and is closed with it.
// Dir defaults to a fresh directory under t.TempDir().
func newSource(t *testing.T, opts gitsource.Options) *gitsource.Source {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = filepath.Join(t.TempDir(), "clone")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	src, err := gitsource.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// fetch fetches with a deadline and fails the test on error.
func fetch(t *testing.T, src *gitsource.Source) gitsource.Revision {
	t.Helper()
	rev, err := fetchErr(t, src)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return rev
}

func fetchErr(t *testing.T, src *gitsource.Source) (gitsource.Revision, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	return src.Fetch(ctx)
}

// wantFile checks one file of a revision.
func wantFile(t *testing.T, rev gitsource.Revision, name, want string) {
	t.Helper()
	b, err := fs.ReadFile(rev.FS, name)
	if err != nil {
		t.Fatalf("revision %.12s: read %s: %v", rev.SHA, name, err)
	}
	if string(b) != want {
		t.Fatalf("revision %.12s: %s = %q, want %q", rev.SHA, name, b, want)
	}
}

// fakeClock lets a test see every timer Run starts and fire it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers chan *fakeTimer
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Now(), timers: make(chan *fakeTimer, 100)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) gitsource.Timer {
	t := &fakeTimer{clock: c, d: d, c: make(chan time.Time, 1)}
	c.timers <- t
	return t
}

// next returns the next timer started, failing the test after a deadline.
func (c *fakeClock) next(t *testing.T) *fakeTimer {
	t.Helper()
	select {
	case tm := <-c.timers:
		return tm
	case <-time.After(20 * time.Second):
		t.Fatal("no timer started within 20s")
		return nil
	}
}

type fakeTimer struct {
	clock *fakeClock
	d     time.Duration
	c     chan time.Time
	mu    sync.Mutex
	done  bool // fired or stopped
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	was := !t.done
	t.done = true
	return was
}

func (t *fakeTimer) stopped() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.done
}

// fire advances the clock by the timer's duration and fires it.
func (t *fakeTimer) fire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return
	}
	t.done = true
	t.clock.mu.Lock()
	t.clock.now = t.clock.now.Add(t.d)
	now := t.clock.now
	t.clock.mu.Unlock()
	t.c <- now
}
