package embedded_test

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
)

// clock is a settable Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestRemoteLeaseAcrossRestart: a session left open by a controller that
// stopped still holds its slot after the restart, until its lease runs
// out by the store's clock; presence lapses the same way.
func TestRemoteLeaseAcrossRestart(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), embedded.FileName)
	clk := &clock{now: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	open := func() *embedded.Store {
		s, err := embedded.Open(path, embedded.Options{Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	s := open()
	rec := store.RemoteSession{ID: "s1", Operator: "ann", Device: "dev-a", Started: clk.Now()}
	if ok, _, err := s.StartSession(ctx, rec, time.Minute, 1, 0); err != nil || !ok {
		t.Fatalf("StartSession = %v, %v", ok, err)
	}
	if err := s.SetConnected(ctx, "dev-a", "c1", time.Minute); err != nil {
		t.Fatal(err)
	}
	sub, err := s.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-sub.C(); ok {
		t.Fatal("a subscription outlived the store's Close")
	}
	if err := s.Publish(ctx, "t", nil); err == nil {
		t.Error("Publish on a closed store succeeded")
	}

	s = open()
	clk.add(30 * time.Second)
	next := store.RemoteSession{ID: "s2", Operator: "bob", Device: "dev-a", Started: clk.Now()}
	if ok, limit, err := s.StartSession(ctx, next, time.Minute, 1, 0); err != nil || ok || limit != "device" {
		t.Fatalf("StartSession while the session from before the restart holds the slot = %v, %q, %v", ok, limit, err)
	}
	if _, ok, _ := s.Connected(ctx, "dev-a"); !ok {
		t.Error("presence from before the restart lost while its TTL runs")
	}
	// The lease from before the restart runs out: the slot is free, the
	// session is no longer open and cannot be renewed.
	clk.add(31 * time.Second)
	if ok, _, err := s.StartSession(ctx, next, time.Minute, 1, 0); err != nil || !ok {
		t.Fatalf("StartSession after the old lease ran out = %v, %v", ok, err)
	}
	if err := s.TouchSession(ctx, "s1", time.Minute, store.RemoteTraffic{}, nil); !errors.Is(err, store.ErrSessionEnded) {
		t.Errorf("TouchSession(run-out lease): err = %v, want ErrSessionEnded", err)
	}
	if _, ok, _ := s.Connected(ctx, "dev-a"); ok {
		t.Error("presence did not lapse")
	}
	open1, err := s.Sessions(ctx, store.RemoteSessionFilter{OpenOnly: true}, 10)
	if err != nil || len(open1) != 1 || open1[0].ID != "s2" {
		t.Fatalf("open sessions = %+v, %v; want s2 only", open1, err)
	}
	// Renewed by TouchSession, s2 (started at +30 s, lease to +90 s)
	// outlives its first lease.
	clk.add(20 * time.Second)
	if err := s.TouchSession(ctx, "s2", time.Minute, store.RemoteTraffic{}, nil); err != nil {
		t.Fatal(err)
	}
	clk.add(50 * time.Second)
	third := store.RemoteSession{ID: "s3", Operator: "cat", Device: "dev-a", Started: clk.Now()}
	if ok, limit, err := s.StartSession(ctx, third, time.Minute, 1, 0); err != nil || ok || limit != "device" {
		t.Fatalf("StartSession while a renewed lease holds the slot = %v, %q, %v", ok, limit, err)
	}
}
