package notify

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/webhooks/notify/notifytest"
)

// fakeClock is an injected clock whose Sleep records the wait and moves
// the clock on, so retries happen at once and are observable.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	c.t = c.t.Add(d)
	return nil
}

func (c *fakeClock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// gate is a Sleeper for batch windows: a wait of exactly window blocks
// until the test opens it (and tells the test it has started); any other
// wait (a retry backoff) passes at once.
type gate struct {
	window  time.Duration
	entered chan struct{}
	open    chan struct{}
}

func newGate(window time.Duration) *gate {
	return &gate{window: window, entered: make(chan struct{}, 16), open: make(chan struct{})}
}

func (g *gate) Sleep(ctx context.Context, d time.Duration) error {
	if d != g.window {
		return ctx.Err()
	}
	g.entered <- struct{}{}
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitEntered waits until the worker is inside a batch window.
func (g *gate) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the sink never started a batch window")
	}
}

// closeSink closes s with a deadline and fails the test if it is missed.
func closeSink(t *testing.T, s Sink) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logBuffer is a slog logger the test can read.
type logBuffer = notifytest.LogBuffer

func alert(device string) Event {
	return Event{Kind: AlertRaised, Check: "ssh-root", Device: device,
		Commit:  "9f2c1e0d5b7a4c3e2f1a0b9c8d7e6f5a4b3c2d1e",
		Details: map[string]string{"severity": "critical", "evidence": "Failed password for root from 10.0.0.9"}}
}
